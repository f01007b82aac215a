// Rendering an extract report: an aligned table on a terminal, tab-separated rows when piped (the
// summary and notes on stderr then). JSON is printed by the command itself.
import type { Ctx, GlobalOptions } from "../support/context.js";
import { fmt, formatTable, formatTsv, rowsThenSummary } from "../support/output.js";
import type { ExtractReport } from "./run.js";

export function printExtractReport(ctx: Ctx, g: GlobalOptions, r: ExtractReport): void {
  if (g.quiet) return;
  const tty = !!ctx.stdout.isTTY;
  const rows = r.modules.map((m) => [
    m.name,
    String(m.rank_in),
    String(m.rank),
    fmt(m.relative_error),
    fmt(m.retained_energy, 6),
    m.route === "exact" ? "exact" : `q=${m.power_iterations}, ${m.excess_estimate === null ? "at rounding level" : `≤${fmt(100 * m.excess_estimate, 2)}%`}`,
  ]);
  const header = ["module", "full rank", "rank", "rel. error", "captured energy", "route (excess over optimum)"];
  const t = r.totals;
  const text = tty
    ? formatTable(header, rows)
    : formatTsv(rows, g.header ? ["module", "rank_in", "rank", "relative_error", "retained_energy", "route"] : undefined);
  rowsThenSummary(ctx, r.output, tty, text, [
    `extract (${r.method}): ${t.modules} modules, total rank ${t.rank}, ${t.params.toLocaleString("en-US")} LoRA parameters, total relative error ${fmt(t.relative_error)} → ${r.output} (${r.format})`,
    ...r.notes.map((n) => `note: ${n}`),
  ]);
}
