// Reading a module's factors as matrices: A r×in (conv kernels flattened), B out×r, every value
// checked finite (cli.md: NaN/Inf in a factor is exit 3, naming the tensor).
import { InvalidInputError } from "../../common/errors.js";
import type { FactorDType, LinalgBackend, Mat } from "../../linalg/types.js";
import type { TensorInfo } from "../safetensors/index.js";
import type { Adapter, LoraModule } from "./types.js";

function nonFinite(t: TensorInfo, label: string, v: number, i: number): InvalidInputError {
  return new InvalidInputError(`${label}: tensor ${t.name} holds ${Number.isNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"} at element ${i}; factors must be finite`);
}

/** What messages call the adapter's file. */
function labelOf(adapter: Adapter): string {
  return adapter.source === "-" ? "<stdin>" : adapter.source;
}

/** The refusal (exit 3) of a NaN/±Inf value that a native op found in one of m's factors. */
export function nonFiniteFactor(adapter: Adapter, m: LoraModule, bad: { factor: "A" | "B"; value: number; index: number }): InvalidInputError {
  return nonFinite(bad.factor === "A" ? m.A : m.B, labelOf(adapter), bad.value, bad.index);
}

function checkFinite(data: Float32Array | Float64Array, t: TensorInfo, label: string): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) throw nonFinite(t, label, v, i);
  }
}

export interface ModuleFactors<T extends Float32Array | Float64Array = Float32Array | Float64Array> {
  A: Mat<T>;
  B: Mat<T>;
}

export async function readFactors(adapter: Adapter, m: LoraModule, precision: "f32" | "f64" = "f64"): Promise<ModuleFactors> {
  const label = labelOf(adapter);
  const read = (t: TensorInfo) => (precision === "f64" ? adapter.file.readFloat64(t) : adapter.file.readFloat32(t));
  const [a, b] = await Promise.all([read(m.A), read(m.B)]);
  checkFinite(a, m.A, label);
  checkFinite(b, m.B, label);
  return { A: { rows: m.rank, cols: m.in, data: a }, B: { rows: m.out, cols: m.rank, data: b } };
}

export interface ModuleFactorsGrams extends ModuleFactors<Float64Array> {
  /** Bᵀ·B (r×r, float64, as the backend computed it: not yet symmetrized). */
  GB: Float64Array;
  /** A·Aᵀ (r×r). */
  GA: Float64Array;
}

const RAW_DTYPES: readonly string[] = ["F32", "F16", "BF16", "F64"];

/** A module's factor tensors as stored (bytes), for readFactorsWithGrams. */
export interface RawFactors {
  A: Uint8Array;
  B: Uint8Array;
}

/** Whether readFactorsWithGrams can take this module's raw bytes (F32/F16/BF16/F64 factors). */
export function rawReadable(m: LoraModule): boolean {
  return RAW_DTYPES.includes(m.A.dtype) && RAW_DTYPES.includes(m.B.dtype);
}

/** The bytes of both factors (I/O only: a read-ahead can take these without touching the backend). */
export async function readRawFactors(adapter: Adapter, m: LoraModule): Promise<RawFactors> {
  const [A, B] = await Promise.all([adapter.file.readRaw(m.A), adapter.file.readRaw(m.B)]);
  return { A, B };
}

/**
 * readFactors in float64 plus the two Grams of the factors, with the same NaN/Inf refusal (A is
 * checked before B). Through the backend's optional `factorStats` when it has one and the tensors
 * are F32/F16/BF16/F64 (decode, finiteness and Gram in one native pass per factor, no decoding in
 * JS); otherwise decoded here and the Grams by `gemm`.
 */
export async function readFactorsWithGrams(adapter: Adapter, m: LoraModule, be: LinalgBackend, raw?: Promise<RawFactors>): Promise<ModuleFactorsGrams> {
  const fs = be.factorStats;
  if (!fs || !rawReadable(m)) {
    const f = await readFactors(adapter, m, "f64");
    const A = f.A as Mat<Float64Array>, B = f.B as Mat<Float64Array>;
    const gb = await be.gemm(B, B, { transA: true });
    const ga = await be.gemm(A, A, { transB: true });
    return { A, B, GB: gb.data, GA: ga.data };
  }
  const label = labelOf(adapter);
  const { A: rawA, B: rawB } = await (raw ?? readRawFactors(adapter, m));
  // One worker call at a time: the cpu backend's Gram uses every BLAS thread already.
  const sa = await fs.call(be, rawA, m.A.dtype as FactorDType, m.rank, m.in, "gram-rows");
  if (sa.firstNonFinite >= 0) throw nonFinite(m.A, label, sa.data[sa.firstNonFinite]!, sa.firstNonFinite);
  const sb = await fs.call(be, rawB, m.B.dtype as FactorDType, m.out, m.rank, "gram-cols");
  if (sb.firstNonFinite >= 0) throw nonFinite(m.B, label, sb.data[sb.firstNonFinite]!, sb.firstNonFinite);
  return { A: { rows: m.rank, cols: m.in, data: sa.data }, B: { rows: m.out, cols: m.rank, data: sb.data }, GA: sa.gram, GB: sb.gram };
}
