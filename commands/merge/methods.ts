// The merge option defaults, apart from run.ts so that the command line can be built without
// loading the merge code (commands load their run module only when they run).
import type { MergeOptions } from "../../surgery/merge/types.js";

/** The LoRA-LEGO settings the command line defaults to (the benches use the same). */
export const LEGO_DEFAULTS = {
  paramReweight: true,
  outputReweight: true,
  paramNorm: "inf",
  signCanonicalize: false,
  nInit: 10,
  maxIter: 300,
  tol: 1e-4,
} as const satisfies Partial<MergeOptions>;

/** Defaults of the options docs/cli.md "merge" lists (the command line shows them). */
export const MERGE_DEFAULTS = {
  seed: 0,
  passthrough: "error",
  force: false,
  density: 0.5,
  tiesMode: "peft",
  majoritySign: "total",
  oversample: 10,
  powerIters: 2,
  ...LEGO_DEFAULTS,
  project: false,
  ffaTol: 1e-6,
  fairSolver: "ridge",
  fairLambda: 0.01,
  fairSteps: 500,
  fairLr: 0.01,
} as const satisfies Partial<MergeOptions>;
