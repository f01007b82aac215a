// The backends a test can run on this machine: js always, cpu when its addon is built and BLAS loads.
import { jsBackend } from "../linalg/js/index.js";
import type { LinalgBackend } from "../linalg/types.js";

export async function testBackends(): Promise<LinalgBackend[]> {
  const out: LinalgBackend[] = [jsBackend];
  try {
    const native = await import("../linalg/native.js");
    const p = native.probeCpu();
    if (p.ok) out.push(p.backend);
  } catch { /* addon not built: js only */ }
  return out;
}
