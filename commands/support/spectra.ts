// The singular values of every module of an adapter, computed once here for both `lora inspect`
// and `lora truncate --energy/--budget/--dynamic`, so that the ranks truncate allocates are the
// ones inspect prints. With a backend that has factorSpectrum (cpu), each module is one native
// call on its raw bytes (the float64 Gram route of algorithms.md §7.1 "singular values only"),
// `lanes` modules side by side while the next modules are read; otherwise, and for a module that
// route refuses (cancelling factors), Householder QR of the factors (linalg/lowrank.ts).
import { nonFinite, rawReadable, readFactors, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import { lowRankSingularValues } from "../../linalg/lowrank.js";
import type { FactorDType, FactorSpectrumResult, LinalgBackend, ModuleGrams } from "../../linalg/types.js";
import { BufferPool } from "./buffer-pool.js";
import { Lanes, ReadAhead } from "./schedule.js";

export interface ModuleSpectrum {
  /** σ, descending; min(rank, out, in) of them, zeros included. */
  S: Float64Array;
  /** The native route's Grams, when asked for and that route ran (LinalgBackend.truncateFactors takes them). */
  grams?: ModuleGrams;
}

/** The spectrum of each module, in a.modules order. keepGrams: keep the Grams too (2r² floats a module). */
export async function moduleSpectra(a: Adapter, be: LinalgBackend, opts: { onModule?: (done: number, total: number) => void; keepGrams?: boolean } = {}): Promise<Map<LoraModule, ModuleSpectrum>> {
  const out = new Map<LoraModule, ModuleSpectrum>();
  const onModule = opts.onModule;
  const viaFactors = async (m: LoraModule) => {
    const f = await readFactors(a, m, "f64");
    return lowRankSingularValues(be, { B: f.B, A: f.A, scale: m.scale });
  };
  const spectrum = be.factorSpectrum;
  if (!spectrum) {
    for (const m of a.modules) {
      out.set(m, { S: await viaFactors(m) });
      onModule?.(out.size, a.modules.length);
    }
    return out;
  }
  const label = a.source === "-" ? "<stdin>" : a.source;
  const run = async (lanes: number) => {
    const pool = new BufferPool();
    const gate = new Lanes(lanes);
    const start = async (m: LoraModule): Promise<FactorSpectrumResult | null> => {
      if (!rawReadable(m)) return null;
      const rawB = pool.take(m.B.end - m.B.begin), rawA = pool.take(m.A.end - m.A.begin);
      try {
        await Promise.all([a.file.readRawInto(m.B, rawB), a.file.readRawInto(m.A, rawA)]);
        return await gate.run(() => spectrum.call(be, {
          B: { raw: rawB, dtype: m.B.dtype as FactorDType, rows: m.out, cols: m.rank },
          A: { raw: rawA, dtype: m.A.dtype as FactorDType, rows: m.rank, cols: m.in },
          scale: m.scale,
          ...(opts.keepGrams ? { keepGrams: true } : {}),
        }));
      } finally {
        pool.give(rawB);
        pool.give(rawA);
      }
    };
    const ahead = new ReadAhead(a.modules, start, lanes);
    for (const m of a.modules) {
      const r = await ahead.take(m);
      if (r?.kind === "non-finite") throw nonFinite(r.factor === "A" ? m.A : m.B, label, r.value, r.index);
      // Householder's k = min(r, out, in) values; the Gram route gives r, the extra ones zero.
      if (r?.kind === "done") out.set(m, { S: r.S.slice(0, Math.min(m.rank, m.out, m.in)), ...(r.grams ? { grams: r.grams } : {}) });
      else out.set(m, { S: await viaFactors(m) });
      onModule?.(out.size, a.modules.length);
    }
  };
  if (be.withLanes) await be.withLanes(run);
  else await run(1);
  return out;
}
