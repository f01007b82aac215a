// Catalog mode: many adapters at once (docs/cli.md "Catalogs"; the inputs are expanded by
// catalog-inputs.ts). Each adapter is summarised in one row from its exact spectra; a file that cannot be read is reported
// and skipped, never stopping the others.
import { loadAdapter } from "../formats/adapter/index.js";
import { LoraError, UsageError } from "../common/errors.js";
import { effectiveRank } from "../linalg/lowrank.js";
import type { LinalgBackend } from "../linalg/types.js";
import { Lanes } from "./schedule.js";
import { moduleSpectra, type SharedLanes } from "./spectra.js";
import { solveGroupedKnapsack } from "./knapsack.js";
import { BufferPool } from "../common/buffer-pool.js";

/** Bytes of read buffers a catalog keeps for reuse at most (the adapters in flight need fewer). */
const CATALOG_POOL_BYTES = 256 << 20;

export interface AdapterSummary {
  path: string;
  format: string;
  dtype: string;
  modules: number;
  total_rank: number;
  /** LoRA parameters: Σ r·(out+in). */
  parameters: number;
  /** Bytes of the factor tensors as stored. */
  bytes: number;
  /** Σ over modules of the effective rank (exp of the spectral entropy). */
  effective_rank: number;
  /** Fraction of Σσ² kept when every module keeps max(1, ⌊r/2⌋) ranks. */
  energy_at_half_rank: number;
}

export interface CatalogFailure {
  path: string;
  exit: number;
  error: string;
}

export async function summarizeAdapter(path: string, be: LinalgBackend, stdin?: NodeJS.ReadableStream, within?: SharedLanes): Promise<AdapterSummary> {
  const a = await loadAdapter(path, { ...(stdin ? { stdin } : {}), ...(within?.pool ? { buffers: within.pool } : {}) });
  try {
    const spectra = await moduleSpectra(a, be, within ? { within } : {});
    let rank = 0,
      params = 0,
      bytes = 0,
      eff = 0,
      total = 0,
      half = 0;
    for (const m of a.modules) {
      const S = spectra.get(m)!.S;
      rank += m.rank;
      params += m.rank * (m.out + m.in);
      bytes += m.family ? m.family.stored.reduce((n, t) => n + t.end - t.begin, 0) : m.A.end - m.A.begin + (m.B.end - m.B.begin);
      eff += S.length ? effectiveRank(S) : 0;
      const keep = Math.max(1, Math.floor(m.rank / 2));
      S.forEach((s, i) => {
        total += s * s;
        if (i < keep) half += s * s;
      });
    }
    return {
      path,
      format: a.format,
      dtype: a.dtype,
      modules: a.modules.length,
      total_rank: rank,
      parameters: params,
      bytes,
      effective_rank: eff,
      energy_at_half_rank: total > 0 ? half / total : 1,
    };
  } finally {
    await a.file.close();
  }
}

/**
 * Each path through `each`, several adapters side by side (all sharing the backend's lanes, entered
 * once), results in path order; failures (invalid input or unreadable files) collected, not thrown.
 */
async function overCatalog<T>(
  paths: string[],
  be: LinalgBackend,
  each: (path: string, within: SharedLanes) => Promise<T>,
  onAdapter?: (i: number, n: number) => void,
): Promise<{ done: T[]; failed: CatalogFailure[] }> {
  const outcomes: ({ ok: T } | { err: LoraError })[] = new Array(paths.length);
  await be.withLanes(async (count) => {
    // Twice as many native calls in flight as lanes: the reads are synchronous, so while the main
    // thread opens and reads the next adapter it cannot hand a freed lane its next call; the calls
    // already queued keep the thread pool busy meanwhile.
    const within: SharedLanes = { count, gate: new Lanes(2 * count), pool: new BufferPool(CATALOG_POOL_BYTES) };
    // A fixed number of adapters in flight, the next one started as soon as any finishes (not in
    // path order: one slow adapter does not hold the others back); opening, header parsing and
    // detection of the next adapters overlap the native work of the others.
    let next = 0,
      finished = 0,
      stopped = false;
    const lane = async () => {
      while (!stopped && next < paths.length) {
        const i = next++;
        try {
          outcomes[i] = { ok: await each(paths[i]!, within) };
        } catch (e) {
          if (!(e instanceof LoraError)) {
            stopped = true;
            throw e;
          }
          outcomes[i] = { err: e };
        }
        onAdapter?.(++finished, paths.length);
      }
    };
    // Every lane settles before the backend's lanes end (no native call in flight then), even when one throws.
    const ends = await Promise.allSettled(Array.from({ length: Math.min(paths.length, 2 * count + 1) }, lane));
    const thrown = ends.find((e) => e.status === "rejected");
    if (thrown) throw thrown.reason;
  });
  const done: T[] = [],
    failed: CatalogFailure[] = [];
  outcomes.forEach((o, i) => {
    if ("ok" in o) done.push(o.ok);
    else failed.push({ path: paths[i]!, exit: o.err.exitCode, error: o.err.message });
  });
  return { done, failed };
}

