// What a format detector is (detect.ts tries them in order): it looks at the tensor names and
// either claims the file or passes, then parses what it claimed into modules.
import type { SafetensorsFile, TensorInfo } from "../safetensors/index.js";
import type { Model } from "../model/base-model.js";
import type { PeftConfig } from "./peft-config.js";
import type { AdapterFormat, BaseDependentModule, LoraModule } from "./types.js";

export interface DetectContext {
  file: SafetensorsFile;
  label: string;
  metadata: Record<string, string>;
  /** adapter_config from metadata or a sibling adapter_config.json, when any. */
  config: PeftConfig | null;
  configSource: string;
  notes: string[];
  /** config.json beside the adapter file (a trainer's model config, e.g. IncreLoRA's lora_alpha), when any. */
  modelConfig?: Record<string, unknown> | null;
  /** The base model given with --base, for families whose ΔW needs it (MiSS/Bone). */
  base?: Model;
}

export interface Detected {
  format: AdapterFormat;
  modules: LoraModule[];
  passthrough: TensorInfo[];
  config: PeftConfig | null;
  configSource: string;
  /** A derived file (derived.ts) that wraps ctx.file when some modules are not stored as B·A. */
  file?: SafetensorsFile;
  baseDependent?: BaseDependentModule[];
}

export interface Detector {
  format: AdapterFormat;
  claims(names: string[], ctx: DetectContext): boolean;
  parse(ctx: DetectContext): Promise<Detected>;
}
