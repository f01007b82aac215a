// The pure-TypeScript backend: always available, float64 internally, results returned in the
// precision of the input. Fast enough for adapters of ordinary size; the cpu backend (BLAS/LAPACK)
// is for the heavy work. Its fused operations are linalg/fused.ts over these dense ones.
import { withFusedOps } from "../fused.js";
import type { FloatArray, KmeansLloydOptions, KmeansResult, LinalgBackend, Mat } from "../types.js";
import { gemm64, qr64, svd64 } from "./dense.js";
import { eigSymTql } from "../../common/eig-sym.js";
import { lloyd64 } from "./kmeans.js";

function like<T extends FloatArray>(proto: T, data: Float64Array): T {
  return (proto instanceof Float32Array ? Float32Array.from(data) : data) as T;
}

export const jsBackend: LinalgBackend = withFusedOps({
  name: "js",
  detail: "pure TypeScript (float64 Householder QR, one-sided Jacobi SVD, ml-matrix symmetric eigensolver)",
  async gemm<T extends FloatArray>(a: Mat<T>, b: Mat<T>, opts: { transA?: boolean; transB?: boolean; alpha?: number } = {}) {
    const r = gemm64(a.data, a.rows, a.cols, b.data, b.rows, b.cols, !!opts.transA, !!opts.transB, opts.alpha ?? 1);
    return { rows: r.rows, cols: r.cols, data: like(a.data, r.data) };
  },
  async qr<T extends FloatArray>(a: Mat<T>) {
    const { Q, R, k } = qr64(a.data, a.rows, a.cols);
    return { Q: { rows: a.rows, cols: k, data: like(a.data, Q) }, R: { rows: k, cols: a.cols, data: like(a.data, R) } };
  },
  async svd<T extends FloatArray>(a: Mat<T>) {
    const { U, S, Vt, k } = svd64(a.data, a.rows, a.cols);
    return { U: { rows: a.rows, cols: k, data: like(a.data, U) }, S: like(a.data, S), Vt: { rows: k, cols: a.cols, data: like(a.data, Vt) } };
  },
  async eigSym<T extends FloatArray>(a: Mat<T>) {
    if (a.rows !== a.cols) throw new Error("eigSym: matrix is not square");
    const { values, vectors } = eigSymTql(a.data, a.rows);
    return { values: like(a.data, values), vectors: { rows: a.rows, cols: a.rows, data: like(a.data, vectors) } };
  },
  async kmeansLloyd(points: Mat<Float64Array>, init: Mat<Float64Array>, opts: KmeansLloydOptions): Promise<KmeansResult> {
    return lloyd64(points, init, opts);
  },
});
