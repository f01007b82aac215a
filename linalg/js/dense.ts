// Plain float64 dense kernels of the pure-TS backend. Row-major throughout. These favour
// accuracy and simplicity over speed: the js backend is the fallback and the reference that
// the native backends are tested against.
import { jacobiSweeps } from "../../common/dense.js";

/** C (m×n) = op(A) · op(B). a is (transA ? k×m : m×k), b is (transB ? n×k : k×n). */
export function gemm64(
  a: ArrayLike<number>,
  aRows: number,
  aCols: number,
  b: ArrayLike<number>,
  bRows: number,
  bCols: number,
  transA: boolean,
  transB: boolean,
  alpha: number,
): { data: Float64Array; rows: number; cols: number } {
  const m = transA ? aCols : aRows;
  const k = transA ? aRows : aCols;
  const kb = transB ? bCols : bRows;
  const n = transB ? bRows : bCols;
  if (k !== kb) throw new Error(`gemm: inner dimensions differ (${k} vs ${kb})`);
  const c = new Float64Array(m * n);
  // Materialise op(B) as k×n row-major so the inner loop is contiguous (i-p-j order).
  let bt: ArrayLike<number> = b;
  if (transB) {
    const t = new Float64Array(k * n);
    for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) t[p * n + j] = b[j * bCols + p]!;
    bt = t;
  }
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const aip = transA ? a[p * aCols + i]! : a[i * aCols + p]!;
      if (aip === 0) continue;
      const s = alpha * aip;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] += s * (bt[bp + j] as number);
    }
  }
  return { data: c, rows: m, cols: n };
}

/**
 * Thin Householder QR of an m×n matrix: Q m×k with orthonormal columns, R k×n upper
 * trapezoidal, k = min(m, n). Diagonal of R made non-negative (a deterministic convention).
 */
export function qr64(a: ArrayLike<number>, m: number, n: number): { Q: Float64Array; R: Float64Array; k: number } {
  const k = Math.min(m, n);
  // Work column-major for cache-friendly Householder updates.
  const w = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = a[i * n + j]!;
  const vs: Float64Array[] = [];
  const betas = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    const col = j * m;
    let norm = 0;
    for (let i = j; i < m; i++) norm += w[col + i]! * w[col + i]!;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m - j);
    if (norm === 0) {
      vs.push(v);
      betas[j] = 0;
      continue;
    }
    const x0 = w[col + j]!;
    const alpha = x0 >= 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i - j] = w[col + i]!;
    v[0] = x0 - alpha;
    let vnorm2 = 0;
    for (let i = 0; i < v.length; i++) vnorm2 += v[i]! * v[i]!;
    const beta = vnorm2 === 0 ? 0 : 2 / vnorm2;
    betas[j] = beta;
    vs.push(v);
    if (beta === 0) continue;
    for (let c = j; c < n; c++) {
      const cc = c * m;
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i - j]! * w[cc + i]!;
      const f = beta * dot;
      if (f !== 0) for (let i = j; i < m; i++) w[cc + i] -= f * v[i - j]!;
    }
  }
  const R = new Float64Array(k * n);
  for (let i = 0; i < k; i++) for (let j = i; j < n; j++) R[i * n + j] = w[j * m + i]!;
  // Q = H_0 H_1 … H_{k-1} applied to the first k columns of I (column-major accumulate).
  const q = new Float64Array(m * k);
  for (let j = 0; j < k; j++) q[j * m + j] = 1;
  for (let h = k - 1; h >= 0; h--) {
    const v = vs[h]!;
    const beta = betas[h]!;
    if (beta === 0) continue;
    for (let c = 0; c < k; c++) {
      const cc = c * m;
      let dot = 0;
      for (let i = h; i < m; i++) dot += v[i - h]! * q[cc + i]!;
      const f = beta * dot;
      if (f !== 0) for (let i = h; i < m; i++) q[cc + i] -= f * v[i - h]!;
    }
  }
  // Sign convention: R's diagonal ≥ 0.
  for (let i = 0; i < k; i++) {
    if (R[i * n + i]! < 0) {
      for (let j = i; j < n; j++) R[i * n + j] = -R[i * n + j]!;
      for (let r = 0; r < m; r++) q[i * m + r] = -q[i * m + r]!;
    }
  }
  const Q = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) Q[i * k + j] = q[j * m + i]!;
  return { Q, R, k };
}

/**
 * One-sided Jacobi SVD (Hestenes) of an m×n matrix with m ≥ n: returns U m×n, S (n), V n×n
 * (columns), sorted descending. Accurate to high relative precision for small singular values.
 */
