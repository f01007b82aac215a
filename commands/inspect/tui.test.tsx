// inspect --tui with ink-testing-library: frames after key presses (move, sort, budget, quit), and
// the key/state logic on its own. The budget preview must equal what inspect --budget reports.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fixturesDir } from "../../test/paths.js";
import { fmt } from "../support/output.js";
import { jsBackend } from "../../linalg/js/index.js";
import { runInspect, type InspectReport } from "./run.js";
import type { TuiOptions } from "./tui.js";

// ink decides at import time (is-in-ci) whether it runs under CI, and then draws only the last
// frame; these tests read every frame, so they run ink in its interactive mode even when the suite
// itself runs under CI=true. Hence the dynamic imports after the environment is set.
process.env["CI"] = "0";
for (const k of Object.keys(process.env)) if (k === "CONTINUOUS_INTEGRATION" || k.startsWith("CI_")) delete process.env[k];
const { render } = await import("ink-testing-library");
const { InspectApp, applyKey, budgetBounds, clip, initialState, previewBudget, sortModules, spectrumColumns } = await import("./tui.js");

const ex = join(fixturesDir, "example");
const opts: TuiOptions = { score: "energy", minRank: 0, rho: 2 };
let cached: InspectReport | undefined;
async function report(): Promise<InspectReport> {
  return (cached ??= await runInspect({ input: ex, ...opts }, { backend: jsBackend }));
}

const tick = () => new Promise((r) => setTimeout(r, 60));
const ESC = "\u001B";
const DOWN = `${ESC}[B`;
const UP = `${ESC}[A`;

/** The module names in list order, as drawn (the row markers are "›" for the selection). */
function listed(frame: string): string[] {
  return [...frame.matchAll(/^│[›\s] (\S+)\s+\d+\s+\d+\s/gm)].map((m) => m[1]!);
}
function selectedRow(frame: string): string | undefined {
  return /^│› (\S+)/m.exec(frame)?.[1];
}
function budgetLine(frame: string): { K: number; total: number; kept: number } {
  const m = /budget K=(\d+) by energy\s+total rank \d+ → (\d+)\s+energy kept ([\d.]+)%/.exec(frame);
  assert.ok(m, `budget line in:\n${frame}`);
  return { K: Number(m[1]), total: Number(m[2]), kept: Number(m[3]) };
}

async function session(width = 100, height = 30) {
  const r = await report();
  const app = render(<InspectApp report={r} options={opts} width={width} height={height} />);
  await tick();
  const press = async (keys: string) => {
    app.stdin.write(keys);
    await tick();
    return app.lastFrame() ?? "";
  };
  return { r, app, press, frame: () => app.lastFrame() ?? "" };
}

test("first frame: header, every module in file order, the first selected, a budget preview of half the total rank", async () => {
  const { r, app, frame } = await session();
  const f = frame();
  assert.match(f, /lora inspect .*example\s+peft · 8 modules · total rank 64 · F32/);
  assert.deepEqual(
    listed(f),
    r.modules.map((m) => m.name),
  );
  assert.equal(selectedRow(f), r.modules[0]!.name);
  assert.match(f, /sorted by file order/);
  assert.equal(budgetLine(f).K, 32);
  assert.match(f, /σᵢ\/σ₁ \(kept: \d of 8\)/);
  assert.match(f, /energy [▁▂▃▄▅▆▇█]+\s+kept at \d: [\d.]+%/);
  assert.match(f, /q quit/);
  assert.match(f, /lora truncate … --budget 32/);
  app.unmount();
});

test("arrow keys and j/k move the selection; the detail pane follows", async () => {
  const { r, app, press } = await session();
  let f = await press("j");
  assert.equal(selectedRow(f), r.modules[1]!.name);
  f = await press(DOWN);
  assert.equal(selectedRow(f), r.modules[2]!.name);
  assert.ok(f.includes(`‖ΔW‖ ${fmt(r.modules[2]!.norm)} `), "detail pane shows the selected module");
  f = await press("k");
  f = await press(UP);
  assert.equal(selectedRow(f), r.modules[0]!.name);
  f = await press(UP);
  assert.equal(selectedRow(f), r.modules[0]!.name, "stays at the top");
  f = await press("G");
  assert.equal(selectedRow(f), r.modules.at(-1)!.name);
  f = await press("jj");
  assert.equal(selectedRow(f), r.modules.at(-1)!.name, "stays at the bottom (a chunk of keys is handled key by key)");
  app.unmount();
});

test("n sorts by norm (largest first, again: smallest first), s by name, e by energy kept, o back to file order", async () => {
  const { r, app, press } = await session();
  let f = await press("n");
  assert.match(f, /sorted by ‖ΔW‖ ↓/);
  assert.deepEqual(
    listed(f),
    [...r.modules].sort((a, b) => b.norm - a.norm).map((m) => m.name),
  );
  assert.equal(selectedRow(f), r.modules[0]!.name, "the selection stays on the same module");
  f = await press("n");
  assert.match(f, /sorted by ‖ΔW‖ ↑/);
  assert.deepEqual(
    listed(f),
    [...r.modules].sort((a, b) => a.norm - b.norm).map((m) => m.name),
  );
  f = await press("s");
  assert.deepEqual(
    listed(f),
    r.modules.map((m) => m.name).sort((a, b) => a.localeCompare(b)),
  );
  f = await press("e");
  assert.match(f, /sorted by energy kept ↑/);
  const kept = [...f.matchAll(/^│[›\s] \S+\s+\d+\s+\d+\s+\S+\s+([\d.]+)%/gm)].map((m) => Number(m[1]));
  assert.equal(kept.length, 8);
  assert.deepEqual(
    kept,
    [...kept].sort((a, b) => a - b),
    "ascending energy kept",
  );
  f = await press("o");
  assert.deepEqual(
    listed(f),
    r.modules.map((m) => m.name),
  );
  app.unmount();
});

