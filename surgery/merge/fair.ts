// fair (LoRA-FAIR, Bian et al. ICCV 2025; docs/algorithms.md §5.8): the FedIT averages
// Ā = Σ pₖAₖ and B̄ = Σ pₖ·sₖ·Bₖ (pₖ = wₖ/Σw over the inputs holding the module), plus a
// residual correction ΔB on B so that (B̄ + ΔB)·Ā approaches the target T = Σ wₖ·sₖ·Bₖ·Aₖ.
// Everything is evaluated from factors (never the dense T): with B_cat = [wₖsₖBₖ],
// A_cat = [Aₖ], G = ĀĀᵀ and Y = B_cat·(A_cat·Āᵀ) = T·Āᵀ,
//   ridge (default; closed form, [derived], not the paper's objective):
//       ΔB = (Y − B̄G)(G + λI)⁺            minimises ‖T − (B̄+ΔB)Ā‖²_F + λ‖ΔB‖²_F
//   cosine-sgd (the paper's objective): minimise 1 − cos(T, (B̄+ΔB)Ā) + λ‖ΔB‖_F by Adam from
//       ΔB = 0, with ⟨T,P⟩ = ⟨C, Y⟩, ‖P‖² = ⟨CG, C⟩ (C = B̄ + ΔB); the paper gives no step count
//       or learning rate, so they are flags (--fair-steps, --fair-lr × RMS(B̄)); the best iterate
//       is kept. Cosine ignores ‖P‖, so the result's norm may differ from ‖T‖ (as in the paper).
// Needs every input at the same rank (it averages A). Output rank r, A = Ā, scale 1.
import { lowRankNorm } from "../../linalg/lowrank.js";
import type { LinalgBackend, Mat } from "../../linalg/types.js";
import type { MergedFactors, MergeTerm } from "./types.js";

export interface FairOptions {
  solver: "ridge" | "cosine-sgd";
  lambda: number;
  steps: number;
  /** Adam step size relative to the RMS of B̄'s entries. */
  lr: number;
}

export interface FairDetails {
  cos: number;
  residual: number;
  delta_b_norm: number;
  fedit_residual: number;
  [extra: string]: unknown;
}

function frob(x: Float64Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Pseudo-inverse of the symmetric PSD G + λI through its eigen-decomposition. */
async function regularisedInverse(be: LinalgBackend, G: Mat<Float64Array>, lambda: number): Promise<Mat<Float64Array>> {
  const r = G.rows;
  const e = await be.eigSym(G);
  const vals = e.values as Float64Array,
    V = e.vectors.data as Float64Array;
  const maxv = Math.max(0, ...Array.from(vals)) + lambda;
  const cut = maxv * r * 2.220446049250313e-16;
  const inv = new Float64Array(r * r);
  for (let c = 0; c < r; c++) {
    const d = vals[c]! + lambda;
    if (!(d > cut)) continue;
    for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) inv[i * r + j] += (V[i * r + c]! * V[j * r + c]!) / d;
  }
  return { rows: r, cols: r, data: inv };
}

