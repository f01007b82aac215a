// LoKr (LyCORIS lycoris/modules/lokr.py `get_weight`, lycoris/functional/lokr.py `make_kron`;
// docs/formats.md "LyCORIS"): ΔW = s·kron(W1, W2) with W1 = lokr_w1 or lokr_w1_a·lokr_w1_b [a, c],
// W2 = lokr_w2, lokr_w2_a·lokr_w2_b, or the Tucker rebuild of lokr_t2 [b, d, k…]; conv kernels
// sit in W2 only, so ΔW flattened to [a·b, c·d·Πk] is kron(W1, W2 flattened to [b, d·Πk]).
// s = alpha / rows(lokr_w1_b), else alpha / rows(lokr_w2_b); both factors full: s = 1 (lokr.py
// forces alpha = lora_dim). With W1 = U1·S1·V1ᵀ and W2 = U2·S2·V2ᵀ, kron(W1, W2) =
// Σ σ1ᵢσ2ⱼ (u1ᵢ⊗u2ⱼ)(v1ᵢ⊗v2ⱼ)ᵀ is an SVD: the spectrum is every product σ1ᵢ·σ2ⱼ and the
// Eckart–Young rank-k truncation keeps the k largest pairs, all from two small SVDs.
import { gramSvd, jacobiSvd, lowRankSvd, type SmallSvd, transpose } from "../../../common/dense.js";
import type { TensorInfo } from "../../safetensors/index.js";
import type { DerivedModuleSpec, ExactFactors } from "../derived.js";
import { inferKernel } from "./kernel.js";
import type { Group } from "./keys.js";
import { type ModuleId, moduleShape, type ScaleOf } from "./module-id.js";
import { checkTensor, flat2, mismatch, type ReadCtx, read64, storedDtype } from "./stored.js";
import { tuckerRight } from "./tucker.js";

/** How one Kronecker factor is stored, and its SVD when read. */
interface Side {
  rows: number;
  cols: number;
  /** Upper bound on its rank (min(rows, cols), or the decomposition's r). */
  rankBound: number;
  svd: () => Promise<SmallSvd>;
}

/** The pairs (i, j) ordered by σ1ᵢ·σ2ⱼ descending, with the products (scale applied). */
function pairs(s1: Float64Array, s2: Float64Array, k1: number, k2: number, s: number): { i: Int32Array; j: Int32Array; S: Float64Array } {
  const idx = Array.from({ length: k1 * k2 }, (_, x) => x);
  const val = (x: number) => s1[Math.floor(x / k2)]! * s2[x % k2]!;
  idx.sort((x, y) => val(y) - val(x));
  const I = new Int32Array(idx.length),
    J = new Int32Array(idx.length),
    S = new Float64Array(idx.length);
  idx.forEach((x, n) => {
    I[n] = Math.floor(x / k2);
    J[n] = x % k2;
    S[n] = Math.abs(s) * val(x);
  });
  return { i: I, j: J, S };
}

/** Balanced rank-k factors of s·kron(W1, W2) from the two SVDs: B = (u1ᵢ⊗u2ⱼ)·√σ·sign(s), A = √σ·(v1ᵢ⊗v2ⱼ)ᵀ. */
function kronFactors(a: SmallSvd, w1: Side, b: SmallSvd, w2: Side, s: number, k: number): ExactFactors {
  const p = pairs(a.S, b.S, a.k, b.k, s);
  const out = w1.rows * w2.rows,
    n = w1.cols * w2.cols;
  const B = new Float64Array(out * k),
    A = new Float64Array(k * n);
  const sign = s < 0 ? -1 : 1;
  for (let col = 0; col < Math.min(k, p.S.length); col++) {
    const i = p.i[col]!,
      j = p.j[col]!;
    const r = Math.sqrt(p.S[col]!);
    for (let x = 0; x < w1.rows; x++) {
      const u = a.U[x * a.k + i]! * r * sign;
      if (u === 0) continue;
      for (let y = 0; y < w2.rows; y++) B[(x * w2.rows + y) * k + col] = u * b.U[y * b.k + j]!;
    }
    const row = col * n;
    for (let x = 0; x < w1.cols; x++) {
      const v = a.V[x * a.k + i]! * r;
      if (v === 0) continue;
      for (let y = 0; y < w2.cols; y++) A[row + x * w2.cols + y] = v * b.V[y * b.k + j]!;
    }
  }
  return { B, A };
}

function need(c: ReadCtx, id: ModuleId, g: Group, p: "lokr_w1_a" | "lokr_w1_b" | "lokr_w2_a" | "lokr_w2_b"): TensorInfo {
  const t = g.get(p);
  if (!t) throw mismatch(c.label, id.name, `LoKr without its ${p} tensor`);
  return t;
}

