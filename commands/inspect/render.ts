// Rendering an inspect report: an aligned table with spectrum bars on a terminal, tab-separated
// rows when piped (a header row with --header; the scale rule and notes go to stderr then). JSON
// is printed by the command itself.
import { summariseField, type KohyaMetadata } from "../../formats/adapter/index.js";
import { fmt, formatTable, formatTsv, visible } from "../support/output.js";
import type { InspectReport, ModuleReport } from "./run.js";

const BARS = " ▁▂▃▄▅▆▇█";

/** Unicode bars of σᵢ/σ₁ (one character per singular value, at most `max`). */
export function spectrumBars(s: number[], max = 16): string {
  const top = s[0] ?? 0;
  if (!(top > 0)) return "";
  const shown = s.slice(0, max).map((x) => BARS[Math.min(8, Math.max(1, Math.round((x / top) * 8)))]!);
  return shown.join("") + (s.length > max ? "…" : "");
}

/**
 * Unicode sparkline of the cumulative energy Σ_{i≤k} σᵢ² / Σσᵢ² for k = 1..rank: a fast rise means
 * a few components hold the module. At most `max` characters; longer curves are sampled evenly
 * (the last character is always the full rank).
 */
export function energyCurve(e: number[], max = 16): string {
  if (e.length === 0 || !(e[e.length - 1]! > 0)) return "";
  const n = Math.min(max, e.length);
  let out = "";
  for (let j = 0; j < n; j++) {
    const k = Math.max(0, Math.round(((j + 1) * e.length) / n) - 1);
    out += BARS[Math.min(8, Math.max(1, Math.round(e[k]! * 8)))]!;
  }
  return out;
}

function rank90(m: ModuleReport): number {
  const i = m.energy.findIndex((e) => e >= 0.9 - 1e-12);
  return i < 0 ? m.rank : i + 1;
}

/** Why each scale is what it is: the format's rule, recognised from the modules' (alpha, rank, scale). */
export function scaleRule(r: InspectReport): string {
  const near = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  const ms = r.modules.filter((m) => m.rank > 0);
  const rule =
    ms.length === 0
      ? ""
      : ms.every((m) => near(m.scale, m.alpha / m.rank))
        ? "scale = alpha / rank"
        : ms.every((m) => near(m.scale, m.alpha / Math.sqrt(m.rank)))
          ? "scale = alpha / √rank (rsLoRA)"
          : "scale per module as the format defines it";
  return `scale from ${r.config_source}${rule ? `: ${rule}` : ""}`;
}

