// Reading a module's factors as matrices: A r×in (conv kernels flattened), B out×r, every value
// checked finite (docs/cli.md "Exit codes": NaN/Inf in a factor is exit 3, naming the tensor).
import { decodeToFloat64, dtypeBits, firstNonFinite, isFloatDType } from "../../common/dtype.js";
import { InvalidInputError } from "../../common/errors.js";
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

let scratch: Buffer | null = null;
function takeScratch(n: number): Uint8Array {
  if (!scratch || scratch.length < n) scratch = Buffer.allocUnsafeSlow(Math.max(n, 2 * (scratch?.length ?? 0)));
  return scratch.subarray(0, n);
}

const RAW_DTYPES: readonly string[] = ["F32", "F16", "BF16", "F64"];

/** Whether a backend's raw-byte operations (factorStats, truncateFactors, factorSpectrum) can take this module's factors (F32/F16/BF16/F64). */
export function rawReadable(m: LoraModule): boolean {
  return RAW_DTYPES.includes(m.A.dtype) && RAW_DTYPES.includes(m.B.dtype);
}
