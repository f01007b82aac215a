// What a command hands the adapter writer (write.ts): the output modules, each with its factors
// computed lazily or copied byte for byte, the passthrough tensors, and the config and metadata.
import type { CopySource, DType, SafetensorsFile, TensorInfo } from "../safetensors/index.js";
import type { PeftConfig } from "./peft-config.js";
import type { ModuleKind } from "./types.js";

export interface OutFactors {
  /** r×in row-major (conv flattened); a Uint8Array holds the bytes of the module's dtype, already encoded. */
  A: Float32Array | Float64Array | Uint8Array;
  /** out×r row-major (values, or encoded bytes as for A). */
  B: Float32Array | Float64Array | Uint8Array;
}

export interface OutModule {
  /** Dotted module path (PEFT key without base_model.model.). */
  path: string;
  /** kohya stem to use; default kohyaStemFor(path). */
  stem?: string;
  kind: ModuleKind;
  rank: number;
  alpha: number;
  out: number;
  in: number;
  /** Trailing kernel dims of a conv A (e.g. [3, 3]) so A is written as [r, in/(kh·kw), kh, kw]. */
  kernel?: number[];
  dtype: DType;
  /** Called once, in write order; the result is released after both factors are written. */
  produce?: () => Promise<OutFactors>;
  /** Instead of produce: copy the factor tensors byte for byte (same dtype and layout as the source), each checked as it is copied where given. */
  rawFactors?: { A: CopySource; B: CopySource };
  /** Extra tensors of the module carried as they are (role → tensor), e.g. "lora_B.bias". */
  extras?: Record<string, { file: SafetensorsFile; tensor: TensorInfo }>;
}

export interface AdapterOutput {
  /** diffusers: PEFT-style keys with lora_adapter_metadata (write-diffusers.ts); alpha as for PEFT (s·√r when baseConfig.use_rslora, else s·r). */
  format: "peft" | "kohya" | "diffusers";
  modules: OutModule[];
  passthrough: { file: SafetensorsFile; tensor: TensorInfo }[];
  /** PEFT config to start from (unknown keys kept); r/alpha/patterns/target_modules are rewritten. */
  baseConfig: PeftConfig | null;
  /** Input metadata to carry (kohya ss_* keys, …). */
  metadata: Record<string, string>;
  /** Keep the base config's target_modules (only when the module set is unchanged). */
  keepTargetModules?: boolean;
  /** Extra metadata to set on the output. */
  extraMetadata?: Record<string, string>;
}
