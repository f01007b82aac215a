// lint's table (terminal) and TSV rows (piped): one row per finding.
import { formatTable, formatTsv } from "../support/output.js";
import type { LintRun } from "./run.js";

export function lintSummary(r: LintRun): string {
  const n = r.adapters.length;
  const clean = r.adapters.filter((a) => a.findings.length === 0).length;
  return `${n} adapter${n === 1 ? "" : "s"} linted: ${r.errors} error${r.errors === 1 ? "" : "s"}, ${r.warnings} warning${r.warnings === 1 ? "" : "s"}${n > 1 ? `, ${clean} clean` : ""}`;
}

export function renderLintTable(r: LintRun): string {
  const multi = r.adapters.length > 1;
  const rows = r.findings.map((f) => [...(multi ? [f.path] : []), f.severity, f.rule, f.loader, f.module ?? "-", f.message]);
  const header = [...(multi ? ["adapter"] : []), "severity", "rule", "loader", "module", "message"];
  return (rows.length ? formatTable(header, rows) + "\n\n" : "") + lintSummary(r);
}

export function renderLintTsv(r: LintRun, header = false): string {
  return formatTsv(
    r.findings.map((f) => [f.path, f.severity, f.rule, f.loader, f.module ?? "", f.message]),
    header ? ["adapter", "severity", "rule", "loader", "module", "message"] : undefined,
  );
}
