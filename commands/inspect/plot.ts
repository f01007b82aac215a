// `lora inspect --plot out.svg|out.png`: the chart (chart-spec.ts, a Vega spec) rendered headless
// to SVG; PNG is rasterised from that SVG by resvg. Both packages are imported here, lazily, and
// this file is itself imported only when --plot is given (inspect's start-up time matters).
import { extname } from "node:path";
import { writeFileAtomic, type AtomicOptions } from "../../common/atomic.js";
import { UsageError } from "../../common/errors.js";
import { inspectChartSpec } from "./chart-spec.js";
import type { InspectReport } from "./run.js";

export type PlotFormat = "svg" | "png";

/** The chart format from the output name; anything but .svg / .png is a usage error. */
export function plotFormat(path: string): PlotFormat {
  if (path === "-") throw new UsageError("--plot needs a file name ending in .svg or .png (stdout carries the table)");
  const ext = extname(path).toLowerCase();
  if (ext === ".svg") return "svg";
  if (ext === ".png") return "png";
  throw new UsageError(`--plot ${path}: the chart format comes from the extension; use .svg or .png`);
}

/** Render the chart: SVG text from vega (headless), or PNG bytes rasterised from it by resvg. */
export async function renderChart(r: InspectReport, format: PlotFormat): Promise<Uint8Array> {
  const vega = await import("vega");
  const view = new vega.View(vega.parse(inspectChartSpec(r) as never), { renderer: "none" });
  let svg: string;
  try {
    svg = await view.toSVG();
  } finally {
    view.finalize();
  }
  if (format === "svg") return new TextEncoder().encode(svg);
  const { Resvg } = await import("@resvg/resvg-js");
  const png = new Resvg(svg, {
    fitTo: { mode: "zoom", value: 2 },
    background: "white",
    font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" },
  })
    .render()
    .asPng();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

/** Render and write the chart atomically (never over an input; an existing file only with --force). */
export async function writePlot(path: string, r: InspectReport, atomic: AtomicOptions): Promise<void> {
  const bytes = await renderChart(r, plotFormat(path));
  await writeFileAtomic(path, (sink) => sink.write(bytes), atomic);
}
