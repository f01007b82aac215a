// The chart of `lora inspect --plot` as a Vega spec (plot.ts renders it): every module's spectrum
// (σᵢ/σ₁, log scale), the cumulative energy curves (per module, and over the whole adapter as a
// function of the total rank) and, with --budget/--energy, the redistribution (ranks per module
// before/after).
import type { InspectReport } from "./run.js";
import { visible } from "../support/output.js";

/** Relative singular values below this are numerically zero and left off the log scale. */
const RATIO_FLOOR = 1e-10;
/** More components than this in the adapter-wide energy curve are thinned (the curve is smooth). */
const MAX_CURVE_POINTS = 2000;
/** With more modules than this the colours are a gradient over file order, without a legend. */
const MAX_LEGEND = 20;
/** With more modules than this the redistribution panel drops its per-module labels. */
const MAX_BAR_LABELS = 48;

const PANEL_W = 380;
const PANEL_H = 230;

type Row = Record<string, string | number>;

/** Adapter-wide cumulative energy: all σ² sorted descending, as a function of the total rank K. */
function globalEnergy(r: InspectReport): { K: number; e: number }[] {
  const all: number[] = [];
  for (const m of r.modules) for (const s of m.singular_values) all.push(s * s);
  all.sort((a, b) => b - a);
  const total = all.reduce((s, x) => s + x, 0);
  const pts: { K: number; e: number }[] = [{ K: 0, e: 0 }];
  if (!(total > 0)) return pts;
  const step = Math.max(1, Math.ceil(all.length / MAX_CURVE_POINTS));
  let acc = 0;
  for (let k = 0; k < all.length; k++) {
    acc += all[k]!;
    if ((k + 1) % step === 0 || k === all.length - 1) pts.push({ K: k + 1, e: acc / total });
  }
  return pts;
}

/** One bar per module of the allocation panel: from 0 to the field `name` ("before" or "after"). */
function rankBar(name: string, fill: string, place: Record<string, unknown>, description: string): Record<string, unknown> {
  const enter = { x: { scale: "x", value: 0 }, x2: { scale: "x", field: name }, ...place, fill: { value: fill }, description: { signal: description } };
  return { type: "rect", name, from: { data: "alloc" }, encode: { enter } };
}

/** A mark of the global energy curve drawn at (K, e), with its own encoding besides. */
function atEnergyCurve(type: string, data: string, enter: Record<string, unknown>): Record<string, unknown> {
  return { type, from: { data }, encode: { enter: { x: { scale: "x", field: "K" }, y: { scale: "y", field: "e" }, ...enter } } };
}

function firstReaching(curve: { K: number; e: number }[], f: number): { K: number; e: number } | undefined {
  return curve.find((p) => p.e >= f - 1e-12);
}

/** The dotted prefix every module name shares ("distilbert.transformer.layer."), dropped from chart labels. */
export function commonPrefix(names: string[]): string {
  if (names.length < 2) return "";
  const split = names.map((n) => n.split("."));
  const shortest = Math.min(...split.map((p) => p.length));
  let k = 0;
  while (k < shortest - 1 && split.every((p) => p[k] === split[0]![k])) k++;
  return k ? split[0]!.slice(0, k).join(".") + "." : "";
}

const pct = (x: number) => `${(100 * x).toFixed(x >= 0.9995 ? 2 : 1)}%`;