export async function mergeFair(be: LinalgBackend, terms: MergeTerm[], o: FairOptions): Promise<MergedFactors & { details: FairDetails }> {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols,
    r = terms[0]!.A.rows;
  if (terms.some((t) => t.A.rows !== r)) throw new Error("fair: inputs differ in rank");
  const wsum = terms.reduce((s, t) => s + t.weight, 0);
  if (wsum === 0) throw new Error("fair: the weights sum to 0");
  const Abar = new Float64Array(r * inn),
    Bbar = new Float64Array(out * r);
  for (const t of terms) {
    const p = t.weight / wsum;
    for (let i = 0; i < Abar.length; i++) Abar[i] += p * t.A.data[i]!;
    for (let i = 0; i < Bbar.length; i++) Bbar[i] += p * t.scale * t.B.data[i]!;
  }
  const Am: Mat<Float64Array> = { rows: r, cols: inn, data: Abar };
  const G = (await be.gemm(Am, Am, { transB: true })) as Mat<Float64Array>; // r×r
  // Y = Σ wₖsₖ Bₖ (Aₖ Āᵀ)
  const Y = new Float64Array(out * r);
  for (const t of terms) {
    const h = await be.gemm(t.A, Am, { transB: true }); // rₖ×r
    const y = await be.gemm(t.B, h, { alpha: t.weight * t.scale });
    for (let i = 0; i < Y.length; i++) Y[i] += y.data[i]!;
  }
  const target = terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale }));
  const tNorm = await lowRankNorm(be, target);
  const BG = async (C: Float64Array) => (await be.gemm({ rows: out, cols: r, data: C }, G)).data as Float64Array;
  // ‖T − C·Ā‖² = ‖T‖² − 2⟨C, Y⟩ + ⟨CG, C⟩
  const residualOf = async (C: Float64Array) => Math.sqrt(Math.max(0, tNorm ** 2 - 2 * dot(C, Y) + dot(await BG(C), C)));
  const cosOf = async (C: Float64Array) => {
    const pn = Math.sqrt(Math.max(0, dot(await BG(C), C)));
    return tNorm > 0 && pn > 0 ? dot(C, Y) / (tNorm * pn) : 0;
  };
  let dB: Float64Array = new Float64Array(out * r);
  if (o.solver === "ridge") {
    const inv = await regularisedInverse(be, G, o.lambda);
    const rhs = Float64Array.from(Y);
    const bg = await BG(Bbar);
    for (let i = 0; i < rhs.length; i++) rhs[i] -= bg[i]!;
    dB = (await be.gemm({ rows: out, cols: r, data: rhs }, inv)).data as Float64Array;
  } else {
    dB = await cosineSgd(Bbar, Y, BG, tNorm, o);
  }
  const C = new Float64Array(out * r);
  for (let i = 0; i < C.length; i++) C[i] = Bbar[i]! + dB[i]!;
  return {
    B: { rows: out, cols: r, data: C },
    A: { rows: r, cols: inn, data: Abar },
    details: {
      cos: await cosOf(C),
      residual: await residualOf(C),
      delta_b_norm: frob(dB),
      fedit_residual: await residualOf(Bbar),
      solver: o.solver,
      lambda: o.lambda,
    },
  };
}

/** Adam on 1 − cos(T, CĀ) + λ‖ΔB‖_F from ΔB = 0; returns the best ΔB seen. */
async function cosineSgd(
  Bbar: Float64Array,
  Y: Float64Array,
  BG: (C: Float64Array) => Promise<Float64Array>,
  tNorm: number,
  o: FairOptions,
): Promise<Float64Array> {
  const n = Bbar.length;
  const dB = new Float64Array(n),
    m = new Float64Array(n),
    v = new Float64Array(n),
    C = new Float64Array(n);
  const rms = frob(Bbar) / Math.sqrt(n) || 1e-3;
  const lr = o.lr * rms,
    b1 = 0.9,
    b2 = 0.999,
    eps = 1e-12;
  let best = Float64Array.from(dB),
    bestLoss = Infinity;
  if (!(tNorm > 0)) return best;
  for (let step = 0; step <= o.steps; step++) {
    for (let i = 0; i < n; i++) C[i] = Bbar[i]! + dB[i]!;
    const cg = await BG(C);
    const ty = dot(C, Y);
    const pn = Math.sqrt(Math.max(dot(cg, C), 1e-300));
    const dn = frob(dB);
    const loss = 1 - ty / (tNorm * pn) + o.lambda * dn;
    if (loss < bestLoss) {
      bestLoss = loss;
      best = Float64Array.from(dB);
    }
    if (step === o.steps) break;
    const t = step + 1;
    for (let i = 0; i < n; i++) {
      // ∂(1 − cos)/∂C = −Y/(‖T‖‖P‖) + ⟨C,Y⟩·CG/(‖T‖‖P‖³); ∂λ‖ΔB‖/∂ΔB = λ·ΔB/‖ΔB‖ (0 at 0)
      const g = -Y[i]! / (tNorm * pn) + (ty * cg[i]!) / (tNorm * pn ** 3) + (dn > 0 ? (o.lambda * dB[i]!) / dn : 0);
      m[i] = b1 * m[i]! + (1 - b1) * g;
      v[i] = b2 * v[i]! + (1 - b2) * g * g;
      const mh = m[i]! / (1 - b1 ** t),
        vh = v[i]! / (1 - b2 ** t);
      dB[i] -= (lr * mh) / (Math.sqrt(vh) + eps);
    }
  }
  return best;
}
