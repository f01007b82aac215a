// `lora inspect --tui`: browse the modules of an inspected adapter, sort them, look at one
// module's spectrum and energy, and preview a --budget allocation (what `truncate --budget K`
// would keep) while changing K. Built with ink; this file (and so ink and React) is imported
// only when --tui is given.
import { useEffect, useMemo, useRef, useState } from "react";
import { Box, Text, render, useApp, useInput, useStdout } from "ink";
import { allocate, type Score } from "../../surgery/truncate/allocate.js";
import { fmt } from "../support/output.js";
import type { Ctx } from "../support/context.js";
import { energyCurve } from "./render.js";
import type { InspectReport, ModuleReport } from "./run.js";

export interface TuiOptions {
  score: Score;
  minRank: number;
  rho: number;
  /** Starting budget; default: the --budget/--energy total if given, else half the total rank. */
  budget?: number;
}

export type SortKey = "file" | "norm" | "energy" | "name";

export interface TuiProps {
  report: InspectReport;
  options: TuiOptions;
  /** Terminal size; default: the stdout ink renders to (100×24 when it has none). */
  width?: number;
  height?: number;
}

interface Preview {
  ranks: Map<string, number>;
  retained: number;
  total: number;
  error?: string;
}

const BARS = " ▁▂▃▄▅▆▇█";

/** The module's share of its own energy kept at rank k. */
export function keptEnergy(m: ModuleReport, k: number): number {
  if (k <= 0) return m.energy.length && m.norm > 0 ? 0 : 1;
  return m.energy[Math.min(k, m.energy.length) - 1] ?? 1;
}

/** The smallest and largest useful budgets: the --min-rank floors, and every rank kept. */
export function budgetBounds(r: InspectReport, minRank: number): [number, number] {
  const lo = r.modules.reduce((s, m) => s + Math.min(minRank, m.rank), 0);
  return [lo, Math.max(lo, r.totals.rank)];
}

export function initialBudget(r: InspectReport, o: TuiOptions): number {
  const [lo, hi] = budgetBounds(r, o.minRank);
  const fromReport = r.redistribution ? Object.values(r.redistribution.ranks).reduce((s, x) => s + x, 0) : undefined;
  const b = o.budget ?? fromReport ?? Math.round(r.totals.rank / 2);
  return Math.min(hi, Math.max(lo, b));
}

export function previewBudget(r: InspectReport, o: TuiOptions, budget: number): Preview {
  try {
    const a = allocate(
      r.modules.map((m) => ({ name: m.name, sigma: m.singular_values, in: m.shape[1], out: m.shape[0], rank: m.rank })),
      { budget, score: o.score, minRank: o.minRank, rho: o.rho },
    );
    return { ranks: a.ranks, retained: a.retainedEnergy, total: [...a.ranks.values()].reduce((s, x) => s + x, 0) };
  } catch (e) {
    return { ranks: new Map(), retained: 0, total: 0, error: (e as Error).message };
  }
}

export function sortModules(mods: ModuleReport[], key: SortKey, desc: boolean, preview: Preview): ModuleReport[] {
  const order = new Map(mods.map((m, i) => [m.name, i]));
  const val = (m: ModuleReport): number | string => {
    switch (key) {
      case "norm":
        return m.norm;
      case "energy":
        return keptEnergy(m, preview.ranks.get(m.name) ?? 0);
      case "name":
        return m.name;
      default:
        return order.get(m.name)!;
    }
  };
  const sorted = [...mods].sort((a, b) => {
    const x = val(a),
      y = val(b);
    const c = typeof x === "string" ? x.localeCompare(y as string) : (x as number) - (y as number);
    return c !== 0 ? c : order.get(a.name)! - order.get(b.name)!;
  });
  return desc ? sorted.reverse() : sorted;
}

/**
 * Shorten a long module name to `w` columns, keeping its indices: the longest dotted segments
 * (never the last) are abbreviated first ("transformer_blocks" → "t…"); a name without dots, or
 * one that still does not fit, loses its middle.
 */
