// diff's table (terminal), TSV rows (piped) and one-line summary.
import { fmt, formatTable, formatTsv } from "../support/output.js";
import type { DiffReport, ModuleDiff } from "../../surgery/diff.js";

const deg = (r: number) => (r * 180) / Math.PI;
const num = (x: number | null) => (x === null ? "-" : fmt(x));
/** Smallest and largest principal angle in degrees, "min–max". */
function angleSpan(a: number[]): string {
  return a.length === 0 ? "-" : `${fmt(deg(a[0]!), 3)}–${fmt(deg(a[a.length - 1]!), 3)}`;
}

export function diffSummary(r: DiffReport): string {
  const parts = [`${r.summary.compared} modules compared`];
  if (r.summary.mean_cosine !== null) parts.push(`mean cosine ${fmt(r.summary.mean_cosine)}`);
  if (r.summary.median_relative_difference !== null) parts.push(`median ‖ΔA−ΔB‖/‖ΔA‖ ${fmt(r.summary.median_relative_difference)}`);
  if (r.summary.mean_sign_conflict !== undefined) parts.push(`mean sign conflict ${fmt(100 * r.summary.mean_sign_conflict, 3)}%`);
  parts.push(`only in A: ${r.only_in_a.length}`, `only in B: ${r.only_in_b.length}`);
  return parts.join(", ");
}

function row(m: ModuleDiff, signs: boolean): string[] {
  return [
    m.name,
    `${m.shape[0]}×${m.shape[1]}`,
    String(m.rank_a),
    String(m.rank_b),
    num(m.cosine),
    num(m.relative_difference),
    angleSpan(m.principal_angles_out),
    angleSpan(m.principal_angles_in),
    ...(signs ? [m.sign_conflict === undefined ? "-" : fmt(100 * m.sign_conflict, 3) + "%"] : []),
  ];
}

export function renderDiffTable(r: DiffReport): string {
  const signs = r.summary.mean_sign_conflict !== undefined;
  const header = ["module", "shape", "rank A", "rank B", "cosine", "rel. diff", "θ out (°)", "θ in (°)", ...(signs ? ["sign conflict"] : [])];
  const lines = [
    `${r.a} (${r.format_a}) vs ${r.b} (${r.format_b}): ${diffSummary(r)}`,
    "",
    formatTable(
      header,
      r.modules.map((m) => row(m, signs)),
    ),
  ];
  if (r.only_in_a.length) lines.push("", `only in A (${r.only_in_a.length}): ${r.only_in_a.join(", ")}`);
  if (r.only_in_b.length) lines.push("", `only in B (${r.only_in_b.length}): ${r.only_in_b.join(", ")}`);
  return lines.join("\n");
}

/** Piped: one row per compared module; angles as comma-separated radians. */
export function renderDiffTsv(r: DiffReport, header = false): string {
  const signs = r.summary.mean_sign_conflict !== undefined;
  const names = ["module", "shape", "rank_a", "rank_b", "cosine", "relative_difference", "principal_angles_out", "principal_angles_in"];
  return formatTsv(
    r.modules.map((m) => [
      m.name,
      `${m.shape[0]}x${m.shape[1]}`,
      String(m.rank_a),
      String(m.rank_b),
      String(m.cosine ?? ""),
      String(m.relative_difference ?? ""),
      m.principal_angles_out.join(","),
      m.principal_angles_in.join(","),
      ...(m.sign_conflict !== undefined ? [String(m.sign_conflict)] : []),
    ]),
    header ? [...names, ...(signs ? ["sign_conflict"] : [])] : undefined,
  );
}
