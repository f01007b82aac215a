// The fused operations of LinalgBackend (factorStats, truncateFactors, factorSpectrum, withLanes)
// in TypeScript, over any backend's dense operations (gemm, eigSym, svd, qr). They are the js
// backend's implementation of those operations, and the same maths as the cpu addon's single
// native calls (native/src/cpu/truncate.cc): raw factor bytes decoded, the first non-finite value
// reported (A before B), then the Gram route of truncate.ts (truncateFactors) or Householder QR of
// the factors (factorSpectrum, lowrank.ts: the exact singular values, no Gram noise floor).
import { dtypeBits, decodeToFloat64, encodeFloats } from "../common/dtype.js";
import { InvalidInputError } from "../common/errors.js";
import { lowRankSingularValues } from "./lowrank.js";
import { mergeWeightOn, sketchOn, weightDeltaTs } from "./streamed.js";
import { gramRoute, gramsFrom, roundForDtype, roundingResidual2, toF64 } from "./truncate.js";
import type {
  FactorDType,
  FactorSpectrumInput,
  FactorSpectrumResult,
  FactorStats,
  GramSide,
  LinalgBackend,
  Mat,
  ModuleGrams,
  RawFactor,
  TruncateFactorsInput,
  TruncateFactorsResult,
} from "./types.js";

type FusedOp = "factorStats" | "truncateFactors" | "factorSpectrum" | "factorSpectra" | "withLanes" | "mergeWeight" | "weightDelta" | "sketch";

/** A backend's dense operations, with whichever fused ones it implements natively. */
export type DenseBackend = Omit<LinalgBackend, FusedOp> & Partial<Pick<LinalgBackend, FusedOp>>;

/** The truncateFactors functions installed here (so that a test of native routes can pass these by). */
const TS_ROUTES = new WeakSet<object>();

/** Whether be's truncateFactors and factorSpectrum are this file's TypeScript route (not a native call). */
export function runsTsRoute(be: LinalgBackend): boolean {
  return TS_ROUTES.has(be.truncateFactors);
}

/** The backend with every fused operation it lacks implemented here over its own dense operations. */
export function withFusedOps(dense: DenseBackend): LinalgBackend {
  const be = dense as LinalgBackend;
  be.factorStats ??= (raw, dtype, rows, cols, side) => factorStatsOn(be, raw, dtype, rows, cols, side);
  if (!be.truncateFactors) {
    be.truncateFactors = (input) => truncateFactorsOn(be, input);
    TS_ROUTES.add(be.truncateFactors);
  }
  be.factorSpectrum ??= (input) => factorSpectrumOn(be, input);
  be.factorSpectra ??= async (inputs) => {
    const out: FactorSpectrumResult[] = [];
    for (const x of inputs) out.push(await be.factorSpectrum(x));
    return out;
  };
  be.mergeWeight ??= (input) => mergeWeightOn(be, input);
  be.weightDelta ??= async (tuned, base, dtype, delta, norm2In) => weightDeltaTs(tuned, base, dtype, delta, norm2In);
  be.sketch ??= (input) => sketchOn(be, input);
  // One call at a time: the dense operations already use the whole device.
  be.withLanes ??= (fn) => fn(1);
  return be;
}

function decoded(f: RawFactor): Float64Array {
  const data = decodeToFloat64(f.dtype, f.raw);
  if (data.length !== f.rows * f.cols) throw new Error(`${f.rows}×${f.cols} ${f.dtype} factor holds ${data.length} values`);
  return data;
}

function firstNonFinite(data: Float64Array): number {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) return i;
  }
  return -1;
}

/** X·Xᵀ ("gram-rows") or Xᵀ·X ("gram-cols") of a rows×cols X, in float64. */
async function gramOf(be: LinalgBackend, x: Mat<Float64Array>, side: GramSide): Promise<Float64Array> {
  return (await be.gemm(x, x, side === "gram-rows" ? { transB: true } : { transA: true })).data;
}

export async function factorStatsOn(be: LinalgBackend, raw: Uint8Array, dtype: FactorDType, rows: number, cols: number, side: GramSide): Promise<FactorStats> {
  const data = decoded({ raw, dtype, rows, cols });
  const g = side === "gram-rows" ? rows : cols;
  const bad = firstNonFinite(data);
  if (bad >= 0) return { data, gram: new Float64Array(g * g), firstNonFinite: bad };
  return { data, gram: await gramOf(be, { rows, cols, data }, side), firstNonFinite: -1 };
}

