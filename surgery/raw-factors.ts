// A module's factors as stored, read into pooled buffers for one native call (truncateFactors,
// factorSpectrum); the buffers go back to the pool once the call settles. A derived file's
// computed factors are used as produced (no pooled copy).
import type { Adapter, LoraModule } from "../formats/adapter/index.js";
import type { FactorDType, RawFactor } from "../linalg/types.js";
import type { BufferPool } from "../common/buffer-pool.js";

export async function withRawFactors<T>(a: Adapter, m: LoraModule, pool: BufferPool, fn: (B: RawFactor, A: RawFactor) => Promise<T>): Promise<T> {
  const taken: Uint8Array[] = [];
  const take = (n: number) => {
    const b = pool.take(n);
    taken.push(b);
    return b;
  };
  try {
    // Read only here: a derived file's computed factors are passed on as they are, not copied.
    const [rawB, rawA] = await Promise.all([a.file.readRawShared(m.B, take), a.file.readRawShared(m.A, take)]);
    return await fn(
      { raw: rawB, dtype: m.B.dtype as FactorDType, rows: m.out, cols: m.rank },
      { raw: rawA, dtype: m.A.dtype as FactorDType, rows: m.rank, cols: m.in },
    );
  } finally {
    for (const b of taken) pool.give(b);
  }
}
