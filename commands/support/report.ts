// The report every writing command returns (docs/cli.md "Write reports": per module the new rank
// and the relative error ‖ΔW_out − ΔW_target‖_F / ‖ΔW_target‖_F, computed from the factors, plus
// totals).
import type { Ctx, GlobalOptions } from "./context.js";
import { fmt, formatTable, formatTsv, paint, printJson, summary } from "./output.js";

export interface ModuleResult {
  name: string;
  /** Rank(s) in: one number, or one per input for merges. */
  rank_in: number | number[];
  /** Output rank (0 = module removed). */
  rank: number;
  /** ‖ΔW_out − ΔW_target‖_F / ‖ΔW_target‖_F from the factors. */
  relative_error: number;
  /** Σ kept σ² / Σ σ², where the command truncates a spectrum. */
  retained_energy?: number;
  /** ‖ΔW_target‖_F, used for the total error. */
  target_norm: number;
  [extra: string]: unknown;
}

export interface WriteReport {
  command: string;
  method: string;
  inputs: string[];
  output: string;
  format: string;
  modules: ModuleResult[];
  /** Modules dropped from the output (rank 0 / pruned). */
  dropped: string[];
  totals: { modules: number; rank_in: number; rank: number; relative_error: number; params_in?: number; params?: number };
  notes: string[];
  [extra: string]: unknown;
}

/** Totals: overall relative error √(Σ errᵢ²‖Tᵢ‖²) / √(Σ ‖Tᵢ‖²) (the error of the whole adapter). */
export function totalsOf(mods: ModuleResult[]): WriteReport["totals"] {
  let num = 0, den = 0;
  for (const m of mods) { num += (m.relative_error * m.target_norm) ** 2; den += m.target_norm ** 2; }
  const rin = (m: ModuleResult) => (Array.isArray(m.rank_in) ? m.rank_in.reduce((s, x) => s + x, 0) : m.rank_in);
  return {
    modules: mods.filter((m) => m.rank > 0).length,
    rank_in: mods.reduce((s, m) => s + rin(m), 0),
    rank: mods.reduce((s, m) => s + m.rank, 0),
    relative_error: den > 0 ? Math.sqrt(num / den) : 0,
  };
}

/** Print the report: JSON with --json; else a table (TTY) or TSV rows, on stdout or (with -o -) stderr. */
export function printWriteReport(ctx: Ctx, g: GlobalOptions, r: WriteReport): void {
  if (g.json) { printJson(ctx, r); return; }
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
  const lines = [
    tty ? formatTable(header, rows, paint(ctx, toStderr ? "stderr" : "stdout").bold) : formatTsv(rows, g.header ? ["module", "rank_in", "rank", "relative_error", ...(hasEnergy ? ["retained_energy"] : [])] : undefined),
    `${r.command} (${r.method}): ${t.modules} modules, rank ${t.rank_in} → ${t.rank}, total relative error ${fmt(t.relative_error)}${r.dropped.length ? `, ${r.dropped.length} module(s) dropped` : ""} → ${r.output === "-" ? "standard output" : r.output}`,
    ...r.notes.map((n) => `note: ${n}`),
  ];
  if (tty) { summary(ctx, false, r.output, lines.join("\n")); return; }
  // Piped: rows only on the data stream (so cut/awk work); the summary goes to stderr.
  summary(ctx, false, r.output, lines[0]!);
  ctx.stderr.write(lines.slice(1).join("\n") + "\n");
}
