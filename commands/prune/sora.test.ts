// prune --method sora: golden §9.4, fresh random SoRA checkpoints against a float64 reference
// (ΔW_out = s·B·diag(g)·A within 1e-6 relative, ranks = non-zero gates), the detector, and errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadAdapter, readFactors, type Adapter } from "../../formats/adapter/index.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { jsBackend } from "../../linalg/js/index.js";
import { Rng } from "../../linalg/random.js";
import { fixturesDir } from "../../test/paths.js";
import { inspectAdapter } from "../inspect/run.js";
import { foldGate, keptRanks } from "../../surgery/prune/sora.js";
import { runPrune, type PruneOptions } from "./run.js";
import { deltaW, readAll, relDiff, tempDir } from "./reference.test.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`prune sora.test seed=${seed} (LORA_TEST_SEED replays)`);

test("golden §9.4: keep [0, 2], B' = [[0.5, −3.6], [0, 0]], A' = [[1, 0], [1, 1]], ΔW = [[−12.4, −14.4], [0, 0]]", () => {
  const B = [1, 2, 3, 4, 0, 1, 0, 1],
    A = [1, 0, 0, 1, 1, 1, 2, -1],
    g = [0.5, 0, -1.2, 0],
    s = 4;
  const keep = keptRanks(g, 0);
  assert.deepEqual(keep, [0, 2]);
  const f = foldGate(B, A, 2, 2, 4, g, keep, "B");
  [0.5, -3.6, 0, 0].forEach((x, i) => assert.ok(Math.abs(f.B[i]! - x) < 1e-12, `B'[${i}] = ${f.B[i]}`));
  assert.deepEqual(Array.from(f.A), [1, 0, 1, 1]);
  const want = [-12.4, -14.4, 0, 0];
  for (const side of ["B", "A", "balanced"] as const) {
    const h = foldGate(B, A, 2, 2, 4, g, keep, side);
    const dW = deltaW(h.B, h.A, 2, 2, 2, s);
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(dW[i]! - want[i]!) < 1e-12, `${side}: ΔW[${i}] = ${dW[i]}`);
  }
});

test("keptRanks: threshold T drops |g| ≤ T (T = 0: exactly-zero gates)", () => {
  assert.deepEqual(keptRanks([0, -0, 1e-300, -2, 0.5, 0.5], 0), [2, 3, 4, 5]);
  assert.deepEqual(keptRanks([0.1, -0.2, 0.5, -0.5], 0.5), []);
  assert.deepEqual(keptRanks([0.1, -0.6, 0.5, 0.51], 0.5), [1, 3]);
});

test("foldGate on random factors: every side gives s·B·diag(g)·A restricted to the kept ranks exactly", () => {
  const rng = new Rng(seed);
  for (let trial = 0; trial < 20; trial++) {
    const out = 1 + rng.int(9),
      inF = 1 + rng.int(9),
      r = 1 + rng.int(8);
    const B = rng.normals(out * r),
      A = rng.normals(r * inF);
    const g = Float64Array.from({ length: r }, () => (rng.uniform() < 0.4 ? 0 : rng.normal()));
    const Bg = B.map((b, i) => b * g[i % r]!);
    const ref = deltaW(Bg, A, out, r, inF, 1);
    const keep = keptRanks(g, 0);
    for (const side of ["B", "A", "balanced"] as const) {
      const f = foldGate(B, A, out, inF, r, g, keep, side);
      const got = deltaW(f.B, f.A, out, keep.length, inF, 1);
      assert.ok(relDiff(got, ref) <= 1e-12 || (keep.length === 0 && got.every((x) => x === 0)), `seed ${seed} trial ${trial} ${side}`);
    }
  }
});

interface SoraMod {
  path: string;
  out: number;
  in: number;
  r: number;
  B: Float64Array;
  A: Float64Array;
  g: Float64Array;
}

function randomSora(rng: Rng, n: number): SoraMod[] {
  const mods: SoraMod[] = [];
  for (let k = 0; k < n; k++) {
    const out = 4 + rng.int(20),
      inF = 4 + rng.int(20),
      r = 1 + rng.int(10);
    const g = Float64Array.from({ length: r }, () => (rng.uniform() < 0.4 ? 0 : (rng.uniform() < 0.5 ? -1 : 1) * (1e-3 + Math.abs(rng.normal()))));
    mods.push({ path: `encoder.layer.${k}.attention.self.query`, out, in: inF, r, B: rng.normals(out * r, 0.3), A: rng.normals(r * inF, 0.3), g });
  }
  mods.push({ path: "encoder.layer.99.output.dense", out: 5, in: 6, r: 3, B: rng.normals(15), A: rng.normals(18), g: new Float64Array(3) }); // all gates zero
  return mods;
}

