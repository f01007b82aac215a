// What lora truncate is asked to do: how ranks are chosen (--rank, --energy, --budget, --dynamic,
// --unit), how the factors are written (--method, --split, --alpha-mode, --dtype) and where.
import type { SplitMode } from "../../linalg/lowrank.js";
import type { AlphaMode } from "./prefix.js";
import type { Score } from "./allocate.js";
import type { DynamicMethod } from "./kohya-rules.js";

export type OutDType = "F32" | "F16" | "BF16";
export type OutFormat = "peft" | "kohya" | "diffusers";

export interface TruncateOptions {
  input: string;
  output: string;
  rank?: number;
  energy?: number;
  budget?: number;
  /** undefined: svd, or prefix for a detected kohya DyLoRA file. */
  method?: "svd" | "prefix";
  score: Score;
  minRank: number;
  rho: number;
  /** undefined: balanced, or all-in-up with --kohya-compat (as resize_lora.py writes). */
  split?: SplitMode;
  alphaMode: AlphaMode;
  unit?: number;
  kohyaCompat: boolean;
  dynamic?: DynamicMethod;
  dynamicParam?: number;
  dtype?: OutDType;
  to?: OutFormat;
  force: boolean;
  /** Ranks decided by the caller (catalog --max-bytes), per module name; missing = 0. Method svd. */
  ranks?: ReadonlyMap<string, number>;
  /**
   * With `ranks`: σ per module name from the caller's spectrum pass over the same file (which
   * refused NaN/Inf factors), for the report and for the modules kept whole or removed.
   */
  spectra?: ReadonlyMap<string, Float64Array>;
}
