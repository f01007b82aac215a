// The adapter model every command works on (docs/formats.md): a file's
// tensors grouped into LoRA modules with their scale resolved by the format's own rule, plus the
// passthrough tensors that are carried byte for byte.
import type { SafetensorsFile, TensorInfo, DType } from "../safetensors/index.js";

export type AdapterFormat = "peft" | "kohya" | "diffusers" | "sora";
export type ModuleKind = "linear" | "conv" | "embedding";

export interface LoraModule {
  /** The name shown to users (docs/formats.md "Module names across formats"): PEFT module path without `base_model.model.`; kohya stem. */
  name: string;
  /** Dotted module path when known (kohya: from our metadata map, else the stem without `lora_`). */
  path: string;
  /** Format-independent key used to pair modules across inputs (see names.ts). */
  matchKey: string;
  kind: ModuleKind;
  rank: number;
  alpha: number;
  /** Scale s of ΔW = s·B·A, from the format's rule (docs/algorithms.md §1.2). */
  scale: number;
  rslora: boolean;
  /** ΔW = B@A is out×in (conv kernels flattened into in). */
  out: number;
  in: number;
  A: TensorInfo;
  B: TensorInfo;
  /** kohya's 0-d alpha tensor, when present. */
  alphaTensor?: TensorInfo;
  /** The module's own extra tensors, by role: "lora_magnitude_vector", "lora_B.bias", "gate", "lora_mask", "dora_scale". */
  extras: Record<string, TensorInfo>;
  /** kohya stem prefix kind ("unet", "te", "te1", …) when the input had one. */
  kohyaStem?: string;
}

export interface Adapter {
  /** What the user named ("-" for stdin, a directory or a file). */
  source: string;
  /** The safetensors file holding the tensors. */
  file: SafetensorsFile;
  format: AdapterFormat;
  /** PEFT config as read (unknown keys kept), or null when none. */
  config: Record<string, unknown> | null;
  /** Where the scale rule came from, for `inspect` to say (e.g. "adapter_config.json"). */
  configSource: string;
  metadata: Record<string, string>;
  modules: LoraModule[];
  passthrough: TensorInfo[];
  /** Facts worth telling the user (assumptions made while reading). */
  notes: string[];
  /** Detected kohya DyLoRA (ss_network_module = networks.dylora): its unit. */
  dylora?: { unit: number };
  /** Most common factor dtype. */
  dtype: DType;
}

export function isDora(a: Adapter): boolean {
  return a.modules.some((m) => "lora_magnitude_vector" in m.extras || "dora_scale" in m.extras) || a.config?.["use_dora"] === true;
}
