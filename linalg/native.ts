// The native backends (cpu = BLAS/LAPACK addon, cuda = CUDA addon): probing, the reasons and fixes
// `lora backends` prints, and the facade of linalg/native/ (binding.ts loads the .node files,
// adapt.ts turns them into LinalgBackends, auto.ts routes --backend auto between cpu and cuda).
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { BackendUnavailableError, InvalidInputError } from "../common/errors.js";
import { adaptBinding } from "./native/adapt.js";
import { buildStatus, loadNative, nativeDir, type CpuBinding, type CpuInfo, type CudaBinding, type NativeKind } from "./native/binding.js";
import type { LinalgBackend } from "./types.js";

export { adaptBinding } from "./native/adapt.js";
export { CUDA_CROSSOVER, routedBackend, type CrossoverTable } from "./native/auto.js";
export * from "./native/binding.js";

export const CPU_FIX = "apt-get install g++ make python3 libopenblas0-pthread liblapack3, then npm rebuild";
export const CPU_BLAS_FIX = "apt-get install libopenblas0-pthread (or liblapack3 + libblas3); no rebuild is needed";

export type Probe = { ok: true; backend: LinalgBackend } | { ok: false; reason: string; fix: string; detail: string };

function threadsOf(t: number | undefined): number {
  if (t === undefined) return availableParallelism();
  if (!Number.isInteger(t) || t < 1) throw new InvalidInputError(`--threads must be a positive integer (got ${String(t)})`);
  return t;
}

function cpuDetail(info: CpuInfo): string {
  const what = info.vendor.startsWith("OpenBLAS") ? info.vendor.split(/\s+/).slice(0, 2).join(" ") : info.vendor;
  const core = info.corename
    ? `, ${info.corename} kernels${info.coretypeSource === "lora" ? " (OPENBLAS_CORETYPE chosen by lora from CPU features)" : info.coretypeSource === "user" ? " (OPENBLAS_CORETYPE set by the user)" : ""}`
    : "";
  return `${what} via ${info.library}${core}, ${info.threads} thread${info.threads === 1 ? "" : "s"}`;
}

/**
 * A LORA_NATIVE_DIR that does not hold the addon (and has no build status beside it saying why):
 * the folder named, rather than the addon's build blamed.
 */
function envDirProblem(kind: NativeKind): { reason: string; fix: string } | null {
  const dir = process.env.LORA_NATIVE_DIR;
  if (!dir || existsSync(join(dir, `lora_${kind}.node`))) return null;
  const there = existsSync(dir);
  if (there && buildStatus()?.[kind]) return null; // a build folder: its status.json says why the addon is missing
  return {
    reason: there ? `LORA_NATIVE_DIR=${dir} holds no lora_${kind}.node` : `LORA_NATIVE_DIR=${dir} does not exist`,
    fix: `set LORA_NATIVE_DIR to the folder holding lora_${kind}.node, or unset it (default: native/build/Release in the package)`,
  };
}

function notBuiltReason(kind: NativeKind, err: Error): string {
  const st = buildStatus()?.[kind];
  if (st && !st.built) return `lora_${kind}.node was not built: ${st.reason}`;
  if (!st && / does not exist$/.test(err.message)) return `lora_${kind}.node was not built (npm install ran without its install script?)`;
  return `lora_${kind}.node could not be loaded: ${err.message.split("\n")[0]}`;
}

/** The cpu backend, or why not. Loads lora_cpu.node (and so BLAS) on first call. */
export function probeCpu(opts: { threads?: number; binding?: string | CpuBinding } = {}): Probe {
  const b = loadNative("cpu", opts.binding);
  if (b instanceof Error) {
    const env = opts.binding === undefined ? envDirProblem("cpu") : null;
    if (env) return { ok: false, ...env, detail: "BLAS/LAPACK addon (lora_cpu.node)" };
    const st = buildStatus()?.cpu;
    const fix =
      st && /^build failed/.test(st.reason) && !/not found|No such file/.test(st.reason)
        ? `see native/build/build.log (node native/build.js --verbose); ${CPU_FIX}`
        : CPU_FIX;
    return { ok: false, reason: notBuiltReason("cpu", b), fix, detail: "BLAS/LAPACK addon (lora_cpu.node)" };
  }
  let info = b.info();
  if (!info.loaded) {
    return { ok: false, reason: info.error ?? "BLAS/LAPACK could not be opened", fix: CPU_BLAS_FIX, detail: "lora_cpu.node built, no BLAS/LAPACK" };
  }
  const t = threadsOf(opts.threads);
  if (info.threads !== t) {
    b.setThreads(t);
    info = b.info();
  }
  const backend = adaptBinding("cpu", b, cpuDetail(info));
  // Re-entrant: callers may enter side by side (catalog mode truncates several adapters at once);
  // BLAS runs single-threaded from the first entry until the last one leaves.
  let entered = 0,
    threadsBefore = 1;
  backend.withLanes = async <T>(fn: (lanes: number) => Promise<T>): Promise<T> => {
    if (entered++ === 0) {
      threadsBefore = b.info().threads;
      b.setThreads(1);
    }
    try {
      return await fn(Math.max(1, threadsBefore));
    } finally {
      if (--entered === 0) b.setThreads(threadsBefore);
    }
  };
  return { ok: true, backend };
}

