// A module's factors in float64 together with their Grams BᵀB and AAᵀ (what the truncation's
// general route and its error report start from), through the backend's factorStats where the
// factors are F32/F16/BF16/F64 (decode, finiteness and Gram in one pass per factor).
import { nonFiniteFactor, rawReadable, readFactors, type Adapter, type LoraModule, type ModuleFactors } from "../formats/adapter/index.js";
import type { FactorDType, LinalgBackend, Mat } from "../linalg/types.js";
import { refuseOverflowingRaw } from "./raw-factors.js";

export interface ModuleFactorsGrams extends ModuleFactors<Float64Array> {
  /** Bᵀ·B (r×r, float64, as the backend computed it: not yet symmetrized). */
  GB: Float64Array;
  /** A·Aᵀ (r×r). */
  GA: Float64Array;
}

/** readFactors in float64 plus the two Grams, with the same NaN/Inf refusal (A is checked before B). */
export async function readFactorsWithGrams(adapter: Adapter, m: LoraModule, be: LinalgBackend): Promise<ModuleFactorsGrams> {
  if (!rawReadable(m)) {
    const f = await readFactors(adapter, m, "f64");
    const A = f.A as Mat<Float64Array>,
      B = f.B as Mat<Float64Array>;
    const gb = await be.gemm(B, B, { transA: true });
    const ga = await be.gemm(A, A, { transB: true });
    return { A, B, GB: gb.data, GA: ga.data };
  }
  const [rawA, rawB] = await Promise.all([adapter.file.readRaw(m.A), adapter.file.readRaw(m.B)]);
  refuseOverflowingRaw(
    m,
    { raw: rawB, dtype: m.B.dtype as FactorDType, rows: m.out, cols: m.rank },
    { raw: rawA, dtype: m.A.dtype as FactorDType, rows: m.rank, cols: m.in },
  );
  // One call at a time: the cpu backend's Gram uses every BLAS thread already.
  const sa = await be.factorStats(rawA, m.A.dtype as FactorDType, m.rank, m.in, "gram-rows");
  if (sa.firstNonFinite >= 0) throw nonFiniteFactor(adapter, m, { factor: "A", value: sa.data[sa.firstNonFinite]!, index: sa.firstNonFinite });
  const sb = await be.factorStats(rawB, m.B.dtype as FactorDType, m.out, m.rank, "gram-cols");
  if (sb.firstNonFinite >= 0) throw nonFiniteFactor(adapter, m, { factor: "B", value: sb.data[sb.firstNonFinite]!, index: sb.firstNonFinite });
  return { A: { rows: m.rank, cols: m.in, data: sa.data }, B: { rows: m.out, cols: m.rank, data: sb.data }, GA: sa.gram, GB: sb.gram };
}
