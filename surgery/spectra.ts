// The singular values of every module of an adapter, computed once here for both `lora inspect`
// and `lora truncate --energy/--budget/--dynamic`, so that the ranks truncate allocates are the
// ones inspect prints. Each module is one factorSpectrum call on its raw bytes (cpu: one native
// call, the float64 Gram route of docs/algorithms.md §2.2), `lanes` modules side
// by side while the next modules are read; for a module whose factors are not F32/F16/BF16/F64,
// or that the Gram route refuses (cancelling factors), Householder QR of the factors (linalg/lowrank.ts).
// A derived module whose family knows its spectrum more cheaply (LoKr: σ products) gives it itself.
import { nonFiniteFactor, rawReadable, readFactors, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import { lowRankSingularValues } from "../linalg/lowrank.js";
import type { FactorSpectrumResult, LinalgBackend, ModuleGrams } from "../linalg/types.js";
import { BufferPool } from "../common/buffer-pool.js";
import { withRawFactors } from "./raw-factors.js";
import { Lanes, ReadAhead } from "./schedule.js";

/** Native lanes entered once (LinalgBackend.withLanes) and shared by several adapters' spectra. */
export interface SharedLanes {
  count: number;
  gate: Lanes;
  /** Buffers shared by those adapters' reads (files read whole and factors). */
  pool?: BufferPool;
}

export interface ModuleSpectrum {
  /** σ, descending; min(rank, out, in) of them, zeros included. */
  S: Float64Array;
  /** The native route's Grams, when asked for and that route ran (LinalgBackend.truncateFactors takes them). */
  grams?: ModuleGrams;
}

/** The spectrum of each module, in a.modules order. keepGrams: keep the Grams too (2r² floats a module). */
export async function moduleSpectra(
  a: Adapter,
  be: LinalgBackend,
  opts: {
    onModule?: (done: number, total: number) => void;
    keepGrams?: boolean;
    /** Lanes already entered by the caller (be.withLanes), shared with other adapters computed side by side (catalog mode). */
    within?: SharedLanes;
  } = {},
): Promise<Map<LoraModule, ModuleSpectrum>> {
  const out = new Map<LoraModule, ModuleSpectrum>();
  const run = async (lanes: number, gate: Lanes = new Lanes(lanes)) => {
    const pool = opts.within?.pool ?? new BufferPool();
    const start = async (m: LoraModule): Promise<FactorSpectrumResult | null> => {
      if (!rawReadable(m) || m.family?.spectrum) return null;
      return withRawFactors(a, m, pool, (B, A) => gate.run(() => be.factorSpectrum({ B, A, scale: m.scale, ...(opts.keepGrams ? { keepGrams: true } : {}) })));
    };
    const ahead = new ReadAhead(a.modules, start, lanes);
    for (const m of a.modules) {
      const r = await ahead.take(m);
      if (r?.kind === "non-finite") throw nonFiniteFactor(a, m, r);
      // Householder's k = min(r, out, in) values; the Gram route gives r, the extra ones zero.
      if (m.family?.spectrum) out.set(m, { S: await m.family.spectrum() });
      else if (r?.kind === "done") out.set(m, { S: r.S.slice(0, Math.min(m.rank, m.out, m.in)), ...(r.grams ? { grams: r.grams } : {}) });
      else {
        const f = await readFactors(a, m, "f64");
        out.set(m, { S: await lowRankSingularValues(be, { B: f.B, A: f.A, scale: m.scale }) });
      }
      opts.onModule?.(out.size, a.modules.length);
    }
  };
  if (opts.within) await run(opts.within.count, opts.within.gate);
  else await be.withLanes(run);
  return out;
}