/** The Vega spec for an inspect report (pure: no vega import needed to build it). */
export function inspectChartSpec(r: InspectReport): Record<string, unknown> {
  const n = r.modules.length;
  const maxRank = Math.max(1, ...r.modules.map((m) => m.rank));
  const prefix = commonPrefix(r.modules.map((m) => m.name));
  // Labels are the file's own text: control characters (which XML forbids in an SVG) shown as \u{…}.
  const label = (name: string) => visible(name.slice(prefix.length));
  const spectra: Row[] = [];
  const energy: Row[] = [];
  let zeroModules = 0;
  r.modules.forEach((m, idx) => {
    const top = m.singular_values[0] ?? 0;
    if (!(top > 0)) {
      zeroModules++;
      return;
    }
    m.singular_values.forEach((s, i) => {
      const ratio = s / top;
      if (ratio >= RATIO_FLOOR) spectra.push({ module: visible(m.name), label: label(m.name), idx, i: i + 1, ratio, sigma: s });
    });
    energy.push({ module: visible(m.name), label: label(m.name), idx, k: 0, e: 0 });
    m.energy.forEach((e, i) => energy.push({ module: visible(m.name), label: label(m.name), idx, k: i + 1, e }));
  });
  const curve = globalEnergy(r);
  const d = r.redistribution;
  const allocTotal = d ? Object.values(d.ranks).reduce((s, x) => s + x, 0) : 0;
  const marksOnCurve: Row[] = [];
  for (const f of [0.9, 0.99]) {
    const p = firstReaching(curve, f);
    if (p) marksOnCurve.push({ K: p.K, e: p.e, label: `${Math.round(f * 100)}% at K=${p.K}`, kind: "ref" });
  }
  if (d)
    marksOnCurve.push({
      K: allocTotal,
      e: d.retained_energy,
      label: `${d.budget !== undefined ? "budget" : "energy"}: K=${allocTotal}, ${pct(d.retained_energy)}`,
      kind: "alloc",
    });

  const legend = n <= MAX_LEGEND;
  const colour = legend
    ? { name: "color", type: "ordinal", domain: r.modules.map((m) => label(m.name)), range: { scheme: "tableau20" } }
    : { name: "color", type: "linear", domain: [0, Math.max(1, n - 1)], range: { scheme: "viridis" } };
  const strokeOf = legend ? { scale: "color", field: "label" } : { scale: "color", field: "idx" };
  const lineOpacity = n > 60 ? 0.45 : 0.85;

  /** One group per module (a facet), holding that module's line; described by its name. */
  const perModule = (data: string, x: string, y: string, withPoints: boolean) => ({
    type: "group",
    name: `${data}-modules`,
    from: { facet: { name: `${data}_m`, data, groupby: ["module", "label", "idx"] } },
    encode: { enter: { description: { signal: `'${data} of ' + datum.module` } } },
    marks: [
      {
        type: "line",
        from: { data: `${data}_m` },
        encode: {
          enter: {
            x: { scale: "x", field: x },
            y: { scale: "y", field: y },
            stroke: strokeOf,
            strokeWidth: { value: 1.5 },
            strokeOpacity: { value: lineOpacity },
            interpolate: { value: "linear" },
          },
        },
      },
      ...(withPoints && maxRank <= 64
        ? [
            {
              type: "symbol",
              from: { data: `${data}_m` },
              encode: {
                enter: { x: { scale: "x", field: x }, y: { scale: "y", field: y }, fill: strokeOf, size: { value: 14 }, fillOpacity: { value: lineOpacity } },
              },
            },
          ]
        : []),
    ],
  });

  const panelTitle = (text: string, subtitle?: string) => ({
    text,
    anchor: "start",
    fontSize: 13,
    ...(subtitle ? { subtitle, subtitleFontSize: 10, subtitleColor: "#555" } : {}),
  });

  const spectrumPanel = {
    type: "group",
    name: "panel-spectrum",
    title: panelTitle(
      "Singular-value spectrum per module",
      `σᵢ/σ₁ of ΔW = s·B·A, log scale${zeroModules ? ` (${zeroModules} all-zero module${zeroModules > 1 ? "s" : ""} left out)` : ""}`,
    ),
    encode: { enter: { width: { value: PANEL_W }, height: { value: PANEL_H }, stroke: { value: "#ccc" } } },
    scales: [
      { name: "x", type: "linear", domain: [1, Math.max(2, maxRank)], range: [0, PANEL_W], nice: false, zero: false },
      { name: "y", type: "log", domain: { data: "spectra", field: "ratio" }, range: [PANEL_H, 0], nice: true },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: "index i", tickMinStep: 1, format: "d", grid: false },
      { orient: "left", scale: "y", title: "σᵢ / σ₁", grid: true, gridOpacity: 0.3, format: "~g" },
    ],
    marks: spectra.length ? [perModule("spectra", "i", "ratio", true)] : [],
  };

  const energyPanel = {
    type: "group",
    name: "panel-energy",
    title: panelTitle(
      "Cumulative energy per module",
      d?.energy !== undefined ? `share of Σσᵢ² held by the top k components; dashed: --energy ${d.energy}` : "share of Σσᵢ² held by the top k components",
    ),
    encode: { enter: { width: { value: PANEL_W }, height: { value: PANEL_H }, stroke: { value: "#ccc" } } },
    scales: [
      { name: "x", type: "linear", domain: [0, maxRank], range: [0, PANEL_W], nice: false, zero: true },
      { name: "y", type: "linear", domain: [0, 1], range: [PANEL_H, 0], nice: false },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: "rank k", tickMinStep: 1, format: "d" },
      { orient: "left", scale: "y", title: "energy kept", format: "%", grid: true, gridOpacity: 0.3 },
    ],
    marks: [
      ...(energy.length ? [perModule("energy", "k", "e", false)] : []),
      ...(d?.energy !== undefined
        ? [
            {
              type: "rule",
              encode: {
                enter: {
                  x: { value: 0 },
                  x2: { value: PANEL_W },
                  y: { scale: "y", value: d.energy },
                  stroke: { value: "#d62728" },
                  strokeDash: { value: [5, 3] },
                },
              },
            },
          ]
        : []),
    ],
  };

  const totalRank = r.totals.rank;
  const globalPanel = {
    type: "group",
    name: "panel-global-energy",
    title: panelTitle("Energy kept vs total rank (whole adapter)", `best K components over all modules, by σ²; total rank now ${totalRank}`),
    encode: { enter: { width: { value: PANEL_W }, height: { value: PANEL_H }, stroke: { value: "#ccc" } } },
    scales: [
      { name: "x", type: "linear", domain: [0, Math.max(1, totalRank)], range: [0, PANEL_W], nice: false, zero: true },
      { name: "y", type: "linear", domain: [0, 1], range: [PANEL_H, 0], nice: false },
    ],
    axes: [
      { orient: "bottom", scale: "x", title: "total rank K", format: "d", tickMinStep: 1 },
      { orient: "left", scale: "y", title: "energy kept", format: "%", grid: true, gridOpacity: 0.3 },
    ],
    marks: [
      atEnergyCurve("area", "global", { y2: { scale: "y", value: 0 }, fill: { value: "#4c78a8" }, fillOpacity: { value: 0.15 } }),
      atEnergyCurve("line", "global", { stroke: { value: "#4c78a8" }, strokeWidth: { value: 2 } }),
      atEnergyCurve("rule", "curveMarks", {
        y2: { scale: "y", value: 0 },
        stroke: { signal: "datum.kind === 'alloc' ? '#d62728' : '#999'" },
        strokeDash: { value: [4, 3] },
      }),
      atEnergyCurve("symbol", "curveMarks", { size: { value: 40 }, fill: { signal: "datum.kind === 'alloc' ? '#d62728' : '#555'" } }),
      {
        // reference levels: written up along their dashed rule, from the axis
        type: "text",
        from: { data: "curveMarks" },
        encode: {
          enter: {
            x: { scale: "x", field: "K", offset: -3 },
            y: { value: PANEL_H - 4 },
            angle: { value: -90 },
            text: { signal: "datum.kind === 'ref' ? datum.label : ''" },
            fontSize: { value: 10 },
            fill: { value: "#555" },
            align: { value: "left" },
            baseline: { value: "bottom" },
          },
        },
      },
      {
        // the previewed allocation: beside its point
        type: "text",
        from: { data: "curveMarks" },
        encode: {
          enter: {
            x: { scale: "x", field: "K", offset: { signal: `datum.K > ${0.6 * Math.max(1, totalRank)} ? -6 : 6` } },
            y: { scale: "y", field: "e", offset: 14 },
            text: { signal: "datum.kind === 'alloc' ? datum.label : ''" },
            fontSize: { value: 10 },
            fill: { value: "#d62728" },
            align: { signal: `datum.K > ${0.6 * Math.max(1, totalRank)} ? 'right' : 'left'` },
          },
        },
      },
    ],
  };

  const panels: Record<string, unknown>[] = [spectrumPanel, energyPanel, globalPanel];
  const data: Record<string, unknown>[] = [
    { name: "spectra", values: spectra },
    { name: "energy", values: energy },
    { name: "global", values: curve },
    { name: "curveMarks", values: marksOnCurve },
  ];

  if (d) {
    const alloc: Row[] = r.modules.map((m, idx) => ({ module: visible(m.name), label: label(m.name), idx, before: m.rank, after: d.ranks[m.name] ?? 0 }));
    data.push({ name: "alloc", values: alloc });
    const labels = n <= MAX_BAR_LABELS;
    const band = labels ? 14 : Math.max(3, Math.min(8, Math.floor(600 / Math.max(1, n))));
    const barsHeight = Math.max(60, band * n);
    const what = d.budget !== undefined ? `--budget ${d.budget} by ${d.score}` : `--energy ${d.energy} per module`;
    panels.push({
      type: "group",
      name: "panel-redistribution",
      title: panelTitle(`Redistribution (${what})`, `total rank ${totalRank} → ${allocTotal}, energy kept ${pct(d.retained_energy)}`),
      encode: { enter: { width: { value: PANEL_W }, height: { value: barsHeight }, stroke: { value: "#ccc" } } },
      scales: [
        { name: "x", type: "linear", domain: [0, maxRank], range: [0, PANEL_W], nice: false, zero: true },
        { name: "y", type: "band", domain: r.modules.map((m) => label(m.name)), range: [0, barsHeight], paddingInner: 0.15 },
        { name: "ba", type: "ordinal", domain: ["rank now", "after"], range: ["#d9d9d9", "#4c78a8"] },
      ],
      axes: [
        { orient: "top", scale: "x", title: "rank", format: "d", tickMinStep: 1, grid: true, gridOpacity: 0.3 },
        labels
          ? { orient: "left", scale: "y", labelFontSize: 9, labelLimit: 400, ticks: false, domain: false }
          : { orient: "left", scale: "y", labels: false, ticks: false, title: `${n} modules, in file order` },
      ],
      legends: [{ fill: "ba", orient: "bottom", direction: "horizontal", labelFontSize: 10 }],
      marks: [
        rankBar("before", "#d9d9d9", { y: { scale: "y", field: "label" }, height: { scale: "y", band: 1 } }, "datum.module + ': rank ' + datum.before"),
        rankBar(
          "after",
          "#4c78a8",
          { y: { scale: "y", field: "label", offset: { signal: `bandwidth('y') * 0.2` } }, height: { scale: "y", band: 0.6 } },
          "datum.module + ': ' + datum.before + ' → ' + datum.after",
        ),
        ...(labels
          ? [
              {
                type: "text",
                from: { data: "alloc" },
                encode: {
                  enter: {
                    x: { scale: "x", field: "after", offset: 3 },
                    y: { scale: "y", field: "label", band: 0.5 },
                    baseline: { value: "middle" },
                    text: { signal: "datum.after === datum.before ? '' : datum.after" },
                    fontSize: { value: 9 },
                    fill: { value: "#333" },
                  },
                },
              },
            ]
          : []),
      ],
    });
  }

  const legends = legend
    ? [
        {
          stroke: "color",
          title: prefix ? `module (${visible(prefix)}…)` : "module",
          orient: "right",
          symbolType: "stroke",
          labelFontSize: 10,
          labelLimit: 480,
          titleFontSize: 11,
          titleLimit: 480,
        },
      ]
    : [{ fill: "color", type: "gradient", title: "module (file order)", orient: "right", direction: "vertical", gradientLength: 160, format: "d" }];

  return {
    $schema: "https://vega.github.io/schema/vega/v6.json",
    description: `lora inspect chart of ${visible(r.path)}`,
    background: "white",
    padding: 16,
    autosize: "pad",
    config: { font: "DejaVu Sans, Helvetica, Arial, sans-serif" },
    title: {
      text: `lora inspect: ${visible(r.path)}`,
      subtitle: `${r.format} adapter, ${n} modules, total rank ${totalRank}, ${r.totals.params.toLocaleString("en-US")} LoRA parameters, ${r.dtype}`,
      anchor: "start",
      fontSize: 15,
      subtitleFontSize: 11,
      offset: 14,
    },
    layout: { columns: 2, padding: { row: 36, column: 48 }, bounds: "full", align: "none" },
    data,
    scales: [colour],
    legends,
    marks: panels,
  };
}