export function clip(s: string, w: number): string {
  const len = (x: string) => [...x].length;
  if (len(s) <= w) return s;
  const segs = s.split(".");
  while (segs.length > 1) {
    const excess = len(segs.join(".")) - w;
    if (excess <= 0) return segs.join(".");
    let at = -1;
    for (let i = 0; i < segs.length - 1; i++) if (!segs[i]!.endsWith("…") && len(segs[i]!) > 2 && (at < 0 || len(segs[i]!) > len(segs[at]!))) at = i;
    if (at < 0) break;
    const cps = [...segs[at]!];
    segs[at] = cps.slice(0, Math.max(1, cps.length - excess - 1)).join("") + "…";
  }
  const cps = [...segs.join(".")];
  if (cps.length <= w) return cps.join("");
  if (w <= 1) return cps.slice(0, Math.max(0, w)).join("");
  const head = Math.floor((w - 1) * 0.35);
  return cps.slice(0, head).join("") + "…" + cps.slice(cps.length - (w - 1 - head)).join("");
}

function pad(s: string, w: number, right = false): string {
  const n = [...s].length;
  if (n >= w) return s;
  return right ? " ".repeat(w - n) + s : s + " ".repeat(w - n);
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/**
 * A vertical bar chart of σᵢ/σ₁ in `rows` text rows (top row first), one column per value, each
 * `cw` characters wide (a bar and a gap when there is room), fitting `maxWidth`.
 */
export function spectrumColumns(s: number[], rows: number, maxWidth: number): { lines: string[]; cw: number } {
  const top = s[0] ?? 0;
  const cw = Math.max(1, Math.min(4, Math.floor(maxWidth / Math.max(1, s.length))));
  const vals = s.slice(0, Math.floor(maxWidth / cw)).map((x) => (top > 0 ? (x / top) * rows : 0));
  const cell = (c: string) => (cw === 1 ? c : c.repeat(cw - 1) + " ");
  const lines: string[] = [];
  for (let row = rows; row >= 1; row--) {
    lines.push(vals.map((v) => cell(v >= row ? "█" : v > row - 1 ? BARS[Math.max(1, Math.round((v - (row - 1)) * 8))]! : " ")).join(""));
  }
  return { lines, cw };
}

export interface TuiState {
  selected: string;
  sort: { key: SortKey; desc: boolean };
  budget: number;
}

export function initialState(r: InspectReport, o: TuiOptions): TuiState {
  return { selected: r.modules[0]?.name ?? "", sort: { key: "file", desc: false }, budget: initialBudget(r, o) };
}

function budgetStep(lo: number, hi: number): number {
  return Math.max(1, Math.round((hi - lo) / 20));
}

/**
 * One key press: a character, or "up" "down" "pageup" "pagedown" "home" "end" "escape". Returns the
 * new state, or null to quit.
 */
export function applyKey(r: InspectReport, o: TuiOptions, st: TuiState, k: string, page = 10): TuiState | null {
  const [lo, hi] = budgetBounds(r, o.minRank);
  const setBudget = (b: number) => ({ ...st, budget: Math.min(hi, Math.max(lo, b)) });
  const moveBy = (delta: number | "first" | "last") => {
    const mods = sortModules(r.modules, st.sort.key, st.sort.desc, previewBudget(r, o, st.budget));
    const at = Math.max(
      0,
      mods.findIndex((m) => m.name === st.selected),
    );
    const i = delta === "first" ? 0 : delta === "last" ? mods.length - 1 : Math.min(mods.length - 1, Math.max(0, at + delta));
    return mods[i] ? { ...st, selected: mods[i]!.name } : st;
  };
  switch (k) {
    case "q":
    case "escape":
      return null;
    case "j":
    case "down":
      return moveBy(1);
    case "k":
    case "up":
      return moveBy(-1);
    case " ":
    case "pagedown":
      return moveBy(page);
    case "pageup":
      return moveBy(-page);
    case "g":
    case "home":
      return moveBy("first");
    case "G":
    case "end":
      return moveBy("last");
    case "+":
    case "=":
      return setBudget(st.budget + 1);
    case "-":
    case "_":
      return setBudget(st.budget - 1);
    case "]":
      return setBudget(st.budget + budgetStep(lo, hi));
    case "[":
      return setBudget(st.budget - budgetStep(lo, hi));
    default: {
      // First press sorts the useful way round (largest norm, least energy kept first); again reverses.
      const keys: Record<string, [SortKey, boolean]> = { n: ["norm", true], e: ["energy", false], s: ["name", false], o: ["file", false] };
      const s = keys[k];
      if (!s) return st;
      return { ...st, sort: st.sort.key === s[0] ? { key: s[0], desc: !st.sort.desc } : { key: s[0], desc: s[1] } };
    }
  }
}

const SORT_LABEL: Record<SortKey, string> = { file: "file order", norm: "‖ΔW‖", energy: "energy kept", name: "name" };

export function InspectApp({ report, options, width, height }: TuiProps) {
  const { exit } = useApp();
  const { stdout } = useStdout();
  const [size, setSize] = useState({ w: width ?? stdout?.columns ?? 100, h: height ?? stdout?.rows ?? 24 });
  useEffect(() => {
    if (width !== undefined || height !== undefined || !stdout) return;
    const onResize = () => setSize({ w: stdout.columns ?? 100, h: stdout.rows ?? 24 });
    stdout.on("resize", onResize);
    return () => {
      stdout.off("resize", onResize);
    };
  }, [stdout, width, height]);

  const [state, setState] = useState<TuiState>(() => initialState(report, options));
  // Keys may arrive faster than React re-renders: fold them into the latest state, not a stale one.
  const latest = useRef(state);
  latest.current = state;
  const { budget, sort } = state;
  const [lo, hi] = budgetBounds(report, options.minRank);
  const preview = useMemo(() => previewBudget(report, options, budget), [report, options, budget]);
  const mods = useMemo(() => sortModules(report.modules, sort.key, sort.desc, preview), [report, sort, preview]);
  const sel = Math.max(
    0,
    mods.findIndex((m) => m.name === state.selected),
  );
  const cur = mods[sel];
  const listHeight = Math.max(3, size.h - 10);
  const step = budgetStep(lo, hi);

  useInput((input, key) => {
    // A key, or a chunk of typed/pasted characters handled one by one ("jj+" arrives as one string).
    const named = key.downArrow
      ? "down"
      : key.upArrow
        ? "up"
        : key.pageDown
          ? "pagedown"
          : key.pageUp
            ? "pageup"
            : key.home
              ? "home"
              : key.end
                ? "end"
                : key.escape
                  ? "escape"
                  : null;
    let st: TuiState | null = latest.current;
    for (const k of named ? [named] : [...input]) {
      st = applyKey(report, options, st, k, listHeight);
      if (st === null) return exit();
    }
    if (st !== latest.current) {
      latest.current = st;
      setState(st);
    }
  });

  // List pane: name, rank, → kept rank, norm, energy kept; scrolled to keep the selection in view.
  // The list is as wide as the longest name needs, leaving the detail pane at least 34 columns.
  const longest = Math.max(6, ...report.modules.map((m) => [...m.name].length));
  const listW = Math.max(40, Math.min(longest + 34, size.w - 35));
  const nameW = Math.max(6, listW - 34);
  const first = Math.max(0, Math.min(sel - Math.floor(listHeight / 2), mods.length - listHeight));
  const shown = mods.slice(first, first + listHeight);
  const header = `  ${pad("module", nameW)} ${pad("rank", 4, true)} ${pad("→k", 4, true)} ${pad("norm", 9, true)} ${pad("kept", 7, true)}`;

  const detailW = Math.max(20, size.w - listW - 3);
  const k = cur ? (preview.ranks.get(cur.name) ?? 0) : 0;
  const chartRows = Math.max(3, Math.min(8, size.h - 16));
  const chart = cur ? spectrumColumns(cur.singular_values, chartRows, Math.max(4, detailW - 4)) : { lines: [], cw: 1 };
  const what = options.score === "energy" ? "energy" : options.score;
  const d = report.redistribution;

  return (
    <Box flexDirection="column" width={size.w}>
      <Text>
        <Text bold>lora inspect</Text> {clip(report.path, Math.max(10, size.w - 70))} {report.format} · {report.modules.length} modules · total rank{" "}
        {report.totals.rank} · {report.dtype}
      </Text>
      <Box flexDirection="row">
        <Box flexDirection="column" width={listW} borderStyle="single" paddingX={0}>
          <Text bold>
            modules{" "}
            <Text dimColor>
              · sorted by {SORT_LABEL[sort.key]}
              {sort.key === "file" ? "" : sort.desc ? " ↓" : " ↑"}
            </Text>
          </Text>
          <Text dimColor>{header}</Text>
          {shown.map((m) => {
            const kk = preview.ranks.get(m.name) ?? 0;
            const line = `${m.name === cur?.name ? "›" : " "} ${pad(clip(m.name, nameW), nameW)} ${pad(String(m.rank), 4, true)} ${pad(String(kk), 4, true)} ${pad(fmt(m.norm), 9, true)} ${pad(pct(keptEnergy(m, kk)), 7, true)}`;
            return m.name === cur?.name ? (
              <Text key={m.name} inverse>
                {line}
              </Text>
            ) : (
              <Text key={m.name} {...(kk < m.rank ? {} : { dimColor: true })}>
                {line}
              </Text>
            );
          })}
          {mods.length > listHeight ? (
            <Text dimColor>
              {" "}
              {first + 1}–{first + shown.length} of {mods.length}
            </Text>
          ) : null}
        </Box>
        <Box flexDirection="column" width={detailW + 2} borderStyle="single" paddingX={1}>
          {cur ? (
            <>
              <Text bold>{clip(cur.name, detailW - 2)}</Text>
              <Text>
                {cur.shape[0]}×{cur.shape[1]} · rank {cur.rank} · α {fmt(cur.alpha)} · scale {fmt(cur.scale)} · {cur.dtype}
              </Text>
              <Text>
                ‖ΔW‖ {fmt(cur.norm)} · σ₁ {fmt(cur.singular_values[0] ?? 0)} · eff.rank {fmt(cur.effective_rank, 3)}
              </Text>
              <Text> </Text>
              <Text dimColor>
                σᵢ/σ₁ (kept: {k} of {cur.rank})
              </Text>
              {chart.lines.map((row, i) => (
                <Text key={i}>
                  <Text color="cyan">{[...row].slice(0, k * chart.cw).join("")}</Text>
                  <Text dimColor>{[...row].slice(k * chart.cw).join("")}</Text>
                </Text>
              ))}
              <Text>
                energy {energyCurve(cur.energy, Math.max(4, detailW - 28))} kept at {k}: {pct(keptEnergy(cur, k))}
              </Text>
              <Text dimColor>
                σ{" "}
                {cur.singular_values
                  .slice(0, 6)
                  .map((x) => fmt(x))
                  .join(" ")}
                {cur.singular_values.length > 6 ? " …" : ""}
              </Text>
            </>
          ) : (
            <Text>no modules</Text>
          )}
        </Box>
      </Box>
      <Text>
        <Text bold>budget K={budget}</Text> by {what}
        {preview.error ? (
          <Text color="red"> {preview.error}</Text>
        ) : (
          <Text>
            {" "}
            total rank {report.totals.rank} → {preview.total} energy kept {pct(preview.retained)}
          </Text>
        )}
        {d?.energy !== undefined ? <Text dimColor> (from --energy {d.energy})</Text> : null}
        <Text dimColor>
          {" "}
          lora truncate … --budget {budget}
          {options.score !== "energy" ? ` --score ${options.score}` : ""}
        </Text>
      </Text>
      <Text dimColor>↑↓ j k move · sort: n norm, e energy kept, s name, o file order · + - budget, [ ] by {step} · q quit</Text>
    </Box>
  );
}

/** Run the browser on the terminal until the user quits (q, Esc or Ctrl-C). */
export async function runTui(report: InspectReport, options: TuiOptions, ctx: Ctx): Promise<void> {
  const app = render(<InspectApp report={report} options={options} />, {
    stdin: ctx.stdin as NodeJS.ReadStream,
    stdout: ctx.stdout as NodeJS.WriteStream,
    stderr: ctx.stderr as NodeJS.WriteStream,
    exitOnCtrlC: true,
    patchConsole: false,
  });
  await app.waitUntilExit();
}