function soraSpecs(mods: SoraMod[], prefix = "roberta."): TensorSpec[] {
  const specs: TensorSpec[] = [];
  const f32 = (name: string, shape: number[], d: Float64Array): TensorSpec => ({ name, dtype: "F32", shape, data: encodeFloats("F32", d) });
  for (const m of mods) {
    const base = prefix + m.path;
    specs.push(f32(base + ".lora.lora_A", [m.r, m.in], m.A));
    specs.push(f32(base + ".lora.lora_B", [m.out, m.r], m.B));
    specs.push(f32(base + ".lora.gate", [1, m.r], m.g));
    specs.push(f32(base + ".weight", [m.out, m.in], new Float64Array(m.out * m.in).fill(0.5)));
  }
  specs.push(f32("classifier.weight", [2, 4], Float64Array.of(1, 2, 3, 4, 5, 6, 7, 8)));
  return specs;
}

/** Reference ΔW of a SoRA module, from the float32 values actually stored in the file. */
function refDelta(m: SoraMod, alpha: number): Float64Array {
  const r32 = (x: Float64Array) => Float64Array.from(Float32Array.from(x));
  const B = r32(m.B),
    A = r32(m.A),
    g = r32(m.g);
  return deltaW(
    B.map((b, i) => b * g[i % m.r]!),
    A,
    m.out,
    m.r,
    m.in,
    alpha / m.r,
  );
}

async function denseOf(a: Adapter, name: string): Promise<Float64Array> {
  const m = a.modules.find((x) => x.name === name)!;
  const f = await readFactors(a, m, "f64");
  return deltaW(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale);
}

const be = jsBackend;

test("random SoRA checkpoints: output ΔW = s·B·diag(g)·A (≤ 1e-6 rel), ranks = non-zero gates, all-zero modules dropped (PEFT and kohya, every fold)", async () => {
  const rng = new Rng(seed + 1);
  const { dir, done } = tempDir("sora");
  try {
    const mods = randomSora(rng, 5);
    const path = join(dir, "ckpt.safetensors");
    writeFileSync(path, await serializeSafetensors(soraSpecs(mods), { format: "pt" }));
    let k = 0;
    for (const to of ["peft", "kohya"] as const)
      for (const fold of ["B", "A", "balanced"] as const) {
        const out = join(dir, `out-${k++}${to === "kohya" ? ".safetensors" : ""}`);
        const o: PruneOptions = { input: path, output: out, method: "sora", to, fold, force: false };
        const rep = await runPrune(o, { backend: be });
        const a = await loadAdapter(out);
        try {
          assert.equal(a.format, to);
          for (const m of mods) {
            const name = to === "peft" ? "roberta." + m.path : a.modules.find((x) => x.path === "roberta." + m.path)?.name;
            const nz = Array.from(m.g).filter((x) => Float32Array.of(x)[0] !== 0).length;
            const res = rep.modules.find((x) => x.name === "roberta." + m.path)!;
            assert.equal(res.rank, nz, `report rank of ${m.path}`);
            assert.equal(res.rank_in, m.r);
            if (nz === 0) {
              assert.ok(!a.modules.some((x) => x.path === "roberta." + m.path), `${m.path} should be dropped`);
              assert.ok(rep.dropped.includes("roberta." + m.path));
              continue;
            }
            const mod = a.modules.find((x) => x.name === name)!;
            assert.equal(mod.rank, nz, `rank of ${m.path} (${to}, ${fold})`);
            const err = relDiff(await denseOf(a, mod.name), refDelta(m, 16));
            assert.ok(err <= 1e-6, `${m.path} ${to} ${fold}: relative error ${err} (seed ${seed})`);
            assert.ok(res.relative_error <= 1e-6, `reported error ${res.relative_error}`);
          }
          assert.equal(a.passthrough.length, 0, "backbone and classifier are not carried by default");
        } finally {
          await a.file.close();
        }
      }
  } finally {
    done();
  }
});

