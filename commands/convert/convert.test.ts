// convert: PEFT ⇄ kohya round trips keep every ΔW (per-module .alpha / alpha_pattern, rsLoRA),
// the original module names, passthrough tensors byte for byte, and kohya's metadata conventions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fixturesDir, needsReal, realDir } from "../../test/paths.js";
import { loadAdapter, readFactors, type Adapter } from "../../formats/adapter/index.js";
import { runConvert } from "./run.js";

const tmp = () => mkdtempSync(join(tmpdir(), "lora-convert-"));

/** Every module's (path → s·B·A as dense float64) — small adapters only. */
async function deltas(a: Adapter): Promise<Map<string, { s: number; A: Float32Array | Float64Array; B: Float32Array | Float64Array }>> {
  const out = new Map();
  for (const m of a.modules) {
    const f = await readFactors(a, m, "f32");
    out.set(m.path, { s: m.scale, A: f.A.data, B: f.B.data });
  }
  return out;
}

async function roundTrip(src: string, via: "kohya" | "peft") {
  const d = tmp();
  const mid = join(d, via === "kohya" ? "mid.safetensors" : "mid");
  const back = join(d, via === "kohya" ? "back" : "back.safetensors");
  await runConvert({ input: src, output: mid, to: via, force: false }, {});
  await runConvert({ input: mid, output: back, to: via === "kohya" ? "peft" : "kohya", force: false }, {});
  return { mid, back };
}

for (const src of [
  join(realDir, "distilbert-imdb"),
  join(realDir, "gpt2-tigrinya"),
  join(fixturesDir, "peft-rslora"),
  join(fixturesDir, "peft-f16-embed-conv"),
  join(fixturesDir, "peft-bf16.safetensors"),
]) {
  test(`PEFT → kohya → PEFT keeps names, scales, factors and passthrough: ${src.split("/").slice(-1)[0]}`, {
    skip: src.startsWith(realDir) && needsReal(src.split("/").slice(-1)[0]!),
  }, async () => {
    const { mid, back } = await roundTrip(src, "kohya");
    const a = await loadAdapter(src),
      k = await loadAdapter(mid),
      b = await loadAdapter(back);
    try {
      assert.equal(k.format, "kohya");
      assert.equal(b.format, "peft");
      const da = await deltas(a),
        dk = await deltas(k),
        db = await deltas(b);
      assert.deepEqual([...db.keys()].sort(), [...da.keys()].sort(), "module paths restored");
      // fan_in_fan_out (GPT-2 Conv1D): kohya holds lora_up = Aᵀ, lora_down = Bᵀ (docs/formats.md "Naming maps").
      const ffo = a.config?.["fan_in_fan_out"] === true;
      const tr = (x: Float32Array | Float64Array, r: number, c: number) => Array.from({ length: x.length }, (_, i) => x[(i % r) * c + Math.floor(i / r)]!);
      for (const [p, x] of da) {
        const m = a.modules.find((q) => q.path === p)!;
        for (const y of [dk.get(p)!, db.get(p)!]) {
          // Factors are copied byte for byte; the scale is reproduced within float32 rounding of alpha.
          const flip = ffo && y === dk.get(p);
          assert.deepEqual(Array.from(y.A), flip ? tr(x.B, m.out, m.rank) : Array.from(x.A));
          assert.deepEqual(Array.from(y.B), flip ? tr(x.A, m.rank, m.in) : Array.from(x.B));
          assert.ok(Math.abs(y.s - x.s) <= 1e-6 * x.s, `${p}: scale ${y.s} vs ${x.s}`);
        }
      }
      for (const t of a.passthrough) {
        assert.ok((await b.file.readRaw(t.name)).equals(await a.file.readRaw(t.name)), `passthrough ${t.name}`);
        assert.ok((await k.file.readRaw(t.name)).equals(await a.file.readRaw(t.name)), `passthrough ${t.name} in kohya`);
      }
      // kohya conventions: 0-d F32 alpha, full path stems, ss_network_dim / ss_network_alpha.
      for (const m of k.modules) {
        assert.equal(m.alphaTensor!.dtype, "F32");
        assert.deepEqual(m.alphaTensor!.shape, []);
        assert.ok(m.name.startsWith("lora_"));
      }
      const ranks = new Set(a.modules.map((m) => m.rank)),
        alphas = new Set(k.modules.map((m) => m.alpha));
      assert.equal(k.metadata["ss_network_dim"], ranks.size === 1 ? String([...ranks][0]) : "Dynamic");
      assert.equal(k.metadata["ss_network_alpha"] === "Dynamic", alphas.size !== 1);
      // PEFT config restored: fan_in_fan_out, use_rslora, target_modules named.
      for (const key of ["fan_in_fan_out", "use_rslora", "task_type"]) assert.deepEqual(b.config?.[key], a.config?.[key] ?? b.config?.[key], key);
      assert.ok(Array.isArray(b.config?.["target_modules"]) || typeof b.config?.["target_modules"] === "string");
    } finally {
      await Promise.all([a.file.close(), k.file.close(), b.file.close()]);
    }
  });
}

test("kohya → PEFT → kohya keeps stems, alphas (incl. alpha = rank defaults) and metadata", async () => {
  const src = join(fixturesDir, "kohya-sd.safetensors");
  const { mid, back } = await roundTrip(src, "peft");
  const a = await loadAdapter(src),
    p = await loadAdapter(mid),
    b = await loadAdapter(back);
  try {
    assert.equal(p.format, "peft");
    assert.deepEqual(
      b.modules.map((m) => m.name),
      a.modules.map((m) => m.name),
    );
    for (const m of a.modules) {
      const y = b.modules.find((x) => x.name === m.name)!;
      assert.ok(Math.abs(y.scale - m.scale) < 1e-7, m.name);
      assert.equal(y.kind, m.kind);
      assert.deepEqual(y.A.shape, m.A.shape);
      assert.ok((await b.file.readRaw(y.A)).equals(await a.file.readRaw(m.A)));
    }
    assert.equal(b.metadata["ss_training_comment"], a.metadata["ss_training_comment"]);
    assert.equal(b.metadata["ss_network_module"], "networks.lora");
  } finally {
    await Promise.all([a.file.close(), p.file.close(), b.file.close()]);
  }
});

test("same-format rewrite is canonical and refuses to overwrite without --force", async () => {
  const d = tmp();
  await runConvert({ input: join(fixturesDir, "example"), output: join(d, "x"), to: "peft", force: false }, {});
  await runConvert({ input: join(d, "x"), output: join(d, "y"), to: "peft", force: false }, {});
  assert.ok(readFileSync(join(d, "x", "adapter_model.safetensors")).equals(readFileSync(join(d, "y", "adapter_model.safetensors"))));
  await assert.rejects(runConvert({ input: join(fixturesDir, "example"), output: join(d, "x"), to: "peft", force: false }, {}), /exists/);
  await runConvert({ input: join(fixturesDir, "example"), output: join(d, "x"), to: "peft", force: true }, {});
});
