// lora apply, the command's side: options in, the domain's run (surgery/apply.ts), report out.
import type { LinalgBackend } from "../../linalg/types.js";
import { runApply, type ApplyOptions, type ApplyReport } from "../../surgery/apply.js";
import type { Tick } from "../support/progress.js";

export type { ApplyOptions, ApplyReport };

export function apply(o: ApplyOptions, backend: LinalgBackend, tick: Tick): Promise<ApplyReport> {
  return runApply(o, { backend, onBytes: (d, n) => tick(d, n, "bytes") });
}
