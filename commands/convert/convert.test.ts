// convert: PEFT ⇄ kohya round trips keep every ΔW (per-module .alpha / alpha_pattern, rsLoRA),
// the original module names, passthrough tensors byte for byte, and kohya's metadata conventions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { Writable } from "node:stream";
import { fixturesDir, needsReal, realDir } from "../../test/paths.js";
import { loadAdapter, readFactors, type Adapter } from "../../formats/adapter/index.js";
import { runConvert } from "./run.js";
import { bytesRead } from "../../common/io-meter.js";
import { InvalidInputError } from "../../common/errors.js";
import { SafetensorsFile, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { Rng } from "../../linalg/random.js";
import { tempDir } from "../../test/temp-dir.js";

const tmp = () => tempDir("lora-convert-");

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
      // fan_in_fan_out (GPT-2 Conv1D): the kohya file holds lora_up = Aᵀ, lora_down = Bᵀ, and is read
      // back transposed into the original factors (docs/formats.md "fan_in_fan_out").
      const ffo = a.config?.["fan_in_fan_out"] === true;
      const tr = (x: Float32Array | Float64Array, r: number, c: number) => Array.from({ length: x.length }, (_, i) => x[(i % r) * c + Math.floor(i / r)]!);
      const onDisk = await SafetensorsFile.open(mid);
      for (const [p, x] of da) {
        const m = a.modules.find((q) => q.path === p)!;
        for (const y of [dk.get(p)!, db.get(p)!]) {
          // Factors are copied byte for byte; the scale is reproduced within float32 rounding of alpha.
          assert.deepEqual(Array.from(y.A), Array.from(x.A));
          assert.deepEqual(Array.from(y.B), Array.from(x.B));
          assert.ok(Math.abs(y.s - x.s) <= 1e-6 * x.s, `${p}: scale ${y.s} vs ${x.s}`);
        }
        const km = k.modules.find((q) => q.path === p)!;
        const up = Array.from(await onDisk.readFloat64(`${km.name}.lora_up.weight`));
        const down = Array.from(await onDisk.readFloat64(`${km.name}.lora_down.weight`));
        assert.deepEqual(up, ffo ? tr(x.A, m.rank, m.in) : Array.from(x.B), `${p}: lora_up on disk`);
        assert.deepEqual(down, ffo ? tr(x.B, m.out, m.rank) : Array.from(x.A), `${p}: lora_down on disk`);
      }
      await onDisk.close();
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

// ---------------------------------------------------------------------------------------------
// One read per factor: stored float factors are checked finite as they are copied.

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);

/** A PEFT directory of `mods` modules whose F32 factors are each too large to be read with the file (128 KiB). */
async function bigFactorAdapter(dir: string, mods: number, rng: Rng, poison?: { module: number; factor: "A" | "B"; element: number }): Promise<number> {
  const r = 16,
    n = 2048;
  const specs: TensorSpec[] = [];
  for (let i = 0; i < mods; i++) {
    const key = `base_model.model.model.layers.${i}.self_attn.q_proj`;
    const A = Float32Array.from(rng.normals(r * n, 0.02)),
      B = Float32Array.from(rng.normals(n * r, 0.02));
    if (poison?.module === i) (poison.factor === "A" ? A : B)[poison.element] = Number.NaN;
    specs.push({ name: `${key}.lora_A.weight`, dtype: "F32", shape: [r, n], data: new Uint8Array(A.buffer) });
    specs.push({ name: `${key}.lora_B.weight`, dtype: "F32", shape: [n, r], data: new Uint8Array(B.buffer) });
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r, lora_alpha: r, target_modules: ["q_proj"] }));
  writeFileSync(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
  return mods * 2 * r * n * 4;
}

test(`convert reads each stored factor once, into a file (seed ${seed})`, async () => {
  const d = tmp();
  const src = join(d, "in");
  const tensorBytes = await bigFactorAdapter(src, 6, new Rng(seed));
  for (const to of ["kohya", "peft"] as const) {
    const before = bytesRead();
    await runConvert({ input: src, output: join(d, to === "kohya" ? "out.safetensors" : "out"), to, force: false }, {});
    const read = bytesRead() - before;
    // the factors once, plus the header (a scan before copying would read them twice)
    assert.ok(read >= tensorBytes && read < tensorBytes + (64 << 10), `${to}: ${read} bytes read for ${tensorBytes} of factors`);
  }
  // what was copied is what was stored
  const a = await loadAdapter(src),
    b = await loadAdapter(join(d, "out.safetensors"));
  try {
    for (const m of a.modules) {
      const n = b.modules.find((x) => x.path === m.path)!;
      assert.deepEqual(await b.file.readRaw(n.A), await a.file.readRaw(m.A));
      assert.deepEqual(await b.file.readRaw(n.B), await a.file.readRaw(m.B));
    }
  } finally {
    await a.file.close();
    await b.file.close();
  }
});

test(`convert refuses a NaN found while copying (the element named, nothing written), and before writing to standard output (seed ${seed})`, async () => {
  const d = tmp();
  const src = join(d, "nan");
  const element = 2048 * 16 - 3; // late in the last factor written of module 4
  await bigFactorAdapter(src, 5, new Rng(seed + 1), { module: 4, factor: "B", element });
  const out = join(d, "out");
  await assert.rejects(
    runConvert({ input: src, output: out, to: "peft", force: false }, {}).then(() => undefined),
    (e: Error) => e instanceof InvalidInputError && e.message.includes(`holds NaN at element ${element}; factors must be finite`),
  );
  await assert.rejects(runConvert({ input: src, output: join(d, "out.safetensors"), to: "kohya", force: false }, {}), InvalidInputError);
  assert.deepEqual(readdirSync(d).sort(), ["nan"], "no output and no temp file");
  const chunks: Buffer[] = [];
  const stdout = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  await assert.rejects(runConvert({ input: src, output: "-", to: "kohya", force: false }, { stdout }), InvalidInputError);
  assert.equal(Buffer.concat(chunks).length, 0, "nothing on standard output");
});

test("PEFT rsLoRA → kohya: the report's error is what the F32 alpha does to each scale (0 where float32 holds s·r)", async () => {
  const src = join(fixturesDir, "peft-rslora");
  const out = join(tmp(), "rs.safetensors");
  const rep = await runConvert({ input: src, output: out, to: "kohya", force: false }, {});
  const a = await loadAdapter(src),
    k = await loadAdapter(out);
  try {
    let rounded = 0;
    for (const m of a.modules) {
      const km = k.modules.find((q) => q.path === m.path)!;
      const r = rep.modules.find((q) => q.name === m.path)!;
      // ΔW_kohya = (s_kohya / s)·ΔW with the same factor bytes: the relative error is |s_kohya/s − 1|.
      const actual = Math.abs(km.scale / m.scale - 1);
      assert.ok(Math.abs(r.relative_error - actual) <= 4e-16, `${m.path}: reported ${r.relative_error}, file ${actual}`);
      assert.equal(r.alpha, km.alpha, `${m.path}: the alpha the file holds`);
      if (actual > 0) rounded++;
    }
    assert.ok(rounded > 0, "some s·r = α·√r is not a float32 value");
  } finally {
    await a.file.close();
    await k.file.close();
  }
});
