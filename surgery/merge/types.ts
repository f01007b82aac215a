// The shared vocabulary of the merge methods (one file each beside this one): an input's
// contribution to a module, what the rank rules look at, what a method returns, and the options.
import type { KmeansInit } from "../../linalg/kmeans.js";
import type { Mat } from "../../linalg/types.js";

export const MERGE_METHODS = ["lego", "cat", "svd", "linear", "ties", "dare", "dare_ties", "magnitude_prune", "ffa", "fair"] as const;

export type MergeMethod = (typeof MERGE_METHODS)[number];

/** One input's contribution to a module: ΔWᵢ = scale·B·A, weighted by `weight`. */
export interface MergeTerm {
  /** Index of the input (argument order). */
  input: number;
  /** out×rᵢ */
  B: Mat<Float64Array>;
  /** rᵢ×in */
  A: Mat<Float64Array>;
  /** sᵢ by the input format's rule (docs/algorithms.md §1.2). */
  scale: number;
  weight: number;
}

/** What the rank rules look at: the factor shapes only. */
export interface TermShape {
  A: { rows: number; cols: number };
  B: { rows: number; cols: number };
}

/** A method's result: ΔW_out = B·A (scale 1), plus facts for the report. */
export interface MergedFactors {
  B: Mat<Float64Array>;
  A: Mat<Float64Array>;
  /** B·A equals the target T in exact arithmetic (cat): only rounding to the file's dtype makes an error. */
  exact?: boolean;
  /** The factors already in the file's dtype (B and A above are their values), with their error against T. */
  written?: WrittenFactors;
  details?: Record<string, unknown>;
}

/** A method's factors as the file will hold them, and ‖T‖ and ‖ΔW_out − T‖/‖T‖ of those bytes. */
export interface WrittenFactors {
  B: Uint8Array;
  A: Uint8Array;
  norm: number;
  rel: number;
  /** ‖ΔW_out − T‖ */
  diff: number;
}

export interface MergeOptions {
  inputs: string[];
  output: string;
  method: MergeMethod;
  /** K: output rank (svd, dense methods, ffa --project) or cluster count (lego). Default: the largest input rank of the module. */
  rank?: number;
  /** One per input; default 1/N each. */
  weights?: number[];
  seed: number;
  passthrough: "error" | "first" | "drop";
  to?: "peft" | "kohya" | "diffusers";
  force: boolean;
  // ties / dare / dare_ties / magnitude_prune
  density: number;
  tiesMode: "peft" | "mergekit";
  majoritySign: "total" | "frequency";
  oversample: number;
  powerIters: number;
  // lego
  paramReweight: boolean;
  outputReweight: boolean;
  paramNorm: "inf" | "2";
  signCanonicalize: boolean;
  nInit: number;
  maxIter: number;
  tol: number;
  refRank?: number;
  /** Internal (tests, golden examples): k-means initialisation. */
  kmeansInit?: KmeansInit;
  // ffa
  project: boolean;
  ffaTol: number;
  // fair
  fairSolver: "ridge" | "cosine-sgd";
  fairLambda: number;
  fairSteps: number;
  fairLr: number;
}
