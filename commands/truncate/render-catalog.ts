// The catalog truncate report: one row per adapter (table on a terminal, TSV when piped), a summary line.
import type { Ctx, GlobalOptions } from "../support/context.js";
import { fmt, formatTable, formatTsv, note, printJson, writeOut } from "../support/output.js";
import type { CatalogTruncateReport } from "./catalog.js";

export function printCatalogReport(ctx: Ctx, g: GlobalOptions, r: CatalogTruncateReport): void {
  if (g.json) {
    printJson(ctx, r);
    return;
  }
  for (const f of r.failed) note(ctx, false, `${f.path}: skipped: ${f.error}`);
  if (g.quiet) return;
  const energy = r.kept_energy !== undefined;
  const rows = r.adapters.map((a) => [
    a.input,
    a.dropped ? "(dropped)" : a.output,
    String(a.rank_in),
    String(a.rank),
    ctx.stdout.isTTY ? a.bytes.toLocaleString("en-US") : String(a.bytes),
    fmt(a.relative_error),
    ...(energy ? [fmt(a.retained_energy ?? 0, 6)] : []),
  ]);
  if (ctx.stdout.isTTY)
    writeOut(ctx, formatTable(["adapter", "output", "rank in", "rank out", "bytes", "rel. error", ...(energy ? ["retained energy"] : [])], rows));
  else if (rows.length)
    writeOut(
      ctx,
      formatTsv(rows, g.header ? ["adapter", "output", "rank_in", "rank", "bytes", "relative_error", ...(energy ? ["retained_energy"] : [])] : undefined),
    );
  const parts = [
    `${r.adapters.filter((a) => !a.dropped).length} adapters written to ${r.output_dir}${r.adapters.some((a) => a.dropped) ? ` (${r.adapters.filter((a) => a.dropped).length} dropped: the optimum keeps no rank of them)` : ""}`,
    `${r.bytes} bytes of tensors${r.max_bytes !== undefined ? ` (budget ${r.max_bytes})` : ""}`,
  ];
  if (energy)
    parts.push(
      `energy kept ${fmt((100 * r.kept_energy!) / (r.total_energy! || 1), 6)}%${r.optimal ? " (optimal)" : " (search limit hit: not proven optimal)"}`,
    );
  ctx.stderr.write(`lora: ${parts.join(", ")}\n`);
}
