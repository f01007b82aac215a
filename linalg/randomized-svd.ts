// Randomized SVD of a dense matrix (docs/algorithms.md §2.4; Halko, Martinsson & Tropp 2011,
// Algorithm 4.4 randomized subspace iteration + Algorithm 5.1 direct SVD), for the one place a
// dense matrix is unavoidable: after TIES/DARE/magnitude pruning. Gaussian test matrix from the
// seeded Rng, QR re-orthonormalisation at every half-step, sign convention of linalg/signs.ts,
// so a seed gives the same factors on every backend up to rounding.
import type { LowRankSvd } from "./lowrank.js";
import { Rng } from "./random.js";
import { flipSigns } from "./signs.js";
import type { LinalgBackend, Mat } from "./types.js";

export interface RandomizedSvdOptions {
  /** Oversampling p (ℓ = t + p). Default 10. */
  oversample?: number;
  /** Power (subspace) iterations q. Default 2. */
  powerIters?: number;
  /** Seed of the Gaussian test matrix. Default 0. */
  seed?: number;
}

/** Dense thin SVD truncated to t triplets, signs normalised. */
async function exactTruncated(be: LinalgBackend, m: Mat<Float64Array>, t: number): Promise<LowRankSvd> {
  const s = await be.svd(m);
  return truncate(s.U, s.S, s.Vt, t);
}

function truncate(U: Mat<Float64Array>, S: Float64Array, Vt: Mat<Float64Array>, t: number): LowRankSvd {
  const k = U.cols;
  const tt = Math.min(t, k);
  const u = new Float64Array(U.rows * tt);
  for (let i = 0; i < U.rows; i++) for (let j = 0; j < tt; j++) u[i * tt + j] = U.data[i * k + j]!;
  const vt = Float64Array.from(Vt.data.subarray(0, tt * Vt.cols));
  const out = {
    U: { rows: U.rows, cols: tt, data: u },
    S: Float64Array.from(S.subarray(0, tt), (x) => Math.max(x, 0)),
    Vt: { rows: tt, cols: Vt.cols, data: vt },
  };
  flipSigns(out.U, out.Vt);
  return out;
}

/**
 * Rank-t approximate SVD of the d×k matrix M. When ℓ = t + p reaches min(d, k) the sketch would
 * be the whole space, so the exact dense SVD is used instead (same cost class, no error).
 */
export async function randomizedSvd(be: LinalgBackend, m: Mat<Float64Array>, t: number, o: RandomizedSvdOptions = {}): Promise<LowRankSvd> {
  const d = m.rows,
    k = m.cols;
  if (!Number.isInteger(t) || t < 1) throw new Error(`randomizedSvd: target rank must be a positive integer (got ${t})`);
  const p = o.oversample ?? 10,
    q = o.powerIters ?? 2;
  const minDim = Math.min(d, k);
  const l = Math.min(t + p, minDim);
  if (l >= minDim) return exactTruncated(be, m, Math.min(t, minDim));
  const rng = new Rng(o.seed ?? 0);
  const omega: Mat<Float64Array> = { rows: k, cols: l, data: rng.normals(k * l) };
  if (be.randomizedSvd) {
    // the same steps in one native call (cpu, cuda)
    const r = await be.randomizedSvd(m, omega, q, t);
    return truncate(r.U, r.S, r.Vt, t);
  }
  let Q = (await be.qr(await be.gemm(m, omega))).Q; // d×ℓ
  for (let i = 0; i < q; i++) {
    const Z = (await be.qr(await be.gemm(m, Q, { transA: true }))).Q; // k×ℓ
    Q = (await be.qr(await be.gemm(m, Z))).Q; // d×ℓ
  }
  const small = await be.gemm(Q, m, { transA: true }); // ℓ×k
  const s = await be.svd(small);
  const U = await be.gemm(Q, s.U); // d×ℓ
  return truncate(U, s.S, s.Vt, t);
}
