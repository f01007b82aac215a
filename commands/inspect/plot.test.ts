// inspect --plot: the Vega chart of spectra, energy and the redistribution, as SVG and PNG, and the
// unicode energy column of the terminal table (the piped TSV stays 9 columns).
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixturesDir, needsReal, realDir } from "../../test/paths.js";
import { jsBackend } from "../../linalg/js/index.js";
import { LoraError } from "../../common/errors.js";
import { runInspect, type InspectReport } from "./run.js";
import { commonPrefix, inspectChartSpec } from "./chart-spec.js";
import { plotFormat, renderChart, writePlot } from "./plot.js";
import { energyCurve, renderInspectTable, renderInspectTsv } from "./render.js";
import { tempDir } from "../../test/temp-dir.js";

const ex = join(fixturesDir, "example");
const base = { score: "energy" as const, minRank: 0, rho: 2 };
const inspect = (input: string, extra: { budget?: number; energy?: number } = {}) => runInspect({ input, ...base, ...extra }, { backend: jsBackend });

/** Well-formed enough: every tag closed in order (no XML parser in the dependencies). */
function assertBalancedXml(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([A-Za-z][\w:-]*)[^>]*?(\/?)>/g)) {
    const [, close, name, self] = m;
    if (self) continue;
    if (close) assert.equal(stack.pop(), name, `</${name}> closes the open element`);
    else stack.push(name!);
  }
  assert.deepEqual(stack, [], "every element closed");
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const count = (s: string, needle: string) => s.split(needle).length - 1;

test("SVG: well formed, one group per module in the spectrum and energy panels, titles", async () => {
  const r = await inspect(ex);
  const svg = decode(await renderChart(r, "svg"));
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assertBalancedXml(svg);
  assert.equal(count(svg, 'aria-label="spectra of '), r.modules.length);
  assert.equal(count(svg, 'aria-label="energy of '), r.modules.length);
  for (const m of r.modules) assert.ok(svg.includes(`spectra of ${m.name}"`), m.name);
  for (const t of ["Singular-value spectrum per module", "Cumulative energy per module", "Energy kept vs total rank"]) assert.ok(svg.includes(t), t);
  assert.ok(!svg.includes("Redistribution"), "no redistribution panel without --budget/--energy");
  assert.ok(!/NaN|Infinity/.test(svg), "no NaN coordinates");
});

test("SVG with --budget: the redistribution panel, one before/after bar per module, the budget on the curve", async () => {
  const r = await inspect(ex, { budget: 20 });
  const svg = decode(await renderChart(r, "svg"));
  assertBalancedXml(svg);
  assert.ok(svg.includes("Redistribution (--budget 20 by energy)"));
  for (const m of r.modules) {
    assert.ok(svg.includes(`aria-label="${m.name}: rank ${m.rank}"`), `before bar of ${m.name}`);
    assert.ok(svg.includes(`aria-label="${m.name}: ${m.rank} → ${r.redistribution!.ranks[m.name]}"`), `after bar of ${m.name}`);
  }
  assert.ok(svg.includes("budget: K=20"));
  const e = await inspect(ex, { energy: 0.9 });
  const svg2 = decode(await renderChart(e, "svg"));
  assert.ok(svg2.includes("Redistribution (--energy 0.9 per module)"));
  assert.ok(svg2.includes("dashed: --energy 0.9"));
});

test("PNG: the PNG signature and a plausible size", async () => {
  const r = await inspect(ex, { budget: 16 });
  const png = await renderChart(r, "png");
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const view = new DataView(png.buffer, png.byteOffset);
  assert.ok(view.getUint32(16) > 1000 && view.getUint32(20) > 500, "IHDR width×height");
  assert.ok(png.byteLength > 20_000);
});

test("many modules (real SD 1.5 LoRA, 128 modules): gradient colours, no per-module bar labels, still one group per module", {
  skip: needsReal("sd15-pokemon"),
}, async () => {
  const r = await inspect(join(realDir, "sd15-pokemon"), { budget: 200 });
  const spec = inspectChartSpec(r) as { legends: { type?: string }[] };
  assert.equal(spec.legends[0]!.type, "gradient");
  const svg = decode(await renderChart(r, "svg"));
  assertBalancedXml(svg);
  assert.equal(count(svg, 'aria-label="spectra of '), 128);
  assert.ok(svg.includes("128 modules, in file order"));
});

test("an all-zero module is left off the log scale and said so", async () => {
  const r = await inspect(ex);
  const z: InspectReport = {
    ...r,
    modules: r.modules.map((m, i) => (i === 0 ? { ...m, singular_values: m.singular_values.map(() => 0), energy: m.energy.map(() => 1), norm: 0 } : m)),
  };
  const svg = decode(await renderChart(z, "svg"));
  assert.ok(svg.includes("1 all-zero module left out"));
  assert.equal(count(svg, 'aria-label="spectra of '), r.modules.length - 1);
});

