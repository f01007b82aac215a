// The backends a test can run on this machine: js always, cpu when its addon is built and BLAS loads,
// cuda where a GPU is usable (or LORA_TEST_CUDA_ADDON names an addon, e.g. the CPU emulation build).
import { jsBackend } from "../linalg/js/index.js";
import type { LinalgBackend } from "../linalg/types.js";

export async function testBackends(): Promise<LinalgBackend[]> {
  const out: LinalgBackend[] = [jsBackend];
  try {
    const native = await import("../linalg/native.js");
    const p = native.probeCpu();
    if (p.ok) out.push(p.backend);
    const c = native.probeCuda(process.env.LORA_TEST_CUDA_ADDON ? { binding: process.env.LORA_TEST_CUDA_ADDON } : {});
    if (c.ok) out.push(c.backend);
  } catch {
    /* addon not built: js only */
  }
  return out;
}