function jacobiTall(a: ArrayLike<number>, m: number, n: number): { U: Float64Array; S: Float64Array; V: Float64Array } {
  // Column-major working copy.
  const w = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = a[i * n + j]!;
  const v = new Float64Array(n * n);
  for (let j = 0; j < n; j++) v[j * n + j] = 1;
  jacobiSweeps(w, v, m, n);
  const S = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += w[j * m + i]! * w[j * m + i]!;
    S[j] = Math.sqrt(s);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => S[y]! - S[x]! || x - y);
  const U = new Float64Array(m * n);
  const V = new Float64Array(n * n);
  const Ss = new Float64Array(n);
  order.forEach((src, dst) => {
    const sv = S[src]!;
    Ss[dst] = sv;
    for (let i = 0; i < m; i++) U[i * n + dst] = sv > 0 ? w[src * m + i]! / sv : 0;
    for (let i = 0; i < n; i++) V[i * n + dst] = v[src * n + i]!;
  });
  // Columns of U for zero singular values: complete to an orthonormal set (Gram–Schmidt on e_i).
  completeOrthonormal(U, m, n, Ss);
  return { U, S: Ss, V };
}

/** Replace columns of U (m×n) whose singular value is 0 by unit vectors orthogonal to the rest. */
function completeOrthonormal(U: Float64Array, m: number, n: number, S: Float64Array): void {
  const maxS = S[0] ?? 0;
  for (let j = 0; j < n; j++) {
    if (S[j]! > maxS * 1e-300 && S[j]! > 0) continue;
    for (let e = 0; e < m; e++) {
      const cand = new Float64Array(m);
      cand[e] = 1;
      for (let pass = 0; pass < 2; pass++) {
        for (let c = 0; c < n; c++) {
          if (c === j || (c > j && !(S[c]! > 0))) continue;
          let d = 0;
          for (let i = 0; i < m; i++) d += U[i * n + c]! * cand[i]!;
          for (let i = 0; i < m; i++) cand[i] -= d * U[i * n + c]!;
        }
      }
      let nrm = 0;
      for (let i = 0; i < m; i++) nrm += cand[i]! * cand[i]!;
      nrm = Math.sqrt(nrm);
      if (nrm > 1e-8) {
        for (let i = 0; i < m; i++) U[i * n + j] = cand[i]! / nrm;
        break;
      }
    }
  }
}

/** Thin SVD of an m×n matrix: U m×k, S k, Vt k×n, k = min(m, n). QR first, then Jacobi on R. */
export function svd64(a: ArrayLike<number>, m: number, n: number): { U: Float64Array; S: Float64Array; Vt: Float64Array; k: number } {
  if (m >= n) {
    // A = Q R, R = U_r S V^T  ⇒  A = (Q U_r) S V^T. Jacobi on the small n×n R.
    const useQr = m > n;
    let U: Float64Array, S: Float64Array, V: Float64Array;
    if (useQr) {
      const { Q, R } = qr64(a, m, n);
      const j = jacobiTall(R, n, n);
      U = gemm64(Q, m, n, j.U, n, n, false, false, 1).data;
      S = j.S;
      V = j.V;
    } else {
      ({ U, S, V } = jacobiTall(a, m, n));
    }
    const Vt = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) Vt[i * n + j] = V[j * n + i]!;
    return { U, S, Vt, k: n };
  }
  // Wide: SVD of Aᵀ (n×m), then swap roles.
  const at = new Float64Array(n * m);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) at[j * m + i] = a[i * n + j]!;
  const t = svd64(at, n, m); // Aᵀ = U' S V'ᵀ ⇒ A = V' S U'ᵀ
  const k = m;
  const U = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) U[i * k + j] = t.Vt[j * m + i]!;
  const Vt = new Float64Array(k * n);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) Vt[i * n + j] = t.U[j * k + i]!;
  return { U, S: t.S, Vt, k };
}

/** Cyclic Jacobi eigen-decomposition of a symmetric n×n matrix (lower triangle used). Descending. */
export function eigSym64(a: ArrayLike<number>, n: number): { values: Float64Array; vectors: Float64Array } {
  const w = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      w[i * n + j] = a[i * n + j]!;
      w[j * n + i] = a[i * n + j]!;
    }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0,
      tot = 0;
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        const x = w[i * n + j]! ** 2;
        tot += x;
        if (i !== j) off += x;
      }
    if (off <= 1e-30 * tot || off === 0) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = w[p * n + q]!;
        if (apq === 0) continue;
        const app = w[p * n + p]!,
          aqq = w[q * n + q]!;
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(1 + theta * theta));
        const c = 1 / Math.sqrt(1 + t * t),
          s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = w[k * n + p]!,
            akq = w[k * n + q]!;
          w[k * n + p] = c * akp - s * akq;
          w[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = w[p * n + k]!,
            aqk = w[q * n + k]!;
          w[p * n + k] = c * apk - s * aqk;
          w[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!,
            vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => w[y * n + y]! - w[x * n + x]! || x - y);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = w[src * n + src]!;
    for (let k = 0; k < n; k++) vectors[k * n + dst] = v[k * n + src]!;
  });
  return { values, vectors };
}
