// lora extract, the command's side: options in, the domain's run (surgery/extract.ts), report out.
import type { LinalgBackend } from "../../linalg/types.js";
import { runExtract, type ExtractOptions, type ExtractReport } from "../../surgery/extract.js";
import type { Tick } from "../support/progress.js";

export type { ExtractOptions, ExtractReport };

export function extract(o: ExtractOptions, backend: LinalgBackend, tick: Tick, collectGarbage?: () => Promise<void>): Promise<ExtractReport> {
  return runExtract(o, { backend, onBytes: (d, n) => tick(d, n, "bytes"), ...(collectGarbage ? { releaseMemory: collectGarbage } : {}) });
}