test("plotFormat: .svg/.png (any case), everything else a usage error", () => {
  assert.equal(plotFormat("a.svg"), "svg");
  assert.equal(plotFormat("dir/b.PNG"), "png");
  for (const bad of ["a.pdf", "a", "-", "a.safetensors"]) {
    assert.throws(
      () => plotFormat(bad),
      (e: unknown) => e instanceof LoraError && e.exitCode === 2,
      bad,
    );
  }
});

test("writePlot: atomic, refuses an existing file without --force and an input even with the same name", async () => {
  const d = tempDir("lora-plot-");
  const r = await inspect(ex);
  const out = join(d, "chart.svg");
  await writePlot(out, r, { force: false, inputs: [ex] });
  assert.match(readFileSync(out, "utf8"), /^<svg/);
  await assert.rejects(
    writePlot(out, r, { force: false, inputs: [ex] }),
    (e: unknown) => e instanceof LoraError && e.exitCode === 2 && /exists/.test(e.message),
  );
  writeFileSync(out, "old");
  await writePlot(out, r, { force: true, inputs: [ex] });
  assert.match(readFileSync(out, "utf8"), /^<svg/);
  // An adapter that happens to be named .svg is an input: never overwritten without --force.
  const input = join(d, "adapter.svg");
  copyFileSync(join(fixturesDir, "peft-bf16.safetensors"), input);
  const before = readFileSync(input);
  await assert.rejects(
    writePlot(input, r, { force: false, inputs: [input] }),
    (e: unknown) => e instanceof LoraError && e.exitCode === 2 && /refusing to overwrite input/.test(e.message),
  );
  assert.deepEqual(readFileSync(input), before);
  assert.deepEqual(readdirSync(d).sort(), ["adapter.svg", "chart.svg"], "no temp file left");
});

test("terminal table: an energy sparkline column when it fits; the piped TSV keeps its 9 columns", async () => {
  const r = await inspect(ex, { budget: 20 });
  const wide = renderInspectTable(r, { width: 200 });
  const head = wide.split("\n").find((l) => l.startsWith("module"))!;
  assert.match(head, /spectrum\s+energy\s+→ rank/);
  const row = wide.split("\n").find((l) => l.startsWith(r.modules[0]!.name))!;
  assert.ok(row.includes(energyCurve(r.modules[0]!.energy)));
  const narrow = renderInspectTable(r, { width: 120 });
  assert.ok(!/\benergy\b\s+→/.test(narrow.split("\n").find((l) => l.startsWith("module"))!), "no energy column when it would not fit");
  for (const l of renderInspectTsv(r).split("\n")) assert.equal(l.split("\t").length, 10, "9 columns + the allocated rank");
  for (const l of renderInspectTsv(await inspect(ex)).split("\n")) assert.equal(l.split("\t").length, 9);
});

test("energyCurve: rises to a full block, sampled to at most max characters", () => {
  assert.equal(energyCurve([0.5, 0.75, 1]), "▄▆█");
  assert.equal(energyCurve([]), "");
  assert.equal(energyCurve([0, 0]), "");
  const long = Array.from({ length: 64 }, (_, i) => (i + 1) / 64);
  const s = energyCurve(long, 16);
  assert.equal([...s].length, 16);
  assert.equal([...s].at(-1), "█");
});

test("chart labels drop the dotted prefix all module names share (never a whole name)", () => {
  assert.equal(commonPrefix(["a.b.layer.0.q", "a.b.layer.1.q"]), "a.b.layer.");
  assert.equal(commonPrefix(["a.b.q", "a.b.v"]), "a.b.");
  assert.equal(commonPrefix(["a.b", "a.b.c"]), "a.");
  assert.equal(commonPrefix(["only.one"]), "");
  assert.equal(commonPrefix(["x.q", "y.q"]), "");
});

test("SVG: control characters in module names and the path are escaped (XML forbids them), with --budget too", async () => {
  const r = await inspect(ex, { budget: 16 });
  const odd = (s: string) => `${s}\u001b[2J\u0007`;
  const bad: InspectReport = {
    ...r,
    path: odd(r.path),
    modules: r.modules.map((m) => ({ ...m, name: odd(m.name) })),
    ...(r.redistribution
      ? { redistribution: { ...r.redistribution, ranks: Object.fromEntries(Object.entries(r.redistribution.ranks).map(([k, v]) => [odd(k), v])) } }
      : {}),
  };
  const svg = decode(await renderChart(bad, "svg"));
  assert.ok(!/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(svg), "no character XML 1.0 forbids");
  assertBalancedXml(svg);
  assert.ok(svg.includes("\\u{1b}[2J\\u{7}"), "shown escaped");
  // the allocation still reads each module's ranks (the lookup uses the names as they are)
  for (const m of r.modules) {
    const after = r.redistribution!.ranks[m.name] ?? 0;
    assert.ok(svg.includes(`${m.name}\\u{1b}[2J\\u{7}: ${m.rank} → ${after}`), `${m.name}: ${m.rank} → ${after}`);
  }
});
