// extract's lanes (surgery/extract.ts laneCap): how many weights run side by side, from the
// backend, the memory allowed and --low-memory; and the report in the models' order whatever the
// order the weights finish in. (Accuracy against the dense optimum: test/e2e/extract.test.ts.)
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { resolveBackend } from "../linalg/backend.js";
import type { LinalgBackend } from "../linalg/types.js";
import { writeGeneratedModel, type PairSpec } from "../test/models.js";
import { runExtract, type ExtractOptions } from "./extract.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`extract lanes test seed=${seed}`);
const work = mkdtempSync(join(tmpdir(), "lora-extract-lanes-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const spec: PairSpec = { family: "llama", size: { layers: 2, hidden: 48, inter: 80, vocab: 64, kv: 24 }, dtype: "F32", rank: 4, noise: 1e-3, seed };

/**
 * A backend named `name` over the js backend's arithmetic whose withLanes offers `offered` lanes; it
 * records how many sketches ran at once at most (each held for a few turns of the event loop, so
 * that side-by-side calls overlap), whether withLanes was entered, and the order sketches started.
 */
function probe(js: LinalgBackend, name: "cpu" | "js", offered: number) {
  let running = 0,
    peak = 0,
    entered = false;
  const be: LinalgBackend = Object.create(js);
  Object.assign(be, {
    name,
    withLanes: async <T>(fn: (lanes: number) => Promise<T>) => {
      entered = true;
      return fn(offered);
    },
    sketch: async (x: Parameters<LinalgBackend["sketch"]>[0]) => {
      running++;
      peak = Math.max(peak, running);
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      try {
        return await js.sketch(x);
      } finally {
        running--;
      }
    },
  });
  return { be, peak: () => peak, entered: () => entered };
}

test("laneCap: weights side by side on cpu up to the lanes offered and the memory allowed; one at a time with --low-memory, on js, or without laneBytes", async () => {
  const { backend: js } = await resolveBackend("js");
  const base = join(work, "base"),
    tuned = join(work, "tuned");
  await writeGeneratedModel(base, spec, false, 2);
  await writeGeneratedModel(tuned, spec, true, 2);
  const largest = 4 * 80 * 48; // float32 ΔW of the largest weight (up/gate/down: 80×48)
  const o = (extra: Partial<ExtractOptions>): ExtractOptions => ({
    base,
    tuned,
    output: join(work, `out-${Math.random().toString(36).slice(2)}`),
    rank: 2,
    exact: false,
    tolerance: 1e-3,
    seed,
    force: false,
    ...extra,
  });
  const cases: { what: string; name: "cpu" | "js"; offered: number; laneBytes?: number; low?: boolean; peak: number; entered: boolean }[] = [
    { what: "cpu, memory for 3, 2 offered", name: "cpu", offered: 2, laneBytes: 3 * largest, peak: 2, entered: true },
    { what: "cpu, memory for 2, 4 offered", name: "cpu", offered: 4, laneBytes: 2 * largest + 1, peak: 2, entered: true },
    { what: "cpu, memory for 3, 3 offered", name: "cpu", offered: 3, laneBytes: 3 * largest, peak: 3, entered: true },
    { what: "cpu, memory for 1", name: "cpu", offered: 4, laneBytes: largest, peak: 1, entered: false },
    { what: "cpu, no laneBytes", name: "cpu", offered: 4, peak: 1, entered: false },
    { what: "cpu, --low-memory", name: "cpu", offered: 4, laneBytes: 100 * largest, low: true, peak: 1, entered: false },
    { what: "js", name: "js", offered: 4, laneBytes: 100 * largest, peak: 1, entered: false },
  ];
  let reference: string[] | undefined;
  for (const c of cases) {
    const p = probe(js, c.name, c.offered);
    const r = await runExtract(o({ ...(c.low ? { lowMemory: true } : {}) }), {
      backend: p.be,
      ...(c.laneBytes !== undefined ? { laneBytes: c.laneBytes } : {}),
      ...(c.low ? { streamFromElements: 1 } : {}),
    });
    if (!c.low) assert.equal(p.peak(), c.peak, `${c.what}: sketches at once`);
    else assert.ok(p.peak() <= 1, `${c.what}: one weight at a time`);
    assert.equal(p.entered(), c.entered, `${c.what}: withLanes entered`);
    const names = r.modules.map((m) => m.name);
    reference ??= names;
    assert.deepEqual(names, reference, `${c.what}: the report in the models' order`);
  }
  assert.equal(reference!.length, 15, "2 layers × 7 weights and lm_head");
});