/** A field value on one line: long ones summarised (summariseField), the rest cut at `max` characters. */
function short(key: string, v: string, max = 48): string {
  const t = summariseField(key, v).replace(/\s+/g, " ");
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

/**
 * The header lines of a file's kohya metadata (docs/formats.md "kohya metadata"): base model,
 * network module/dim/alpha/args, title and comment, then every other field by name with its
 * value summarised (whole in --json).
 */
export function kohyaLines(k: KohyaMetadata): string[] {
  const net = [k.network_module, k.network_dim !== undefined ? `dim ${k.network_dim}` : "", k.network_alpha !== undefined ? `alpha ${k.network_alpha}` : ""]
    .filter(Boolean)
    .join(" ");
  const args =
    k.network_args === undefined
      ? ""
      : typeof k.network_args === "string"
        ? short("ss_network_args", k.network_args)
        : Object.entries(k.network_args)
            .map(([a, v]) => `${a}=${typeof v === "string" ? v : JSON.stringify(v)}`)
            .join(" ");
  const parts = [
    `base ${k.base_model_version ?? k.architecture ?? "not stated"}`,
    ...(k.architecture && k.base_model_version ? [`architecture ${k.architecture}`] : []),
    ...(net ? [net] : []),
    ...(args ? [`args ${args}`] : []),
    ...(k.title ? [`title "${short("modelspec.title", k.title)}"`] : []),
  ];
  const lines = [`kohya metadata: ${parts.join(", ")}`];
  const comment = k.training_comment ?? k.description;
  if (comment !== undefined) lines.push(`kohya comment: ${short("ss_training_comment", comment, 160)}`);
  if (k.description !== undefined && k.training_comment !== undefined) lines.push(`kohya description: ${short("modelspec.description", k.description, 160)}`);
  if (k.model_hash !== undefined)
    lines.push(
      `kohya hashes: sshs_model_hash ${short("sshs_model_hash", k.model_hash, 80)}, sshs_legacy_hash ${short("sshs_legacy_hash", k.legacy_hash ?? "none", 80)}`,
    );
  const rest = Object.entries(k.fields);
  if (rest.length) lines.push(`kohya fields (${rest.length}, whole in --json): ${rest.map(([f, v]) => `${f} ${short(f, v)}`).join("; ")}`);
  return lines.map(visible); // the file's own text: no control characters reach the terminal
}

export function renderInspectTable(r: InspectReport, opts: { width?: number; emphasis?: (s: string) => string } = {}): string {
  const alloc = r.redistribution?.ranks;
  const families = r.modules.some((m) => m.family);
  const build = (withEnergy: boolean) => {
    const header = ["module", "shape", "rank", "alpha", "scale", "dtype", "norm", "σ1", "eff.rank", "r@90%", "spectrum"];
    if (families) header.splice(1, 0, "family");
    if (withEnergy) header.push("energy");
    if (alloc) header.push("→ rank");
    if (families) header.push("stored as");
    const rows = r.modules.map((m) => {
      const row = [
        m.name,
        `${m.shape[0]}×${m.shape[1]}`,
        String(m.rank),
        fmt(m.alpha),
        fmt(m.scale),
        m.dtype,
        fmt(m.norm),
        fmt(m.singular_values[0] ?? 0),
        fmt(m.effective_rank, 3),
        String(rank90(m)),
        spectrumBars(m.singular_values),
      ];
      if (families) row.splice(1, 0, m.family?.detail ?? "LoRA");
      if (withEnergy) row.push(m.norm > 0 ? energyCurve(m.energy) : "");
      if (alloc) row.push(String(alloc[m.name] ?? 0));
      if (families) row.push(m.family?.detail ?? "B·A");
      return row;
    });
    return formatTable(header, rows);
  };
  // The energy sparkline only when the whole table still fits the terminal.
  const wide = build(true);
  const fits = !opts.width || wide.split("\n").every((l) => [...l].length <= opts.width!);
  const lines: string[] = [];
  lines.push(
    `${visible(r.path)}: ${r.format} adapter, ${r.totals.modules} modules, total rank ${r.totals.rank}, ${r.totals.params.toLocaleString("en-US")} LoRA parameters, ${r.dtype}`,
  );
  lines.push(`scale from: ${r.config_source}${scaleRule(r).includes(": ") ? ` (${scaleRule(r).split(": ")[1]})` : ""}`);
  if (r.kohya_metadata) lines.push(...kohyaLines(r.kohya_metadata));
  for (const n of r.notes) lines.push(`note: ${visible(n)}`);
  lines.push("");
  let table = fits ? wide : build(false);
  if (opts.width)
    table = table
      .split("\n")
      .map((l) => ([...l].length > opts.width! ? [...l].slice(0, opts.width! - 1).join("") + "…" : l))
      .join("\n");
  const [head, ...body] = table.split("\n");
  lines.push(opts.emphasis ? opts.emphasis(head!) : head!, ...body);
  if (r.passthrough.length) lines.push("", visible(`passthrough tensors (${r.passthrough.length}): ${r.passthrough.join(", ")}`));
  if (r.base_dependent?.length) {
    lines.push("", `ΔW needs the base model's weights for ${r.base_dependent.length} module(s) (not in the table; write commands without --base refuse them):`);
    for (const d of r.base_dependent) lines.push(visible(`  ${d.name}: ${d.reason} (${d.tensors.join(", ")})`));
  }
  const gated = r.modules.filter((m) => m.gate);
  if (gated.length) {
    const z = gated.reduce((s, m) => s + m.gate!.zero, 0),
      t = gated.reduce((s, m) => s + m.gate!.total, 0);
    lines.push(`SoRA gates: ${z}/${t} zero (${((100 * z) / Math.max(1, t)).toFixed(1)}% sparsity)`);
  }
  if (r.redistribution) {
    const d = r.redistribution;
    const what = d.budget !== undefined ? `budget ${d.budget} by ${d.score}` : `energy ${d.energy} per module`;
    const total = Object.values(d.ranks).reduce((s, x) => s + x, 0);
    lines.push(`redistribution (${what}): total rank ${total}, retained energy ${(100 * d.retained_energy).toFixed(3)}%`);
  }
  return lines.join("\n");
}

/** Column names of the piped rows (printed with --header). */
export const TSV_COLUMNS = ["module", "shape", "rank", "alpha", "scale", "dtype", "norm", "effective_rank", "singular_values"];

/** Piped output: one row per module: name, out×in, rank, alpha, scale, dtype, norm, effective rank, σ list[, allocated rank]. */
export function renderInspectTsv(r: InspectReport, opts: { header?: boolean } = {}): string {
  const alloc = r.redistribution?.ranks;
  const families = r.modules.some((m) => m.family);
  const header = opts.header ? [...TSV_COLUMNS, ...(alloc ? ["allocated_rank"] : [])] : undefined;
  return formatTsv(
    r.modules.map((m) => {
      const row = [
        m.name,
        `${m.shape[0]}x${m.shape[1]}`,
        String(m.rank),
        String(m.alpha),
        String(m.scale),
        m.dtype,
        String(m.norm),
        String(m.effective_rank),
        m.singular_values.join(","),
      ];
      if (alloc) row.push(String(alloc[m.name] ?? 0));
      if (families) row.push(m.family?.type ?? "lora");
      return row;
    }),
    header && families ? [...header, "family"] : header,
  );
}
