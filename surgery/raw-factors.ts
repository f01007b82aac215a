// Modules' factors as stored, read into pooled buffers for one native call (truncateFactors,
// factorSpectrum, factorSpectra); the buffers go back to the pool once the call settles. A derived
// file's computed factors are used as produced (no pooled copy).
import { refuseOverflowingF64, scaledNorm, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import type { FactorDType, RawFactor } from "../linalg/types.js";
import type { BufferPool } from "../common/buffer-pool.js";

/** F64 factors whose products would overflow float64 are refused by name (formats/adapter refuseOverflowingF64). */
export function refuseOverflowingRaw(m: LoraModule, B: RawFactor, A: RawFactor): void {
  if (B.dtype !== "F64" && A.dtype !== "F64") return;
  const norm = (f: RawFactor): number => {
    if (f.dtype !== "F64") return 0;
    const v = new DataView(f.raw.buffer, f.raw.byteOffset, f.raw.byteLength);
    return scaledNorm(f.raw.byteLength / 8, (i) => v.getFloat64(8 * i, true));
  };
  refuseOverflowingF64(m, norm(B), norm(A));
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
    ms.forEach((m, i) => refuseOverflowingRaw(m, pairs[i]![0], pairs[i]![1]));
    return await fn(pairs);
  } finally {
    for (const b of taken) pool.give(b);
  }
}
