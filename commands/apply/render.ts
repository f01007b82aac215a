// Rendering an apply report: one row per weight changed (table on a terminal, TSV when piped).
import type { Ctx, GlobalOptions } from "../support/context.js";
import { fmt, formatTable, formatTsv, rowsThenSummary } from "../support/output.js";
import type { ApplyReport } from "./run.js";

export function printApplyReport(ctx: Ctx, g: GlobalOptions, r: ApplyReport): void {
  if (g.quiet) return;
  const tty = !!ctx.stdout.isTTY;
  const rows = r.weights.map((w) => [w.name, w.dtype, w.modules.map((m) => `${m.module} ×${fmt(m.scale)}`).join(" + ")]);
  const text = tty ? formatTable(["weight", "dtype", "added"], rows) : formatTsv(rows, g.header ? ["weight", "dtype", "added"] : undefined);
  rowsThenSummary(ctx, r.output, tty, text, [
    `apply: ${r.totals.weights} weights changed by ${r.totals.modules} adapter modules, ${r.totals.tensors} tensors, ${(r.totals.bytes / 1e6).toFixed(1)} MB → ${r.output}`,
    ...r.notes.map((n) => `note: ${n}`),
  ]);
}
