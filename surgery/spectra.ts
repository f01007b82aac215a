// The singular values of every module of an adapter, computed once here for both `lora inspect`
// and `lora truncate --energy/--budget/--dynamic`, so that the ranks truncate allocates are the
// ones inspect prints. Each module is one factorSpectrum call on its raw bytes (cpu: one native
// call, the float64 Gram route of docs/algorithms.md §2.2), `lanes` modules side
// by side while the next modules are read (in catalog mode, runs of small modules share one
// factorSpectra call); for a module whose factors are not F32/F16/BF16/F64,
// or that the Gram route refuses (cancelling factors), Householder QR of the factors (linalg/lowrank.ts).
// A derived module whose family knows its spectrum more cheaply (LoKr: σ products) gives it itself.
import { nonFiniteFactor, rawReadable, readFactors, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import { lowRankSingularValues } from "../linalg/lowrank.js";
import type { FactorSpectrumInput, FactorSpectrumResult, LinalgBackend, ModuleGrams, RawFactor } from "../linalg/types.js";
import { BufferPool } from "../common/buffer-pool.js";
import { withRawFactors, withRawFactorsOf } from "./raw-factors.js";
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
  const direct = (m: LoraModule) => rawReadable(m) && !m.family?.spectrum;
  const run = async (lanes: number, gate: Lanes = new Lanes(lanes)) => {
    const pool = opts.within?.pool ?? new BufferPool();
    // Catalog mode: consecutive modules in one factorSpectra call (one thread-pool round trip for a
    // kohya file's 16 small modules instead of 16); parallelism comes from the adapters side by side.
    const units = unitsOf(a.modules, direct, opts.within ? BATCH_BYTES : 0);
    const start = async (u: LoraModule[]): Promise<(FactorSpectrumResult | null)[]> => {
      if (!direct(u[0]!)) return [null];
      const spectrum = (B: RawFactor, A: RawFactor, m: LoraModule): FactorSpectrumInput => ({
        B,
        A,
        scale: m.scale,
        ...(opts.keepGrams ? { keepGrams: true } : {}),
      });
      if (u.length === 1) return [await withRawFactors(a, u[0]!, pool, (B, A) => gate.run(() => be.factorSpectrum(spectrum(B, A, u[0]!))))];
      return withRawFactorsOf(a, u, pool, (pairs) => gate.run(() => be.factorSpectra(pairs.map(([B, A], i) => spectrum(B, A, u[i]!)))));
    };
    const ahead = new ReadAhead(units, start, lanes);
    try {
      for (const u of units) {
        const rs = await ahead.take(u);
        for (const [i, m] of u.entries()) {
          const r = rs[i] ?? null;
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
      }
    } finally {
      await ahead.settled(); // no call in flight when the lanes end, after a refusal too
    }
  };
  if (opts.within) await run(opts.within.count, opts.within.gate);
  else await be.withLanes(run);
  return out;
}

/** Stored factor bytes of one batched call at most (catalog mode). */
const BATCH_BYTES = 8 << 20;

/**
 * The modules in order, as units of work: runs of consecutive `batchable` modules of at most
 * `maxBytes` stored factor bytes together (maxBytes 0: every module alone), every other module alone.
 */
function unitsOf(modules: LoraModule[], batchable: (m: LoraModule) => boolean, maxBytes: number): LoraModule[][] {
  const units: LoraModule[][] = [];
  let run: LoraModule[] = [],
    bytes = 0;
  const flush = () => {
    if (run.length) units.push(run);
    run = [];
    bytes = 0;
  };
  for (const m of modules) {
    if (!batchable(m) || maxBytes === 0) {
      flush();
      units.push([m]);
      continue;
    }
    const b = m.A.end - m.A.begin + (m.B.end - m.B.begin);
    if (run.length && bytes + b > maxBytes) flush();
    run.push(m);
    bytes += b;
  }
  flush();
  return units;
}
