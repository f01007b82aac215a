// How a writing command's report (surgery/report.ts) is printed: one JSON document with --json,
// else a table on a terminal or TSV rows on a pipe, with a summary line.
import type { WriteReport } from "../../surgery/report.js";
import type { Ctx, GlobalOptions } from "./context.js";
import { fmt, formatBytes, formatTable, formatTsv, paint, printJson, rowsThenSummary } from "./output.js";

/** Print the report: JSON with --json; else a table (TTY) or TSV rows, on stdout or (with -o -) stderr. */
export function printWriteReport(ctx: Ctx, g: GlobalOptions, r: WriteReport): void {
  if (g.json) {
    printJson(ctx, r);
    return;
  }
  if (g.quiet) return;
  const toStderr = r.output === "-";
  const tty = toStderr ? !!ctx.stderr.isTTY : !!ctx.stdout.isTTY;
  const hasEnergy = r.modules.some((m) => m.retained_energy !== undefined);
  const rows = r.modules.map((m) => {
    const row = [m.name, Array.isArray(m.rank_in) ? m.rank_in.join("+") : String(m.rank_in), String(m.rank), fmt(m.relative_error)];
    if (hasEnergy) row.push(m.retained_energy === undefined ? "" : fmt(m.retained_energy, 6));
    return row;
  });
  const header = ["module", "rank in", "rank out", "rel. error"];
  if (hasEnergy) header.push("retained energy");
  const t = r.totals;
  const text = tty
    ? formatTable(header, rows, paint(ctx, toStderr ? "stderr" : "stdout").bold)
    : formatTsv(rows, g.header ? ["module", "rank_in", "rank", "relative_error", ...(hasEnergy ? ["retained_energy"] : [])] : undefined);
  rowsThenSummary(ctx, r.output, tty, text, [
    `${r.command} (${r.method}): ${t.modules} modules, rank ${t.rank_in} → ${t.rank}, total relative error ${fmt(t.relative_error)}${r.dropped.length ? `, ${r.dropped.length} module(s) dropped` : ""} → ${r.output === "-" ? "standard output" : r.output}${t.bytes !== undefined ? ` (${formatBytes(t.bytes)})` : ""}`,
    ...r.notes.map((n) => `note: ${n}`),
  ]);
}
