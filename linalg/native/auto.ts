// `--backend auto` where a GPU is usable: each operation goes to the cuda backend only when its
// size is at or above the crossover measured for it, else to the cpu backend, so auto is never a
// slower route than --backend cpu. The cuda addon is loaded only when a call first crosses over
// (its start-up costs more than small operations take). Re-measure the table on a GPU machine with
// `node dist/bench/gpu.js --crossover` (bench/gpu-check.sh runs it) and paste its JSON here.
import type { FloatArray, LinalgBackend, Mat } from "../types.js";

/** Operations that can be routed, with the size measure their crossover is stated in. */
export interface CrossoverTable {
  /** Where and when it was measured. */
  measuredOn: string;
  /** m·n·k of the product. */
  gemm: number;
  /** m·n·min(m, n). */
  qr: number;
  svd: number;
  /** n³. */
  eigSym: number;
  /** points · dimensions · clusters (one Lloyd iteration's distance product). */
  kmeansLloyd: number;
  /** rows · cols of the factor. */
  factorStats: number;
  /** (out + in) · r of the module. */
  truncateFactors: number;
  factorSpectrum: number;
  /** m · n · l (one pass of the test matrix). */
  randomizedSvd: number;
  /** out · in of the weight. */
  mergeWeight: number;
  /** values of the chunk. */
  weightDelta: number;
  /** m · n · l, as randomizedSvd. */
  sketch: number;
}

/**
 * Measured by bench/gpu.ts --crossover (docs/BENCHMARKS.md, "GPU (CUDA)"): the smallest size from
 * which cuda was faster than cpu at every larger size measured; Infinity where cuda never was, or
 * where two runs or the whole commands disagreed (kept on the cpu: auto must never be slower).
 */
export const CUDA_CROSSOVER: CrossoverTable = {
  measuredOn: "NVIDIA H200 vs 16 Xeon cores (OpenBLAS), 2026-12-04",
  // A host-resident product is dominated by its transfers: one run had cuda slower at 2048³ (8.6e9).
  gemm: Infinity,
  qr: 8_388_608,
  svd: 8_388_608,
  eigSym: Infinity,
  kmeansLloyd: 2_097_152,
  // The commands run these modules side by side (withLanes): cpu lanes beat the one GPU there
  // (`lora truncate`, Llama-7B shapes: cpu 0.75 s, cuda 1.23 s), whatever one call alone measures.
  factorStats: Infinity,
  truncateFactors: Infinity,
  factorSpectrum: Infinity,
  randomizedSvd: 13_631_488,
  // Not measured on a GPU yet (the cuda kernels of common/streamed.h are untested on a device): cpu.
  mergeWeight: Infinity,
  weightDelta: Infinity,
  sketch: Infinity,
};
const dims = (m: Mat) => [m.rows, m.cols] as const;

/** The backend auto gives: cpu below each crossover, cuda (loaded on first use) at or above it. */
export function routedBackend(cpu: LinalgBackend, cuda: () => LinalgBackend | undefined, table: CrossoverTable = CUDA_CROSSOVER): LinalgBackend {
  let gpu: LinalgBackend | undefined | null = null;
  const pick = (op: Exclude<keyof CrossoverTable, "measuredOn">, size: number): LinalgBackend => {
    if (!(size >= table[op])) return cpu;
    if (gpu === null) gpu = cuda();
    return gpu ?? cpu;
  };
  const routes = Object.entries(table)
    .filter(([k, v]) => k !== "measuredOn" && Number.isFinite(v))
    .map(([k]) => k);
  const routed: LinalgBackend = {
    name: cpu.name,
    detail: `${cpu.detail}; cuda for ${routes.length ? routes.join(", ") : "nothing"} above the measured crossovers (${table.measuredOn})`,
    gemm<T extends FloatArray>(a: Mat<T>, b: Mat<T>, o?: { transA?: boolean; transB?: boolean; alpha?: number }) {
      const [ar, ac] = dims(a);
      const n = o?.transB ? b.rows : b.cols;
      return pick("gemm", ar * ac * n).gemm(a, b, o);
    },
    qr: (a) => pick("qr", a.rows * a.cols * Math.min(a.rows, a.cols)).qr(a),
    svd: (a) => pick("svd", a.rows * a.cols * Math.min(a.rows, a.cols)).svd(a),
    eigSym: (a) => pick("eigSym", a.rows ** 3).eigSym(a),
    kmeansLloyd: (x, init, o) => pick("kmeansLloyd", x.rows * x.cols * init.rows).kmeansLloyd(x, init, o),
    factorStats: (raw, dtype, rows, cols, side) => pick("factorStats", rows * cols).factorStats(raw, dtype, rows, cols, side),
    truncateFactors: (x) => pick("truncateFactors", (x.B.rows + x.A.cols) * x.B.cols).truncateFactors(x),
    factorSpectrum: (x) => pick("factorSpectrum", (x.B.rows + x.A.cols) * x.B.cols).factorSpectrum(x),
    // One side for the whole batch: the largest module's size decides (the calls are small or the batch would not be one).
    factorSpectra: (xs) => pick("factorSpectrum", Math.max(0, ...xs.map((x) => (x.B.rows + x.A.cols) * x.B.cols))).factorSpectra(xs),
    randomizedSvd: (a, omega, q, t) => pick("randomizedSvd", a.rows * a.cols * omega.cols).randomizedSvd!(a, omega, q, t),
    mergeWeight: (x) => pick("mergeWeight", x.out * x.in).mergeWeight(x),
    weightDelta: (tuned, base, dtype, delta, n2) => pick("weightDelta", delta.length).weightDelta(tuned, base, dtype, delta, n2),
    sketch: (x) => pick("sketch", x.m.rows * x.m.cols * x.omega.cols).sketch(x),
    // Lanes are the cpu's (modules side by side, BLAS on one thread each); routed GPU calls are unaffected.
    withLanes: (fn) => cpu.withLanes(fn),
  };
  return routed;
}
