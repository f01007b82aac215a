// lora extract, the command's side: options in, the domain's run (surgery/extract.ts), report out.
import { totalmem } from "node:os";
import type { LinalgBackend } from "../../linalg/types.js";
import { runExtract, type ExtractOptions, type ExtractReport } from "../../surgery/extract.js";
import type { Tick } from "../support/progress.js";

export type { ExtractOptions, ExtractReport };

export function extract(
  o: ExtractOptions,
  backend: LinalgBackend,
  tick: Tick,
  env: Record<string, string | undefined>,
  collectGarbage?: () => Promise<void>,
): Promise<ExtractReport> {
  // Test hooks: LORA_TEST=1 LORA_TEST_STREAM_FROM=<elements> streams smaller weights, and
  // LORA_TEST_PANEL_BYTES=<bytes> reads them in smaller panels (the tests' models are small).
  const hook = (name: string): number | undefined => {
    const v = env["LORA_TEST"] === "1" && env[name] !== undefined ? Number(env[name]) : NaN;
    return Number.isFinite(v) && v >= 1 ? v : undefined;
  };
  const streamFrom = hook("LORA_TEST_STREAM_FROM"),
    panelBytes = hook("LORA_TEST_PANEL_BYTES");
  return runExtract(o, {
    backend,
    // Weights extracted side by side (one per core on cpu) while their float32 ΔW fit an eighth of the machine's memory.
    laneBytes: totalmem() / 8,
    onBytes: (d, n) => tick(d, n, "bytes"),
    ...(collectGarbage ? { releaseMemory: collectGarbage } : {}),
    ...(streamFrom !== undefined ? { streamFromElements: streamFrom } : {}),
    ...(panelBytes !== undefined ? { panelBytes } : {}),
  });
}
