// truncate over a catalog: every adapter written under one directory with its own file or
// directory name; with --max-bytes one global allocation (surgery/catalog.ts allocateBytes) over
// every module of every adapter, otherwise each adapter truncated by the usual options. A bad file
// is reported and skipped, never stopping the others.
import { mkdir } from "node:fs/promises";
import { BufferPool } from "../../common/buffer-pool.js";
import { basename, join } from "node:path";
import { LoraError, UsageError } from "../../common/errors.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { allocateBytes, catalogItems, type CatalogFailure } from "../../surgery/catalog.js";
import { ReadAhead } from "../../surgery/schedule.js";
import type { WriteReport } from "../../surgery/report.js";
import { isSplitReport, runTruncate, type TruncateOptions } from "./run.js";

export interface CatalogAdapterReport {
  input: string;
  output: string;
  rank_in: number;
  rank: number;
  /** Tensor bytes of the written output. */
  bytes: number;
  relative_error: number;
  /** Σ kept σ² / Σ σ² of this adapter (--max-bytes). */
  retained_energy?: number;
  /** --max-bytes kept none of its modules: nothing written. */
  dropped?: true;
}

export interface CatalogTruncateReport {
  command: "truncate";
  catalog: true;
  output_dir: string;
  max_bytes?: number;
  /** Σ tensor bytes of every output. */
  bytes: number;
  /** --max-bytes: Σ kept σ² over the catalog, its total, and whether the allocation is proven optimal. */
  kept_energy?: number;
  total_energy?: number;
  optimal?: boolean;
  adapters: CatalogAdapterReport[];
  failed: CatalogFailure[];
}

export async function runCatalogTruncate(
  paths: string[],
  outDir: string,
  base: Omit<TruncateOptions, "input" | "output">,
  o: { maxBytes?: number },
  deps: { backend: LinalgBackend; onAdapter?: (i: number, n: number) => void },
): Promise<CatalogTruncateReport> {
  if (paths.includes("-")) throw new UsageError("a catalog is read from files and directories, not standard input");
  const names = paths.map((p) => basename(p));
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new UsageError(`two inputs are named ${dup}; each output is written under ${outDir} with its input's name`);
  await mkdir(outDir, { recursive: true });
  const failed: CatalogFailure[] = [];
  let ranks: Map<string, Map<string, number>> | undefined, energy: Map<string, { kept: number; total: number }> | undefined;
  // σ of each module from the allocation's pass: modules kept whole or removed are not read again.
  let spectra: Map<string, Map<string, Float64Array>> | undefined;
  // Each adapter's total input rank (reported for an adapter the allocation drops, too).
  let rankIn: Map<string, number> | undefined;
  const report: CatalogTruncateReport = { command: "truncate", catalog: true, output_dir: outDir, bytes: 0, adapters: [], failed };
  let todo = paths;
  if (o.maxBytes !== undefined) {
    const { items, failed: bad } = await catalogItems(paths, deps.backend, {
      ...(base.dtype !== undefined ? { dtype: base.dtype } : {}),
      ...(base.to !== undefined ? { to: base.to } : {}),
    });
    failed.push(...bad);
    const alloc = allocateBytes(items, o.maxBytes);
    ranks = new Map(items.map((it, i) => [it.path, alloc.ranks[i]!]));
    spectra = new Map(items.map((it) => [it.path, new Map(it.modules.map((m) => [m.name, m.values.map(Math.sqrt)]))]));
    rankIn = new Map(items.map((it) => [it.path, it.modules.reduce((s, m) => s + m.rank, 0)]));
    energy = new Map(
      items.map((it, i) => {
        let kept = 0,
          total = 0;
        for (const m of it.modules) {
          const k = alloc.ranks[i]!.get(m.name)!;
          m.values.forEach((v, j) => {
            total += v;
            if (j < k) kept += v;
          });
        }
        return [it.path, { kept, total }];
      }),
    );
    Object.assign(report, { max_bytes: o.maxBytes, kept_energy: alloc.keptEnergy, total_energy: alloc.totalEnergy, optimal: alloc.optimal });
    todo = items.map((it) => it.path);
  }
  // The inputs' files of a few MB are read whole into buffers reused from one adapter to the next.
  const pool = new BufferPool(64 << 20);
  const truncateOne = async (input: string, r0: Map<string, number> | undefined, s0: Map<string, Float64Array> | undefined): Promise<CatalogAdapterReport> => {
    const output = join(outDir, basename(input));
    if (r0 && [...r0.values()].every((k) => k === 0))
      return { input, output: "", rank_in: rankIn?.get(input) ?? 0, rank: 0, bytes: 0, relative_error: 1, retained_energy: 0, dropped: true };
    const r = (await runTruncate(
      { ...base, input, output, ...(r0 ? { ranks: r0 } : {}), ...(s0 ? { spectra: s0 } : {}) },
      { backend: deps.backend, buffers: pool },
    )) as WriteReport;
    if (isSplitReport(r)) throw new UsageError("--unit cannot be used on a catalog");
    const e = energy?.get(input);
    return {
      input,
      output,
      rank_in: r.totals.rank_in,
      rank: r.totals.rank,
      bytes: r.totals.bytes!,
      relative_error: r.totals.relative_error,
      ...(e ? { retained_energy: e.total > 0 ? e.kept / e.total : 1 } : {}),
    };
  };
  // Four adapters in flight: while some compute or wait on fsync, the next ones are read (500
  // adapters: 0.89× wall against two in flight, peak RSS +10 MB).
  const ahead = new ReadAhead(todo, (input) => truncateOne(input, ranks?.get(input), spectra?.get(input)), 3);
  try {
    for (const [i, input] of todo.entries()) {
      try {
        report.adapters.push(await ahead.take(input));
      } catch (err) {
        if (!(err instanceof LoraError) || err instanceof UsageError) throw err;
        failed.push({ path: input, exit: err.exitCode, error: err.message });
      }
      deps.onAdapter?.(i + 1, todo.length);
    }
  } finally {
    await ahead.settled(); // the adapters started ahead finish (or fail) before an error stops the catalog
  }
  report.bytes = report.adapters.reduce((s, a) => s + a.bytes, 0);
  return report;
}