test("--threshold drops small gates; the reported error matches the dense error; --lora-alpha sets the scale; --keep-other carries other tensors byte for byte", async () => {
  const rng = new Rng(seed + 2);
  const { dir, done } = tempDir("sora-t");
  try {
    const mods = randomSora(rng, 3);
    mods[0]!.g[0] = 1.5; // one gate above the threshold whatever the seed (else nothing is left to write, exit 3)
    const path = join(dir, "ckpt.safetensors");
    writeFileSync(path, await serializeSafetensors(soraSpecs(mods, ""), null));
    const T = 0.6;
    const out = join(dir, "out.safetensors");
    const rep = await runPrune({ input: path, output: out, method: "sora", threshold: T, loraAlpha: 8, keepOther: true, force: false }, { backend: be });
    const a = await loadAdapter(out);
    try {
      for (const m of mods) {
        const g32 = Float64Array.from(Float32Array.from(m.g));
        const keep = Array.from(g32)
          .map((x, i) => [x, i] as const)
          .filter(([x]) => Math.abs(x) > T)
          .map(([, i]) => i);
        const res = rep.modules.find((x) => x.name === m.path)!;
        assert.equal(res.rank, keep.length);
        const ref = refDelta(m, 8);
        if (keep.length === 0) {
          assert.ok(!a.modules.some((x) => x.path === m.path));
          continue;
        }
        const got = await denseOf(a, m.path);
        const dense = relDiff(got, ref);
        assert.ok(Math.abs(dense - res.relative_error) <= 1e-6 + 1e-6 * dense, `${m.path}: reported ${res.relative_error}, dense ${dense}`);
        // the kept part is exact
        const gk = g32.map((x, i) => (keep.includes(i) ? x : 0));
        const refKept = deltaW(
          Float64Array.from(Float32Array.from(m.B)).map((b, i) => b * gk[i % m.r]!),
          Float64Array.from(Float32Array.from(m.A)),
          m.out,
          m.r,
          m.in,
          8 / m.r,
        );
        assert.ok(relDiff(got, refKept) <= 1e-6);
      }
      const names = a.passthrough.map((t) => t.name).sort();
      assert.ok(names.includes("classifier.weight"));
      const src = await readAll(path),
        dst = await readAll(out);
      assert.deepEqual(dst.get("classifier.weight")!.data, src.get("classifier.weight")!.data);
    } finally {
      await a.file.close();
    }
  } finally {
    done();
  }
});

test("fixture SoRA checkpoint: detected as sora, inspect shows gate sparsity, prune keeps exactly the non-zero gates", async () => {
  const path = join(fixturesDir, "prune", "sora-checkpoint.safetensors");
  const a = await loadAdapter(path);
  try {
    assert.equal(a.format, "sora");
    assert.equal(a.modules.length, 4);
    assert.equal(a.modules[0]!.scale, 16 / 8);
    const rep = await inspectAdapter(a, be);
    const zero = rep.reduce((s, m) => s + (m.gate?.zero ?? 0), 0);
    assert.ok(zero > 8, "some gates are zero");
    assert.ok(a.passthrough.some((t) => t.name === "classifier.weight"));
  } finally {
    await a.file.close();
  }
  const { dir, done } = tempDir("sora-fx");
  try {
    const out = join(dir, "out");
    const res = await runPrune({ input: path, output: out, method: "sora", force: false }, { backend: be });
    const b = await loadAdapter(out);
    try {
      for (const m of res.modules) {
        const mod = b.modules.find((x) => x.path === m.name);
        assert.equal(mod?.rank ?? 0, m.rank);
      }
      assert.equal(res.dropped.length, 1, "the all-zero module is dropped");
      assert.equal(b.modules.length, 3);
    } finally {
      await b.file.close();
    }
  } finally {
    done();
  }
});

test("PEFT-layout adapter with lora_gate tensors and a config: the config's alpha and passthrough are kept", async () => {
  const { dir, done } = tempDir("sora-peft");
  try {
    const src = join(fixturesDir, "prune", "sora-peft");
    const a0 = await loadAdapter(src);
    assert.equal(a0.format, "sora");
    assert.equal(a0.modules[0]!.alpha, 16);
    const gates = new Map<string, Float64Array>();
    for (const m of a0.modules) gates.set(m.path, await a0.file.readFloat64(m.extras["gate"]!));
    const refs = new Map<string, Float64Array>();
    for (const m of a0.modules) {
      const f = await readFactors(a0, m, "f64");
      const g = gates.get(m.path)!;
      refs.set(
        m.path,
        deltaW(
          f.B.data.map((b, i) => b * g[i % m.rank]!),
          f.A.data,
          m.out,
          m.rank,
          m.in,
          m.scale,
        ),
      );
    }
    await a0.file.close();
    const out = join(dir, "out");
    await runPrune({ input: src, output: out, method: "sora", force: false }, { backend: be });
    const a = await loadAdapter(out);
    try {
      assert.equal(a.format, "peft");
      assert.ok(
        a.passthrough.some((t) => t.name === "base_model.model.score.weight"),
        "modules_to_save head carried",
      );
      const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
      assert.equal(cfg.task_type, "CAUSAL_LM");
      for (const m of a.modules) {
        assert.equal(m.rank, Array.from(gates.get(m.path)!).filter((x) => x !== 0).length);
        assert.ok(relDiff(await denseOf(a, m.name), refs.get(m.path)!) <= 1e-6);
      }
    } finally {
      await a.file.close();
    }
  } finally {
    done();
  }
});

