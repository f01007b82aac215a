// Reading a module's factors as matrices: A r×in (conv kernels flattened), B out×r, every value
// checked finite (docs/cli.md "Exit codes": NaN/Inf in a factor is exit 3, naming the tensor).
import { decodeToFloat64, dtypeBits, firstNonFinite, isFloatDType } from "../../common/dtype.js";
import { InvalidInputError } from "../../common/errors.js";
import { growingBuffer } from "../../common/buffer-pool.js";
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

/** Largest ‖A‖_F, ‖B‖_F and ‖B‖_F·‖A‖_F whose squares (Grams, ‖ΔW‖²) stay well inside float64. */
const F64_NORM_LIMIT = 1e150;

/** ‖x‖_F of n values (NaN/±Inf skipped: refused elsewhere, by name), scaled by the largest so that it cannot overflow. */
export function scaledNorm(n: number, at: (i: number) => number): number {
  let max = 0;
  for (let i = 0; i < n; i++) {
    const x = Math.abs(at(i));
    if (x > max && x !== Number.POSITIVE_INFINITY) max = x;
  }
  if (max === 0) return 0;
  let s = 0;
  for (let i = 0; i < n; i++) {
    const x = at(i) / max;
    if (x - x === 0) s += x * x;
  }
  return max * Math.sqrt(s);
}

/**
 * F64 factors can hold finite values whose products overflow float64 (F32/F16/BF16 values stay
 * below 3.4e38, so only F64 gets there): such a module would come out as ±Inf or NaN, so it is
 * refused (exit 3) by name. normB, normA: the factors' ‖·‖_F (scaledNorm), 0 for a non-F64 factor.
 */
export function refuseOverflowingF64(m: LoraModule, normB: number, normA: number): void {
  if (normB > F64_NORM_LIMIT || normA > F64_NORM_LIMIT || (normB > 1 && normA > 1 && normB * normA > F64_NORM_LIMIT))
    throw new InvalidInputError(
      `module ${m.name}: factor values too large for float64 arithmetic (‖B‖ ≈ ${normB.toPrecision(3)}, ‖A‖ ≈ ${normA.toPrecision(3)}; their products overflow)`,
    );
}

function checkFinite(data: Float32Array | Float64Array, t: TensorInfo, label: string): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) throw nonFinite(t, label, v, i);
  }
}

/** A row-major matrix of a module's factor (the shape linalg/ works on, declared here so formats/ needs nothing of linalg/). */
export interface FactorMatrix<T extends Float32Array | Float64Array = Float32Array | Float64Array> {
  rows: number;
  cols: number;
  data: T;
}

export interface ModuleFactors<T extends Float32Array | Float64Array = Float32Array | Float64Array> {
  A: FactorMatrix<T>;
  B: FactorMatrix<T>;
}

export async function readFactors(adapter: Adapter, m: LoraModule, precision: "f32" | "f64" = "f64"): Promise<ModuleFactors> {
  const label = labelOf(adapter);
  const read = (t: TensorInfo) => (precision === "f64" ? adapter.file.readFloat64(t) : adapter.file.readFloat32(t));
  const [a, b] = await Promise.all([read(m.A), read(m.B)]);
  checkFinite(a, m.A, label);
  checkFinite(b, m.B, label);
  if (m.A.dtype === "F64" || m.B.dtype === "F64")
    refuseOverflowingF64(
      m,
      scaledNorm(b.length, (i) => b[i]!),
      scaledNorm(a.length, (i) => a[i]!),
    );
  return { A: { rows: m.rank, cols: m.in, data: a }, B: { rows: m.out, cols: m.rank, data: b } };
}

/**
 * Refuse (exit 3, naming the tensor and element) a NaN/±Inf in m's factors by scanning their stored
 * bytes, nothing decoded: the check for commands that copy factors as they are (convert). The
 * bytes go through one scratch buffer, reused across calls.
 */
export async function checkFactorsFinite(adapter: Adapter, m: LoraModule): Promise<void> {
  // computed factors (LyCORIS, families) are built from checked pieces in buffers of their own
  if (m.family) {
    await readFactors(adapter, m, "f32");
    return;
  }
  for (const t of [m.A, m.B]) {
    if (!isFloatDType(t.dtype)) {
      await adapter.file.readFloat32(t); // integer factors are finite; an undecodable dtype is refused as readFactors does
      continue;
    }
    const bytes = await adapter.file.readRawShared(t, takeScratch);
    const i = firstNonFinite(t.dtype, bytes);
    if (i >= 0) {
      const size = dtypeBits(t.dtype) / 8;
      throw nonFinite(t, labelOf(adapter), decodeToFloat64(t.dtype, bytes.subarray(i * size, (i + 1) * size))[0]!, i);
    }
  }
}

/**
 * Whether m's factors can be checked finite while they are copied (finiteWhileCopied): stored
 * factors of a float dtype. A derived module's factors are computed, and an integer or undecodable
 * dtype goes through checkFactorsFinite, which refuses what cannot be decoded.
 */
export function checkableWhileCopied(m: LoraModule): boolean {
  return !m.family && isFloatDType(m.A.dtype) && isFloatDType(m.B.dtype);
}

/**
 * The check a copied factor's bytes go through on their way to the output (CopySource.check): a
 * NaN/±Inf refused (exit 3) with the tensor and element, as checkFactorsFinite would. For an atomic
 * output only: the refusal comes after earlier bytes were written, which the writer then removes.
 */
export function finiteWhileCopied(adapter: Adapter, t: TensorInfo): (chunk: Uint8Array, at: number) => void {
  const size = dtypeBits(t.dtype) / 8;
  return (chunk, at) => {
    const i = firstNonFinite(t.dtype, chunk);
    if (i >= 0) throw nonFinite(t, labelOf(adapter), decodeToFloat64(t.dtype, chunk.subarray(i * size, (i + 1) * size))[0]!, at / size + i);
  };
}

const takeScratch = growingBuffer();

const RAW_DTYPES: readonly string[] = ["F32", "F16", "BF16", "F64"];

/** Whether a backend's raw-byte operations (factorStats, truncateFactors, factorSpectrum) can take this module's factors (F32/F16/BF16/F64). */
export function rawReadable(m: LoraModule): boolean {
  return RAW_DTYPES.includes(m.A.dtype) && RAW_DTYPES.includes(m.B.dtype);
}