/** Summaries of every adapter; failures (invalid input or unreadable files) collected, not thrown. */
export async function summarizeCatalog(
  paths: string[],
  be: LinalgBackend,
  io: { stdin?: NodeJS.ReadableStream; onAdapter?: (i: number, n: number) => void } = {},
): Promise<{ adapters: AdapterSummary[]; failed: CatalogFailure[] }> {
  const r = await overCatalog(paths, be, (p, within) => summarizeAdapter(p, be, io.stdin, within), io.onAdapter);
  return { adapters: r.done, failed: r.failed };
}

/** Bytes per element of a factor dtype as truncate writes it. */
const BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

export interface CatalogItem {
  path: string;
  /** Per module: name, bytes per rank unit of the output, σ² (scale included), rank in. */
  modules: { name: string; cost: number; values: Float64Array; rank: number }[];
  /** Tensor bytes the output carries whatever the ranks: passthrough, alphas and other extras (an upper bound). */
  fixedBytes: number;
}

/** Spectra of every adapter of a catalog, for a global allocation; failures collected, not thrown. */
export async function catalogItems(
  paths: string[],
  be: LinalgBackend,
  o: { dtype?: string; to?: string; stdin?: NodeJS.ReadableStream; onAdapter?: (i: number, n: number) => void } = {},
): Promise<{ items: CatalogItem[]; failed: CatalogFailure[] }> {
  const r = await overCatalog(paths, be, (p, within) => catalogItem(p, be, o, within), o.onAdapter);
  return { items: r.done, failed: r.failed };
}

async function catalogItem(
  p: string,
  be: LinalgBackend,
  o: { dtype?: string; to?: string; stdin?: NodeJS.ReadableStream },
  within: SharedLanes,
): Promise<CatalogItem> {
  const a = await loadAdapter(p, { ...(o.stdin ? { stdin: o.stdin } : {}), ...(within.pool ? { buffers: within.pool } : {}) });
  try {
    const spectra = await moduleSpectra(a, be, { within });
    // Everything but the factors is carried as it is, except kohya alphas, which a kohya output writes as one F32 each.
    const rewritten = new Set(a.modules.flatMap((m) => [m.A.name, m.B.name, ...(m.alphaTensor ? [m.alphaTensor.name] : [])]));
    const kohyaOut = (o.to ?? a.format) === "kohya";
    const fixedBytes =
      a.file.header.tensors.filter((t) => !rewritten.has(t.name)).reduce((s, t) => s + (t.end - t.begin), 0) + (kohyaOut ? 4 * a.modules.length : 0);
    return {
      path: p,
      fixedBytes,
      modules: a.modules.map((m) => ({
        name: m.name,
        rank: m.rank,
        cost: (m.out + m.in) * (BYTES[o.dtype ?? m.family?.dtype ?? m.A.dtype] ?? 4),
        values: Float64Array.from(spectra.get(m)!.S.slice(0, m.rank), (s) => s * s),
      })),
    };
  } finally {
    await a.file.close();
  }
}

export interface ByteAllocation {
  /** Per adapter (as items): the rank of each module. */
  ranks: Map<string, number>[];
  keptEnergy: number;
  totalEnergy: number;
  bytes: number;
  optimal: boolean;
  /** The Lagrangian upper bound on the kept energy. */
  bound: number;
}

/**
 * The one global allocation: most energy kept over every module of every adapter within maxBytes of
 * tensors. An adapter is written only when it keeps a rank unit, so its fixed bytes count only then:
 * they are each adapter's fixed cost in the knapsack, not taken off the budget beforehand.
 */
export function allocateBytes(items: CatalogItem[], maxBytes: number): ByteAllocation {
  const r = solveGroupedKnapsack(
    items.map((it) => ({ fixed: it.fixedBytes, modules: it.modules.map((m) => ({ cost: m.cost, values: m.values })) })),
    maxBytes,
  );
  let total = 0;
  for (const it of items) for (const m of it.modules) total += m.values.reduce((s, v) => s + v, 0);
  if (!r.used.some((u) => u) && total > 0) {
    // Nothing fits: name the smallest output there could be (its fixed bytes and one rank unit of its cheapest module with energy).
    let least = Infinity;
    for (const it of items) for (const m of it.modules) if (m.values.length && m.values[0]! > 0) least = Math.min(least, it.fixedBytes + m.cost);
    throw new UsageError(`--max-bytes ${maxBytes}: no adapter fits: the smallest output (its passthrough tensors and one rank) takes ${least} bytes`);
  }
  const ranks = items.map((it, i) => new Map(it.modules.map((m, k) => [m.name, r.ranks[i]![k]!])));
  return { ranks, keptEnergy: r.value, totalEnergy: total, bytes: r.bytes, optimal: r.optimal, bound: r.bound };
}