test("errors: plain adapter without gates, bad gate shape, every gate zero → exit 3; --threshold above every gate → exit 2; nothing written", async () => {
  const { dir, done } = tempDir("sora-err");
  try {
    const out = join(dir, "out");
    await assert.rejects(
      runPrune({ input: join(fixturesDir, "example"), output: out, method: "sora", force: false }, { backend: be }),
      (e) => e instanceof InvalidInputError && /no SoRA gate/.test(e.message),
    );
    const f32 = (name: string, shape: number[], n: number, v = 1): TensorSpec => ({
      name,
      dtype: "F32",
      shape,
      data: encodeFloats("F32", new Float64Array(n).fill(v)),
    });
    const bad = join(dir, "bad.safetensors");
    writeFileSync(bad, await serializeSafetensors([f32("x.lora.lora_A", [2, 3], 6), f32("x.lora.lora_B", [3, 2], 6), f32("x.lora.gate", [1, 3], 3)], null));
    await assert.rejects(
      runPrune({ input: bad, output: out, method: "sora", force: false }, { backend: be }),
      (e) => e instanceof InvalidInputError && /gate/.test(e.message),
    );
    const zero = join(dir, "zero.safetensors");
    writeFileSync(zero, await serializeSafetensors([f32("x.lora.lora_A", [2, 3], 6), f32("x.lora.lora_B", [3, 2], 6), f32("x.lora.gate", [1, 2], 2, 0)], null));
    await assert.rejects(
      runPrune({ input: zero, output: out, method: "sora", force: false }, { backend: be }),
      (e) => e instanceof InvalidInputError && /every gate/.test(e.message),
    );
    // Gates that are not zero, all dropped by --threshold: the options leave nothing (usage, exit 2, as truncate --budget 0).
    const small = join(dir, "small.safetensors");
    writeFileSync(
      small,
      await serializeSafetensors([f32("x.lora.lora_A", [2, 3], 6), f32("x.lora.lora_B", [3, 2], 6), f32("x.lora.gate", [1, 2], 2, 0.5)], null),
    );
    await assert.rejects(
      runPrune({ input: small, output: out, method: "sora", force: false, threshold: 100 }, { backend: be }),
      (e) => e instanceof UsageError && e.exitCode === 2 && /--threshold 100 drops every rank/.test(e.message),
    );
    mkdirSync(join(dir, "probe"));
    const { readdirSync } = await import("node:fs");
    assert.deepEqual(readdirSync(dir).sort(), ["bad.safetensors", "probe", "small.safetensors", "zero.safetensors"]);
  } finally {
    done();
  }
});

test("rsLoRA config (s = alpha/√r): the output keeps use_rslora and alpha' = s·√r', so ΔW is unchanged", async () => {
  const { dir, done } = tempDir("sora-rs");
  try {
    const src = join(dir, "in");
    mkdirSync(src);
    const { copyFileSync } = await import("node:fs");
    copyFileSync(join(fixturesDir, "prune", "sora-peft", "adapter_model.safetensors"), join(src, "adapter_model.safetensors"));
    const cfg = JSON.parse(readFileSync(join(fixturesDir, "prune", "sora-peft", "adapter_config.json"), "utf8"));
    writeFileSync(join(src, "adapter_config.json"), JSON.stringify({ ...cfg, use_rslora: true }));
    const a0 = await loadAdapter(src);
    const refs = new Map<string, Float64Array>();
    for (const m of a0.modules) {
      assert.ok(Math.abs(m.scale - 16 / Math.sqrt(8)) < 1e-12);
      const f = await readFactors(a0, m, "f64");
      const g = await a0.file.readFloat64(m.extras["gate"]!);
      refs.set(
        m.path,
        deltaW(
          f.B.data.map((b, i) => b * g[i % m.rank]!),
          f.A.data,
          m.out,
          m.rank,
          m.in,
          m.scale,
        ),
      );
    }
    await a0.file.close();
    const out = join(dir, "out");
    await runPrune({ input: src, output: out, method: "sora", fold: "balanced", force: false }, { backend: be });
    const a = await loadAdapter(out);
    try {
      assert.equal(JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")).use_rslora, true);
      for (const m of a.modules) assert.ok(relDiff(await denseOf(a, m.name), refs.get(m.path)!) <= 1e-6, m.path);
    } finally {
      await a.file.close();
    }
  } finally {
    done();
  }
});