/** Cheap (no addon loaded): lora_cuda.node exists and an NVIDIA driver is present. */
export function cudaLikely(): boolean {
  return existsSync(join(nativeDir(), "lora_cuda.node")) && hasNvidiaDriver();
}

function hasNvidiaDriver(): boolean {
  return existsSync("/proc/driver/nvidia/version") || existsSync("/dev/nvidiactl") || existsSync("/dev/nvidia0");
}

const CUDA_BUILD_FIX = "install the CUDA toolkit (nvcc; or set CUDA_HOME), then npm rebuild";
const CUDA_GPU_FIX =
  "run on a machine with an NVIDIA GPU (sm_80 or newer) and a driver new enough for the CUDA runtime lora was built with (r580+ for CUDA 13)";

/** The cuda backend, or why not. lora_cuda.node is loaded only where an NVIDIA driver is present. */
export function probeCuda(opts: { binding?: string | CudaBinding } = {}): Probe {
  if (opts.binding === undefined) {
    const file = join(nativeDir(), "lora_cuda.node");
    if (!existsSync(file)) {
      const env = envDirProblem("cuda");
      if (env) return { ok: false, ...env, detail: "own CUDA kernels (lora_cuda.node)" };
      const st = buildStatus()?.cuda;
      const reason = st && !st.built ? `lora_cuda.node was not built: ${st.reason}` : "lora_cuda.node was not built";
      const fix =
        st && /^build failed|does not load/.test(st.reason) ? "see native/build/build.log (node native/build.js --verbose), then npm rebuild" : CUDA_BUILD_FIX;
      return { ok: false, reason, fix, detail: "own CUDA kernels (lora_cuda.node)" };
    }
    if (!hasNvidiaDriver()) {
      return {
        ok: false,
        reason: "no NVIDIA GPU driver on this machine (no /proc/driver/nvidia/version)",
        fix: CUDA_GPU_FIX,
        detail: "lora_cuda.node built, no GPU",
      };
    }
  }
  const b = loadNative("cuda", opts.binding);
  if (b instanceof Error) return { ok: false, reason: notBuiltReason("cuda", b), fix: CUDA_BUILD_FIX, detail: "own CUDA kernels (lora_cuda.node)" };
  const p = b.probe();
  if (p.error !== 0 || p.deviceCount < 1) {
    const why = !p.libcuda ? `the CUDA driver library is missing (${p.dlerror ?? "libcuda.so.1"})` : `${p.errorString} (CUDA error ${p.error})`;
    return { ok: false, reason: why, fix: CUDA_GPU_FIX, detail: "lora_cuda.node built, no usable GPU" };
  }
  const mem = p.memoryBytes ? `, ${(p.memoryBytes / 2 ** 30).toFixed(0)} GiB` : "";
  const gemm = p.blas?.startsWith("cuBLAS") ? `GEMM by ${p.blas}, other kernels own` : "own kernels";
  const detail = `${p.device ?? "GPU"} (sm_${(p.computeCapability ?? "").replace(".", "")}${mem}), ${gemm} on CUDA runtime ${fmtCudaVersion(p.runtimeVersion)}, driver ${fmtCudaVersion(p.driverVersion)}`;
  const backend = adaptBinding("cuda", b, detail);
  // Modules side by side: the GPU parts queue on one device, the host parts (r×r algebra, products) use the cores.
  backend.withLanes = async <T>(fn: (lanes: number) => Promise<T>): Promise<T> => fn(availableParallelism());
  return { ok: true, backend };
}

function fmtCudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/** Throws BackendUnavailableError (exit 4) with the fix, for an explicit --backend. */
export function requireBackend(name: "cpu" | "cuda", p: Probe): LinalgBackend {
  if (p.ok) return p.backend;
  throw new BackendUnavailableError(`the ${name} backend is not available: ${p.reason}. Fix: ${p.fix}`, {
    hint: "--backend auto picks the best available backend (lora backends lists them)",
  });
}
