// A module's factors as stored, read into pooled buffers for one native call (truncateFactors,
// factorSpectrum); the buffers go back to the pool once the call settles.
import type { Adapter, LoraModule } from "../formats/adapter/index.js";
import type { FactorDType, RawFactor } from "../linalg/types.js";
import type { BufferPool } from "./buffer-pool.js";

export async function withRawFactors<T>(a: Adapter, m: LoraModule, pool: BufferPool, fn: (B: RawFactor, A: RawFactor) => Promise<T>): Promise<T> {
  const rawB = pool.take(m.B.end - m.B.begin),
    rawA = pool.take(m.A.end - m.A.begin);
  try {
    await Promise.all([a.file.readRawInto(m.B, rawB), a.file.readRawInto(m.A, rawA)]);
    return await fn(
      { raw: rawB, dtype: m.B.dtype as FactorDType, rows: m.out, cols: m.rank },
      { raw: rawA, dtype: m.A.dtype as FactorDType, rows: m.rank, cols: m.in },
    );
  } finally {
    pool.give(rawB);
    pool.give(rawA);
  }
}
