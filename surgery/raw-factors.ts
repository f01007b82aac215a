// Modules' factors as stored, read into pooled buffers for one native call (truncateFactors,
// factorSpectrum, factorSpectra); the buffers go back to the pool once the call settles. A derived
// file's computed factors are used as produced (no pooled copy).
import type { Adapter, LoraModule } from "../formats/adapter/index.js";
import type { FactorDType, RawFactor } from "../linalg/types.js";
import type { BufferPool } from "../common/buffer-pool.js";
import { InvalidInputError } from "../common/errors.js";

/** Largest ‖A‖_F, ‖B‖_F and ‖A‖_F·‖B‖_F whose squares (Grams, ‖ΔW‖²) stay well inside float64. */
const F64_NORM_LIMIT = 1e150;

/** ‖x‖_F of raw little-endian F64 values (NaN/±Inf skipped: the native call names them), scaled so that it cannot overflow. */
function f64Norm(raw: Uint8Array): number {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = raw.byteLength / 8;
  let max = 0;
  for (let i = 0; i < n; i++) {
    const x = Math.abs(v.getFloat64(8 * i, true));
    if (x > max && x !== Number.POSITIVE_INFINITY) max = x;
  }
  if (max === 0) return 0;
  let s = 0;
  for (let i = 0; i < n; i++) {
    const x = v.getFloat64(8 * i, true) / max;
    if (x - x === 0) s += x * x;
  }
  return max * Math.sqrt(s);
}

/**
 * F64 factors can hold values whose products overflow float64 (only F64: F32/F16/BF16 values are
 * below 3.4e38); such a module would come out as ±Inf or NaN, so it is refused (exit 3) by name.
 */
export function refuseOverflowingF64(m: LoraModule, B: RawFactor, A: RawFactor): void {
  if (B.dtype !== "F64" && A.dtype !== "F64") return;
  const nb = B.dtype === "F64" ? f64Norm(B.raw) : 0,
    na = A.dtype === "F64" ? f64Norm(A.raw) : 0;
  if (nb > F64_NORM_LIMIT || na > F64_NORM_LIMIT || (nb > 1 && na > 1 && nb * na > F64_NORM_LIMIT))
    throw new InvalidInputError(
      `module ${m.name}: factor values too large for float64 arithmetic (‖B‖ ≈ ${nb.toPrecision(3)}, ‖A‖ ≈ ${na.toPrecision(3)}; their products overflow)`,
    );
}

export function withRawFactors<T>(a: Adapter, m: LoraModule, pool: BufferPool, fn: (B: RawFactor, A: RawFactor) => Promise<T>): Promise<T> {
  return withRawFactorsOf(a, [m], pool, ([pair]) => fn(pair![0], pair![1]));
}

/** Several modules of one adapter at once: fn gets each module's [B, A], in order; the buffers go back once it settles. */
export async function withRawFactorsOf<T>(a: Adapter, ms: LoraModule[], pool: BufferPool, fn: (pairs: [RawFactor, RawFactor][]) => Promise<T>): Promise<T> {
  const taken: Uint8Array[] = [];
  const take = (n: number) => {
    const b = pool.take(n);
    taken.push(b);
    return b;
  };
  try {
    // Every read settles before any buffer can go back to the pool (a failed read must not leave
    // another one still writing into a buffer that the next adapter takes).
    const reads = await Promise.allSettled(ms.flatMap((m) => [a.file.readRawShared(m.B, take), a.file.readRawShared(m.A, take)]));
    const failed = reads.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const raw = reads.map((r) => (r as PromiseFulfilledResult<Uint8Array>).value);
    const pairs = ms.map((m, i): [RawFactor, RawFactor] => [
      { raw: raw[2 * i]!, dtype: m.B.dtype as FactorDType, rows: m.out, cols: m.rank },
      { raw: raw[2 * i + 1]!, dtype: m.A.dtype as FactorDType, rows: m.rank, cols: m.in },
    ]);
    ms.forEach((m, i) => refuseOverflowingF64(m, pairs[i]![0], pairs[i]![1]));
    return await fn(pairs);
  } finally {
    for (const b of taken) pool.give(b);
  }
}
