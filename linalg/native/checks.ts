// What adapt.ts checks around a native call (C++ trusts its inputs): shapes, byte lengths, dtype
// codes and finiteness before, non-finite outputs after, and native failures as LoraErrors.
import { InvalidInputError, LoraError, RuntimeFailure } from "../../common/errors.js";
import type { BackendName, FactorDType, FloatArray, Mat, ModelDType, RawFactor } from "../types.js";
import { FACTOR_DTYPES, type RawPairArgs } from "./binding.js";

export const MAX_ELEMENTS = 2 ** 31 - 1; // LAPACK's LP64 int

export const MODEL_CODES: Record<ModelDType, number> = { F32: 0, F16: 1, BF16: 2 };

function isFloatArray(x: unknown): x is FloatArray {
  return x instanceof Float32Array || x instanceof Float64Array;
}

export function checkShape(op: string, what: string, m: Mat): void {
  if (m === null || typeof m !== "object") throw new InvalidInputError(`${op}: ${what} is not a matrix`);
  const { rows, cols, data } = m;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new InvalidInputError(`${op}: ${what} has an invalid shape ${String(rows)}×${String(cols)}`);
  }
  if (!isFloatArray(data)) throw new InvalidInputError(`${op}: ${what} must hold a Float32Array or Float64Array`);
  if (data.length !== rows * cols) {
    throw new InvalidInputError(`${op}: ${what} is ${rows}×${cols} but holds ${data.length} values (expected ${rows * cols})`);
  }
  if (rows * cols > MAX_ELEMENTS) {
    throw new InvalidInputError(`${op}: ${what} (${rows}×${cols}) exceeds ${MAX_ELEMENTS} elements, the native backends' limit`);
  }
}

export function checkMat(op: string, what: string, m: Mat): void {
  checkShape(op, what, m);
  checkFinite(op, what, m.data, m.cols);
}

export function checkFinite(op: string, what: string, data: ArrayLike<number>, cols: number): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) {
      const where = cols > 0 ? ` (row ${Math.floor(i / cols)}, column ${i % cols})` : ` (index ${i})`;
      throw new InvalidInputError(`${op}: ${what} contains ${Number.isNaN(v) ? "NaN" : "Inf"}${where}`);
    }
  }
}

export function checkOutput(backend: BackendName, op: string, arrays: ArrayLike<number>[]): void {
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) {
      const v = a[i]!;
      if (v - v !== 0) {
        throw new RuntimeFailure(
          `${op} on the ${backend} backend produced a non-finite value (overflow or a numerical failure); ` + `try --backend js, or float64 input`,
        );
      }
    }
  }
}

/**
 * checkOutput for the raw-factor operations, which refuse NaN/±Inf in their inputs themselves
 * (kind "non-finite"): a non-finite result from finite factors is float64 overflow, values whose
 * squares pass ~1.8e308 (only F64 factors can hold them). That is the input's fault (exit 3).
 */
export function checkFusedOutput(op: string, arrays: ArrayLike<number>[]): void {
  for (const a of arrays)
    for (let i = 0; i < a.length; i++)
      if (!Number.isFinite(a[i]!))
        throw new InvalidInputError(`${op}: the factors' products overflow float64 (factor values too large, e.g. beyond ±1e154); the adapter cannot be used`);
}

export function fail(backend: BackendName, op: string, e: unknown): never {
  if (e instanceof LoraError) throw e;
  const err = e as { message?: string; code?: string };
  const msg = err?.message ?? String(e);
  throw new RuntimeFailure(`${op} failed on the ${backend} backend: ${msg}`, { cause: e });
}

export function dtypeCode(op: string, d: FactorDType): { code: number; size: number } {
  const c = FACTOR_DTYPES[d];
  if (!c) throw new InvalidInputError(`${op}: dtype ${String(d)} is not one of F32, F16, BF16, F64`);
  return c;
}

/** Shapes, byte lengths and scale of a module's raw factors, checked before a native call: the call's first arguments, and r. */
export function checkRawPair(op: string, x: { B: RawFactor; A: RawFactor; scale: number }): { args: RawPairArgs; r: number } {
  const b = dtypeCode(op, x.B.dtype),
    a = dtypeCode(op, x.A.dtype);
  const out = x.B.rows,
    r = x.B.cols,
    inn = x.A.cols;
  if (x.A.rows !== r) throw new InvalidInputError(`${op}: B is ${out}×${r} but A is ${x.A.rows}×${inn}`);
  if (!(r >= 1 && out >= 1 && inn >= 1)) throw new InvalidInputError(`${op}: empty factors (${out}×${r}, ${x.A.rows}×${inn})`);
  if (x.B.raw.byteLength !== out * r * b.size || x.A.raw.byteLength !== r * inn * a.size)
    throw new InvalidInputError(`${op}: raw byte lengths do not match the shapes`);
  if (Math.max(out, inn) * r > MAX_ELEMENTS) throw new InvalidInputError(`${op}: factors exceed ${MAX_ELEMENTS} elements, the native backends' limit`);
  if (!Number.isFinite(x.scale)) throw new InvalidInputError(`${op}: scales must be finite (scaleOut ≠ 0)`);
  return { args: [x.B.raw, b.code, x.A.raw, a.code, out, r, inn], r };
}
