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
  /**
   * Set when the file stores this module as something other than B·A (LoHa, LoKr, AdaLoRA, …):
   * A and B are then its exact factors (float64, scale folded in: scale 1, alpha = rank), computed
   * on read by the adapter's derived file (derived.ts, docs/formats.md "Derived modules").
   */
  family?: ModuleFamily;
}

/** How a derived module is stored, and the shortcuts its structure allows. */
export interface ModuleFamily {
  /** "loha", "lokr", "locon-tucker", "adalora", "lora-xs", … */
  type: string;
  /** One line for inspect ("LoHa 8·8 (r1·r2)", "AdaLoRA 5 of 12 live"). */
  detail: string;
  /** The tensors as the file stores them. */
  stored: TensorInfo[];
  /** The dtype the file stores them in (the adapter's dtype counts this, not F64). */
  dtype: DType;
  /** Facts for `inspect --json` (live rank, r1/r2, Kronecker shapes, …). */
  info?: Record<string, number | string | boolean | number[]>;
  /** The exact singular values (descending, min(out, in) of them at most), when cheaper than from the factors (LoKr: products σᵢ(w1)·σⱼ(w2)). */
  spectrum?: () => Promise<Float64Array>;
  /** The Eckart–Young optimal rank-k factors (B out×k, A k×in, row-major), when cheaper than from the factors. */
  truncate?: (k: number) => Promise<{ B: Float64Array; A: Float64Array }>;
}

/** A module whose ΔW cannot be computed from the file alone ((IA)³, bias-only diff, Bone): shown, refused by write commands. */
export interface BaseDependentModule {
  name: string;
  path: string;
  type: string;
  tensors: TensorInfo[];
  /** Why ΔW needs the base weight, in words. */
  reason: string;
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
  /** Modules whose ΔW needs the base model's weights (not in `modules`). */
  baseDependent?: BaseDependentModule[];
}

export function isDora(a: Adapter): boolean {
  return a.modules.some((m) => "lora_magnitude_vector" in m.extras || "dora_scale" in m.extras) || a.config?.["use_dora"] === true;
}