type NonFinite = { kind: "non-finite"; factor: "A" | "B"; index: number; value: number };

/** Shapes and byte lengths of a module's raw factors (InvalidInputError, as the native adapter's checks). */
function checkPair(op: string, B: RawFactor, A: RawFactor): void {
  if (A.rows !== B.cols) throw new InvalidInputError(`${op}: B is ${B.rows}×${B.cols} but A is ${A.rows}×${A.cols}`);
  if (!(B.cols >= 1 && B.rows >= 1 && A.cols >= 1)) throw new InvalidInputError(`${op}: empty factors (${B.rows}×${B.cols}, ${A.rows}×${A.cols})`);
  for (const f of [B, A])
    if (f.raw.byteLength * 8 !== f.rows * f.cols * dtypeBits(f.dtype)) throw new InvalidInputError(`${op}: raw byte lengths do not match the shapes`);
}

/** Both factors decoded, A checked before B; the first NaN/±Inf found is returned instead. */
function decodePair(B: RawFactor, A: RawFactor): { B: Mat<Float64Array>; A: Mat<Float64Array> } | NonFinite {
  const a = decoded(A);
  const ia = firstNonFinite(a);
  if (ia >= 0) return { kind: "non-finite", factor: "A", index: ia, value: a[ia]! };
  const b = decoded(B);
  const ib = firstNonFinite(b);
  if (ib >= 0) return { kind: "non-finite", factor: "B", index: ib, value: b[ib]! };
  return { B: { rows: B.rows, cols: B.cols, data: b }, A: { rows: A.rows, cols: A.cols, data: a } };
}

export async function truncateFactorsOn(be: LinalgBackend, x: TruncateFactorsInput): Promise<TruncateFactorsResult> {
  checkPair("truncateFactors", x.B, x.A);
  const r = x.A.rows,
    t = x.rank;
  if (!(Number.isInteger(t) && t >= 1 && t <= r)) throw new InvalidInputError(`truncateFactors: rank ${String(t)} must be an integer in 1..${r}`);
  if (!Number.isFinite(x.scale) || !Number.isFinite(x.scaleOut) || x.scaleOut === 0)
    throw new InvalidInputError("truncateFactors: scales must be finite (scaleOut ≠ 0)");
  if (x.grams && !(x.grams instanceof Float64Array && x.grams.length === 2 * r * r))
    throw new InvalidInputError(`truncateFactors: grams must be a Float64Array of 2·${r}² values`);
  const f = decodePair(x.B, x.A);
  if ("kind" in f) return f;
  const GB = x.grams ? x.grams.slice(0, r * r) : await gramOf(be, f.B, "gram-cols");
  const GA = x.grams ? x.grams.slice(r * r, 2 * r * r) : await gramOf(be, f.A, "gram-rows");
  const g = gramsFrom(GB, GA, r, x.scale);
  const res = await gramRoute(be, f.B, f.A, x.scale, t, x.scaleOut, x.split, g);
  if (!res) return { kind: "fallback" };
  const Bo = roundForDtype(x.outDtype, res.B.data),
    Ao = roundForDtype(x.outDtype, res.A.data);
  const resid2 = await roundingResidual2(
    be,
    res.B,
    res.A,
    { rows: res.B.rows, cols: t, data: toF64(Bo) },
    { rows: t, cols: res.A.cols, data: toF64(Ao) },
    x.scaleOut,
  );
  return { kind: "done", B: encodeFloats(x.outDtype, Bo), A: encodeFloats(x.outDtype, Ao), S: res.S, norm2: g.norm2, err2: res.err2, resid2, productBits: 64 };
}

export async function factorSpectrumOn(be: LinalgBackend, x: FactorSpectrumInput): Promise<FactorSpectrumResult> {
  checkPair("factorSpectrum", x.B, x.A);
  const f = decodePair(x.B, x.A);
  if ("kind" in f) return f;
  const r = x.A.rows;
  const k = await lowRankSingularValues(be, { B: f.B, A: f.A, scale: x.scale });
  const S = new Float64Array(r);
  S.set(k.subarray(0, Math.min(r, k.length)));
  let norm2 = 0;
  for (const v of S) norm2 += v * v;
  if (!x.keepGrams) return { kind: "done", S, norm2 };
  const grams: ModuleGrams = new Float64Array(2 * r * r);
  grams.set(await gramOf(be, f.B, "gram-cols"), 0);
  grams.set(await gramOf(be, f.A, "gram-rows"), r * r);
  return { kind: "done", S, norm2, grams };
}