test("+ and - change the budget; the preview equals inspect --budget (total rank and retained energy)", async () => {
  const { app, press, frame } = await session();
  const start = budgetLine(frame()).K;
  let f = await press("+");
  assert.equal(budgetLine(f).K, start + 1);
  f = await press("---");
  const b = budgetLine(f);
  assert.equal(b.K, start - 2);
  assert.equal(b.total, start - 2);
  const ref = await runInspect({ input: ex, ...opts, budget: b.K }, { backend: jsBackend });
  assert.equal(b.kept.toFixed(1), (100 * ref.redistribution!.retained_energy).toFixed(1));
  // the per-module "→k" column is truncate's allocation
  const rows = [...f.matchAll(/^│[›\s] (\S+)\s+\d+\s+(\d+)\s/gm)].map((m) => [m[1]!, Number(m[2])] as const);
  for (const [name, k] of rows) assert.equal(k, ref.redistribution!.ranks[name], name);
  f = await press("]");
  assert.ok(budgetLine(f).K > b.K);
  for (let i = 0; i < 20; i++) await press("]");
  assert.equal(budgetLine(frame()).K, 64, "capped at the total rank");
  assert.equal(budgetLine(frame()).kept, 100);
  app.unmount();
});

test("q quits: the app unmounts and stops reading keys", async () => {
  const { r, app, press } = await session();
  await press("q");
  const n = app.frames.length;
  const f = await press("j");
  assert.equal(app.frames.length, n, "no new frame after q");
  assert.equal(selectedRow(f), r.modules[0]!.name);
  app.unmount();
});

test("a long list scrolls to keep the selection in view and says where it is", async () => {
  const r = await report();
  const many: InspectReport = {
    ...r,
    modules: Array.from({ length: 40 }, (_, i) => ({ ...r.modules[i % 8]!, name: `layer.${String(i).padStart(2, "0")}.proj` })),
  };
  const app = render(<InspectApp report={many} options={opts} width={100} height={20} />);
  await tick();
  assert.match(app.lastFrame()!, /1–10 of 40/);
  app.stdin.write("j".repeat(25));
  await tick();
  const f = app.lastFrame()!;
  assert.equal(selectedRow(f), "layer.25.proj");
  assert.match(f, /\d+–\d+ of 40/);
  app.unmount();
});

test("applyKey: pure state transitions, bounds, quit", async () => {
  const r = await report();
  let st = initialState(r, opts);
  const [lo, hi] = budgetBounds(r, 0);
  assert.deepEqual([lo, hi], [0, 64]);
  for (let i = 0; i < 100; i++) st = applyKey(r, opts, st, "-")!;
  assert.equal(st.budget, 0);
  assert.equal(previewBudget(r, opts, 0).total, 0);
  st = applyKey(r, opts, st, "end")!;
  assert.equal(st.selected, r.modules.at(-1)!.name);
  assert.equal(applyKey(r, opts, st, "q"), null);
  assert.equal(applyKey(r, opts, st, "escape"), null);
  assert.equal(applyKey(r, opts, st, "x"), st, "unknown keys change nothing");
  // --min-rank floors bound the budget from below
  const o2 = { ...opts, minRank: 2 };
  assert.deepEqual(budgetBounds(r, 2), [16, 64]);
  let s2 = initialState(r, { ...o2, budget: 3 });
  assert.equal(s2.budget, 16);
  s2 = applyKey(r, o2, s2, "-")!;
  assert.equal(s2.budget, 16);
  const sorted = sortModules(r.modules, "norm", true, previewBudget(r, opts, 32));
  assert.ok(sorted[0]!.norm >= sorted.at(-1)!.norm);
});

test("helpers: middle clipping, vertical spectrum bars", () => {
  assert.equal(clip("short", 10), "short");
  const name = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k";
  for (const w of [45, 31]) {
    const c = clip(name, w);
    assert.equal([...c].length, w);
    assert.match(c, /^d[^.]*\.0\.a[^.]*\.1\.t[^.]*\.0\.attn2\.to_k$/, `indices survive: ${c}`);
  }
  assert.equal(clip(name, 45), "down_blocks.0.attentions.1.tran….0.attn2.to_k", "the longest segment goes first");
  const c = clip(name, 12);
  assert.equal([...c].length, 12);
  assert.ok(c.includes("…") && c.endsWith("to_k"));
  assert.equal([...clip("lora_unet_down_blocks_0_attentions_0_proj_in", 20)].length, 20, "no dots: middle clip");
  const { lines, cw } = spectrumColumns([4, 2, 1], 4, 40);
  assert.equal(cw, 4);
  assert.equal(lines.length, 4);
  assert.equal(lines[0], "███ " + "    " + "    ");
  assert.equal(lines[3], "███ ███ ███ ");
});