export function lokrSpec(c: ReadCtx, id: ModuleId, g: Group, scaleOf: ScaleOf): DerivedModuleSpec {
  const stored: TensorInfo[] = [];
  let dim: number | undefined;
  // W1 [a, c]
  let w1: Side;
  const w1t = g.get("lokr_w1");
  if (w1t) {
    checkTensor(c.label, w1t, [2], "lokr_w1");
    stored.push(w1t);
    const [a, cc] = w1t.shape as [number, number];
    w1 = { rows: a, cols: cc, rankBound: Math.min(a, cc), svd: async () => jacobiSvd(await read64(c, w1t), a, cc) };
  } else {
    const wa = need(c, id, g, "lokr_w1_a"),
      wb = need(c, id, g, "lokr_w1_b");
    for (const t of [wa, wb]) checkTensor(c.label, t, [2], "LoKr w1 factors");
    if (wa.shape[1] !== wb.shape[0]) throw mismatch(c.label, id.name, `lokr_w1_a [${wa.shape}] and lokr_w1_b [${wb.shape}] do not multiply`);
    stored.push(wa, wb);
    const [a, r] = wa.shape as [number, number];
    const cc = wb.shape[1]!;
    dim = r;
    w1 = { rows: a, cols: cc, rankBound: Math.min(a, cc, r), svd: async () => lowRankSvd(await read64(c, wa), a, r, await read64(c, wb), cc) };
  }
  // W2 [b, d·Πk]
  let w2: Side;
  let kernel: number[] | undefined;
  const w2t = g.get("lokr_w2"),
    t2 = g.get("lokr_t2");
  if (w2t) {
    checkTensor(c.label, w2t, [2, 3, 4, 5], "lokr_w2");
    stored.push(w2t);
    const [b, n] = flat2(w2t);
    if (w2t.shape.length > 2) kernel = w2t.shape.slice(2);
    w2 = { rows: b, cols: n, rankBound: Math.min(b, n), svd: async () => (Math.min(b, n) >= 32 ? gramSvd : jacobiSvd)(await read64(c, w2t), b, n) };
  } else if (t2) {
    const wa = need(c, id, g, "lokr_w2_a"),
      wb = need(c, id, g, "lokr_w2_b");
    checkTensor(c.label, t2, [3, 4, 5], "lokr_t2");
    for (const t of [wa, wb]) checkTensor(c.label, t, [2], "LoKr Tucker factors");
    const r = t2.shape[0]!;
    if (t2.shape[1] !== r || wa.shape[0] !== r || wb.shape[0] !== r)
      throw mismatch(c.label, id.name, `LoKr Tucker shapes do not fit: lokr_t2 [${t2.shape}], lokr_w2_a [${wa.shape}], lokr_w2_b [${wb.shape}]`);
    stored.push(wa, wb, t2);
    kernel = t2.shape.slice(2);
    const K = kernel.reduce((x, y) => x * y, 1);
    const b = wa.shape[1]!,
      d = wb.shape[1]!;
    dim = dim ?? r;
    w2 = {
      rows: b,
      cols: d * K,
      rankBound: Math.min(b, d * K, r),
      svd: async () => lowRankSvd(transpose(await read64(c, wa), r, b), b, r, tuckerRight(await read64(c, t2), r, r, K, await read64(c, wb), d), d * K),
    };
  } else {
    const wa = need(c, id, g, "lokr_w2_a"),
      wb = need(c, id, g, "lokr_w2_b");
    checkTensor(c.label, wa, [2], "lokr_w2_a");
    checkTensor(c.label, wb, [2, 3, 4, 5], "lokr_w2_b");
    if (wa.shape[1] !== wb.shape[0]) throw mismatch(c.label, id.name, `lokr_w2_a [${wa.shape}] and lokr_w2_b [${wb.shape}] do not multiply`);
    stored.push(wa, wb);
    const [b, r] = wa.shape as [number, number];
    const n = flat2(wb)[1];
    if (wb.shape.length > 2) kernel = wb.shape.slice(2);
    dim = dim ?? r;
    w2 = { rows: b, cols: n, rankBound: Math.min(b, n, r), svd: async () => lowRankSvd(await read64(c, wa), b, r, await read64(c, wb), n) };
  }
  const out = w1.rows * w2.rows,
    n = w1.cols * w2.cols;
  kernel ??= w2.cols % 9 === 0 ? inferKernel(id.name, w2.cols) : undefined;
  const R = w1.rankBound * w2.rankBound;
  const scale = async () => (dim === undefined ? 1 : (await scaleOf(dim)).scale);
  let spectrum: Float64Array | null = null;
  const both = async () => {
    const [a, b, s] = await Promise.all([w1.svd(), w2.svd(), scale()]);
    spectrum ??= pairs(a.S, b.S, a.k, b.k, s).S.slice(0, R);
    return { a, b, s };
  };
  const truncate = async (k: number) => {
    const { a, b, s } = await both();
    return kronFactors(a, w1, b, w2, s, k);
  };
  return {
    ...moduleShape(id, out, n, kernel, R),
    family: {
      type: "lokr",
      detail: `LoKr [${w1.rows}×${w1.cols}]⊗[${w2.rows}×${w2.cols}]${g.has("lokr_w1_a") ? " w1 low-rank" : ""}${w2t ? "" : t2 ? " w2 Tucker" : " w2 low-rank"}`,
      stored,
      dtype: storedDtype(stored),
      info: { w1: [w1.rows, w1.cols], w2: [w2.rows, w2.cols], ...(dim !== undefined ? { dim } : { full: true }) },
      spectrum: async () => spectrum ?? (await both(), spectrum!),
      truncate,
    },
    factors: () => truncate(R),
  };
}
