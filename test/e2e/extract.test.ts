// `lora extract` and `lora apply` end to end (spawns bin/lora.js) on generated models with real
// naming (test/models.ts: Llama single-file and sharded, GPT-2 Conv1D, SD UNet in the diffusers
// layout), checked against test/model_reference.py (numpy float64, reading the files itself):
//   extract --exact: every module within 1e-5 (relative, Frobenius) of the dense optimum ΔW_r;
//   extract (randomized, default): error ≤ 1.001 × the optimum's (the stated 0.1%);
//   a known rank-4 fine-tune (tuned = base + B·A) recovered at rank 4 to 1e-5;
//   apply: W + s·ΔW (ΔW from PEFT's own code via ../shared/tools/peft-check when present) within
//     one rounding of the output dtype plus the float32 product bound (F32, F16, BF16);
//   apply then --subtract: the base within one rounding (≤ 1 ulp of |W| + |ΔW|);
//   extract ∘ apply: the adapter's ΔW again (1e-4 relative: the merged F32 weights' rounding);
//   bad input (names, shapes, dtypes) exits 3 with nothing written; SIGINT leaves nothing.
// Fresh seed per run, printed (LORA_TEST_SEED replays).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { writeAdapter, type OutModule } from "../../formats/adapter/write.js";
import { Rng } from "../../linalg/random.js";
import { writeGeneratedModel, type PairSpec } from "../models.js";
import { loraBin, repoRoot } from "../paths.js";
import { peftCheckUnavailable, peftDeltas } from "../peft-check.js";
import { hasNumpy } from "../reference.js";

const SEED = process.env["LORA_TEST_SEED"] !== undefined ? Number(process.env["LORA_TEST_SEED"]) : Date.now() % 1_000_000;
console.log(`extract.test seed=${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

const tmp = mkdtempSync(join(tmpdir(), "lora-extract-e2e-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const noNumpy = hasNumpy() ? false : "python3 with numpy not found";
const noPeft = peftCheckUnavailable();

function lora(args: string[], env: Record<string, string> = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [loraBin, ...args], {
    env: { ...process.env, LORA_TEST: "1", NO_COLOR: "1", ...env },
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function ref<T>(...args: string[]): T {
  const r = spawnSync("python3", [join(repoRoot, "test", "model_reference.py"), ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`model_reference.py ${args[0]} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface ExtractRef {
  modules: { name: string; rank: number; rel_to_opt: number; err: number; opt_err: number; norm: number }[];
  missing: string[];
}

const SIZE = { layers: 2, hidden: 48, inter: 80, vocab: 64, kv: 24 };
const spec = (family: PairSpec["family"], extra: Partial<PairSpec> = {}): PairSpec => ({
  family,
  size: SIZE,
  dtype: "F32",
  rank: 4,
  noise: 1e-3,
  seed: SEED,
  ...extra,
});

const M: Record<string, { base: string; tuned: string }> = {};
async function pair(key: string, s: PairSpec, shards: number): Promise<void> {
  const base = join(tmp, `${key}-base`),
    tuned = join(tmp, `${key}-tuned`);
  await writeGeneratedModel(base, s, false, shards);
  await writeGeneratedModel(tuned, s, true, shards);
  M[key] = { base, tuned };
}

before(async () => {
  await pair("llama-sharded", spec("llama"), 3);
  await pair("llama-lowrank", spec("llama", { noise: 0, seed: SEED + 1 }), 1);
  await pair("gpt2", spec("gpt2", { seed: SEED + 2 }), 1);
  await pair("unet", spec("unet", { seed: SEED + 3 }), 2);
  await pair("llama-partial", spec("llama", { seed: SEED + 4, changes: (name) => !/q_proj|up_proj/.test(name) }), 1);
});

function tempLeft(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.startsWith("."));
}

describe("lora extract against the dense float64 optimum (numpy)", { skip: noNumpy }, () => {
  for (const key of ["llama-sharded", "gpt2", "unet"]) {
    for (const rank of [2, 4]) {
      test(`${key}, rank ${rank}: --exact within 1e-5 of the optimum; the default within 0.1% of its error`, () => {
        const { base, tuned } = M[key]!;
        const ext = key === "unet" ? ".safetensors" : "";
        const exact = join(tmp, `${key}-r${rank}-exact${ext}`),
          dflt = join(tmp, `${key}-r${rank}${ext}`);
        let r = lora(["extract", base, tuned, "--rank", String(rank), "--exact", "-o", exact, "--json", "--seed", String(SEED)]);
        assert.equal(r.status, 0, r.stderr);
        const rep = JSON.parse(r.stdout) as { format: string; modules: { name: string; relative_error: number; route: string }[] };
        assert.equal(rep.format, key === "unet" ? "kohya" : "peft");
        const e = ref<ExtractRef>("extract", base, tuned, exact, String(rank));
        assert.deepEqual(e.missing, [], "every changed weight is in the adapter");
        assert.equal(e.modules.length, rep.modules.length);
        for (const m of e.modules) {
          assert.equal(m.rank, rank);
          assert.ok(m.rel_to_opt <= 1e-5, `${m.name}: ${m.rel_to_opt} from the optimum`);
        }
        r = lora(["extract", base, tuned, "--rank", String(rank), "-o", dflt, "--json", "--seed", String(SEED)]);
        assert.equal(r.status, 0, r.stderr);
        const rd = JSON.parse(r.stdout) as { modules: { name: string; relative_error: number; excess_estimate: number | null }[] };
        const d = ref<ExtractRef>("extract", base, tuned, dflt, String(rank));
        for (const m of d.modules) assert.ok(m.err <= 1.001 * m.opt_err, `${m.name}: error ${m.err} vs optimum ${m.opt_err}`);
        // the reported relative error is the true one (float32 products: 1e-3 absolute on ~1e-1)
        const byName = new Map(rd.modules.map((m) => [m.name, m]));
        for (const m of d.modules) {
          const mine = byName.get(m.name.replace(/^lora_unet_/, "")) ?? [...byName.values()].find((x) => m.name.endsWith(x.name.replace(/\./g, "_")));
          assert.ok(mine, m.name);
          assert.ok(
            Math.abs(mine.relative_error - m.err / m.norm) <= 1e-3 * (m.err / m.norm) + 1e-4,
            `${m.name}: reported ${mine.relative_error}, true ${m.err / m.norm}`,
          );
          assert.ok(
            mine.excess_estimate !== null && mine.excess_estimate >= 0 && mine.excess_estimate <= 1e-3,
            `${m.name}: excess estimate ${mine.excess_estimate}`,
          );
        }
      });
    }
  }

  test("a known rank-4 fine-tune (tuned = base + B·A) is recovered at rank 4", () => {
    const { base, tuned } = M["llama-lowrank"]!;
    const out = join(tmp, "lowrank-r4");
    const r = lora(["extract", base, tuned, "--rank", "4", "-o", out, "--base-name", "test/llama", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const e = ref<ExtractRef>("extract", base, tuned, out, "4");
    for (const m of e.modules) assert.ok(m.err <= 1e-5 * m.norm, `${m.name}: ${m.err / m.norm}`);
    // the report says so too (measured directly, not as a difference of energies)
    const rep = JSON.parse(r.stdout) as { modules: { name: string; relative_error: number }[] };
    const truth = new Map(e.modules.map((m) => [m.name, m.err / m.norm]));
    for (const m of rep.modules)
      assert.ok(Math.abs(m.relative_error - truth.get(m.name)!) <= 1e-7, `${m.name}: reported ${m.relative_error}, true ${truth.get(m.name)}`);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(cfg["base_model_name_or_path"], "test/llama");
    assert.ok((cfg["target_modules"] as string[]).includes("model.layers.1.mlp.down_proj"));
  });

  test("--low-memory (every weight streamed, a few rows a panel): within 0.1% of the optimum, the default's errors; a rank-4 fine-tune recovered", () => {
    // The test hooks stream weights of any size and read them in panels of ~600 bytes (the test models are small).
    const hooks = { LORA_TEST_STREAM_FROM: "1", LORA_TEST_PANEL_BYTES: "600" };
    for (const key of ["llama-sharded", "gpt2", "unet", "llama-lowrank"]) {
      const { base, tuned } = M[key]!;
      const ext = key === "unet" ? ".safetensors" : "";
      const low = join(tmp, `${key}-low${ext}`),
        dflt = join(tmp, `${key}-low-default${ext}`);
      const r = lora(["extract", base, tuned, "--rank", "4", "--low-memory", "-o", low, "--json", "--seed", String(SEED)], hooks);
      assert.equal(r.status, 0, r.stderr);
      const rl = JSON.parse(r.stdout) as { modules: { name: string; relative_error: number; route: string }[] };
      assert.ok(rl.modules.every((m) => m.route === "randomized"));
      const d = lora(["extract", base, tuned, "--rank", "4", "-o", dflt, "--json", "--seed", String(SEED)]);
      assert.equal(d.status, 0, d.stderr);
      const held = new Map((JSON.parse(d.stdout) as typeof rl).modules.map((m) => [m.name, m.relative_error]));
      const e = ref<ExtractRef>("extract", base, tuned, low, "4");
      assert.deepEqual(e.missing, []);
      for (const m of e.modules) {
        if (key === "llama-lowrank") assert.ok(m.err <= 1e-5 * m.norm, `${key} ${m.name}: ${m.err / m.norm}`);
        else assert.ok(m.err <= 1.001 * m.opt_err, `${key} ${m.name}: error ${m.err} vs optimum ${m.opt_err}`);
      }
      if (key === "llama-lowrank") {
        // with --exact the flag says it changes nothing
        const ex = lora(["extract", base, tuned, "--rank", "4", "--low-memory", "--exact", "-o", join(tmp, "low-exact"), "--json"], hooks);
        assert.equal(ex.status, 0, ex.stderr);
        assert.ok((JSON.parse(ex.stdout) as { notes: string[] }).notes.some((n) => /--low-memory has no effect with --exact/.test(n)));
      }
      for (const m of rl.modules) {
        const h = held.get(m.name)!;
        assert.ok(Math.abs(m.relative_error - h) <= 1e-4 * h + 1e-6, `${key} ${m.name}: ${m.relative_error} streamed, ${h} held`);
      }
    }
  });

  test("weights identical in both models are left out (held and --low-memory); identical models exit 3 with nothing written", () => {
    const { base, tuned } = M["llama-partial"]!;
    const hooks = { LORA_TEST_STREAM_FROM: "1", LORA_TEST_PANEL_BYTES: "600" };
    for (const low of [false, true]) {
      const out = join(tmp, `partial-${low}`);
      const r = lora(["extract", base, tuned, "--rank", "4", "-o", out, "--json", ...(low ? ["--low-memory"] : [])], low ? hooks : {});
      assert.equal(r.status, 0, r.stderr);
      const rep = JSON.parse(r.stdout) as { modules: { name: string }[]; unchanged: string[] };
      const same = rep.unchanged.slice().sort();
      assert.deepEqual(same, [
        "model.layers.0.mlp.up_proj",
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.up_proj",
        "model.layers.1.self_attn.q_proj",
      ]);
      assert.ok(!rep.modules.some((m) => /q_proj|up_proj/.test(m.name)) && rep.modules.length > 0);
      const e = ref<ExtractRef>("extract", base, tuned, out, "4");
      for (const m of e.modules) assert.ok(m.err <= 1.001 * m.opt_err, `${m.name}: error ${m.err} vs optimum ${m.opt_err}`);
      // --budget shares the ranks among the weights that differ (those --rank wrote), as its note says.
      const b = lora(
        ["extract", base, tuned, "--budget", "8", "-o", join(tmp, `partial-budget-${low}`), "--json", ...(low ? ["--low-memory"] : [])],
        low ? hooks : {},
      );
      assert.equal(b.status, 0, b.stderr);
      const notes = (JSON.parse(b.stdout) as { notes: string[] }).notes;
      const differ = new RegExp(`ranks shared by energy \\(${rep.modules.length} weights that differ\\)`);
      assert.ok(
        notes.some((n) => differ.test(n)),
        notes.join(" | "),
      );
      const same2 = join(tmp, `same-${low}`);
      const s = lora(["extract", base, base, "--rank", "4", "-o", same2, ...(low ? ["--low-memory"] : [])], low ? hooks : {});
      assert.equal(s.status, 3, s.stderr);
      assert.match(s.stderr, /identical in every selected weight/);
      assert.ok(!existsSync(same2));
    }
  });

  test("weights side by side (two lanes, one BLAS thread each) give what one weight at a time gives, --budget included", () => {
    const { base, tuned } = M["llama-sharded"]!;
    for (const how of [
      ["--rank", "4"],
      ["--budget", "30"],
    ]) {
      const run = (threads: string) => {
        const out = join(tmp, `lanes-${how[0]!.slice(2)}-${threads}`);
        const r = lora(["extract", base, tuned, ...how, "--threads", threads, "--backend", "cpu", "-o", out, "--json", "--seed", String(SEED)]);
        assert.equal(r.status, 0, r.stderr);
        return {
          out,
          modules: (JSON.parse(r.stdout) as { modules: { name: string; rank: number; relative_error: number; power_iterations: number }[] }).modules,
        };
      };
      const one = run("1"),
        two = run("2");
      assert.deepEqual(
        two.modules.map((m) => [m.name, m.rank, m.power_iterations]),
        one.modules.map((m) => [m.name, m.rank, m.power_iterations]),
        "the same weights in the same order, ranks and iterations",
      );
      two.modules.forEach((m, i) => {
        const e = one.modules[i]!.relative_error;
        assert.ok(Math.abs(m.relative_error - e) <= 1e-5 * e + 1e-7, `${m.name}: ${m.relative_error} in two lanes, ${e} in one`);
      });
      // every factor read back where the spill put it: the adapter is still within 0.1% of the optimum
      const e = ref<ExtractRef>("extract", base, tuned, two.out, "0");
      if (how[0] === "--rank") assert.deepEqual(e.missing, []); // (--budget may give a weight no rank)
      assert.equal(e.modules.length, two.modules.length);
      for (const m of e.modules) {
        assert.ok(m.err <= 1.001 * m.opt_err, `${m.name}: error ${m.err} vs optimum ${m.opt_err} at its rank ${m.rank}`);
        const mine = two.modules.find((x) => x.name === m.name)!;
        assert.ok(
          Math.abs(mine.relative_error - m.err / m.norm) <= 1e-3 * (m.err / m.norm) + 1e-4,
          `${m.name}: reported ${mine.relative_error}, true ${m.err / m.norm}`,
        );
      }
    }
  });

  test("--energy F: each module keeps ≥ F of ‖ΔW‖²; --budget K: K ranks in total", () => {
    const { base, tuned } = M["llama-sharded"]!;
    let r = lora(["extract", base, tuned, "--energy", "0.9", "-o", join(tmp, "e90"), "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const e = ref<ExtractRef>("extract", base, tuned, join(tmp, "e90"), "0");
    for (const m of e.modules) assert.ok(1 - (m.err / m.norm) ** 2 >= 0.9 - 1e-6, `${m.name}: ${1 - (m.err / m.norm) ** 2}`);
    r = lora(["extract", base, tuned, "--budget", "30", "-o", join(tmp, "b30"), "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const b = JSON.parse(r.stdout) as { totals: { rank: number } };
    assert.equal(b.totals.rank, 30);
  });
});

/** A PEFT adapter on some Llama weights: ranks 3 and 5 (rank_pattern), alpha 8 (scales 8/3, 8/5), F32. */
async function peftAdapter(dir: string): Promise<void> {
  const rng = new Rng(SEED + 9);
  const H = SIZE.hidden,
    I = SIZE.inter,
    kv = SIZE.kv;
  const mods: [string, number, number, number][] = [
    ["model.layers.0.self_attn.q_proj", H, H, 3],
    ["model.layers.0.self_attn.v_proj", kv, H, 5],
    ["model.layers.1.mlp.down_proj", H, I, 3],
    ["lm_head", SIZE.vocab, H, 5],
  ];
  const modules: OutModule[] = mods.map(([path, out, inn, rank]) => ({
    path,
    kind: "linear",
    rank,
    alpha: 8,
    out,
    in: inn,
    dtype: "F32",
    produce: async () => ({ A: Float32Array.from(rng.normals(rank * inn, 0.3)), B: Float32Array.from(rng.normals(out * rank, 0.05)) }),
  }));
  await writeAdapter(
    dir,
    { format: "peft", modules, passthrough: [], metadata: {}, baseConfig: { base_model_name_or_path: "test/llama" } },
    { force: true, inputs: [] },
  );
}

describe("lora apply: W + s·ΔW as PEFT merges it, one rounding of the base's dtype", { skip: noNumpy }, () => {
  let adapter = "";
  before(async () => {
    adapter = join(tmp, "peft-adapter");
    await peftAdapter(adapter);
  });

  for (const dtype of ["F32", "F16", "BF16"] as const) {
    test(`Llama ${dtype}, sharded, --scale 0.7; then --subtract gives the base back`, async () => {
      const base = join(tmp, `apply-base-${dtype}`);
      await writeGeneratedModel(base, spec("llama", { dtype, seed: SEED + 20 }), false, 2);
      const out = join(tmp, `apply-out-${dtype}`);
      const r = lora(["apply", base, adapter, "--scale", "0.7", "-o", out, "--json"]);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(readdirSync(out).sort(), readdirSync(base).sort(), "same files: shards, index, config, tokenizer");
      const npz = noPeft ? [] : [peftDeltas(adapter)];
      if (noPeft) console.log(`# ΔW from the factors (PEFT check skipped: ${noPeft})`);
      const a = ref<{ worst: number; weights: number; others_identical: boolean; same_names: boolean }>("apply", base, out, "0.7", "1", adapter, ...npz);
      assert.equal(a.weights, 4);
      assert.ok(a.same_names && a.others_identical);
      assert.ok(a.worst <= 1, `worst ${a.worst} of the tolerance (one ${dtype} ulp + float32 product bound)`);
      const back = join(tmp, `apply-back-${dtype}`);
      const s = lora(["apply", out, adapter, "--scale", "0.7", "--subtract", "-o", back]);
      assert.equal(s.status, 0, s.stderr);
      const same = ref<{ worst: number }>("same", base, back, "0.7", adapter);
      assert.ok(same.worst <= 1, `subtract: worst ${same.worst} ulp of |W| + |ΔW|`);
    });
  }

  test("a base named as its weights file brings only the model's side files, not the rest of its folder", async () => {
    const base = join(tmp, "apply-file-base");
    await writeGeneratedModel(base, spec("llama", { seed: SEED + 21 }), false, 1);
    const modelFiles = readdirSync(base).sort();
    assert.ok(modelFiles.includes("config.json") && modelFiles.includes("model.safetensors"), modelFiles.join(", "));
    writeFileSync(join(base, "notes.txt"), "not part of the model");
    const out = join(tmp, "apply-file-out");
    const r = lora(["apply", join(base, "model.safetensors"), adapter, "-o", out]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(readdirSync(out).sort(), modelFiles, "the weights and the model's side files, no notes.txt");
    // Named as a directory, every file of it belongs to the model and comes along.
    const outDir = join(tmp, "apply-dir-out");
    assert.equal(lora(["apply", base, adapter, "-o", outDir]).status, 0);
    assert.deepEqual(readdirSync(outDir).sort(), [...modelFiles, "notes.txt"].sort());
  });

  test("GPT-2 (Conv1D, fan_in_fan_out) and an SD UNet (kohya, diffusers layout): extract then apply round-trips ΔW", () => {
    for (const key of ["gpt2", "unet"]) {
      const { base } = M[key]!;
      const ext = key === "unet" ? ".safetensors" : "";
      const adapterX = join(tmp, `${key}-r4${ext}`); // the default extract at rank 4 (test above)
      if (!existsSync(adapterX)) assert.equal(lora(["extract", base, M[key]!.tuned, "--rank", "4", "-o", adapterX]).status, 0);
      const merged = join(tmp, `${key}-merged`);
      let r = lora(["apply", base, adapterX, "-o", merged]);
      assert.equal(r.status, 0, r.stderr);
      const npz = noPeft || key === "unet" ? [] : [peftDeltas(adapterX)];
      const a = ref<{ worst: number; others_identical: boolean }>("apply", base, merged, "1", "1", adapterX, ...npz);
      assert.ok(a.worst <= 1 && a.others_identical, `${key}: ${JSON.stringify(a)}`);
      const again = join(tmp, `${key}-again${ext}`);
      r = lora(["extract", base, merged, "--rank", "4", "-o", again]);
      assert.equal(r.status, 0, r.stderr);
      const d = ref<{ worst: number }>("delta-diff", base, adapterX, again);
      assert.ok(d.worst <= 1e-4, `${key}: extract ∘ apply differs by ${d.worst}`);
    }
  });
});

describe("bad input exits 3 before anything is written; SIGINT leaves nothing", () => {
  test("extract: a missing tensor, a shape and a dtype mismatch", async () => {
    const s = spec("llama", { seed: SEED + 30 });
    const base = join(tmp, "bad-base"),
      tuned = join(tmp, "bad-tuned-dtype");
    await writeGeneratedModel(base, s, false);
    await writeGeneratedModel(tuned, { ...s, dtype: "BF16" }, true);
    const other = join(tmp, "bad-tuned-shape");
    await writeGeneratedModel(other, { ...s, size: { ...SIZE, inter: SIZE.inter + 8 } }, true);
    const fewer = join(tmp, "bad-tuned-names");
    await writeGeneratedModel(fewer, { ...s, size: { ...SIZE, layers: 1 } }, true);
    for (const [t, re] of [
      [tuned, /dtype F32 in BASE but BF16/],
      [other, /shape/],
      [fewer, /only in BASE/],
    ] as const) {
      const out = join(tmp, "bad-out");
      const r = lora(["extract", base, t, "--rank", "2", "-o", out]);
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, re);
      assert.ok(!existsSync(out));
    }
    assert.deepEqual(tempLeft(tmp), []);
  });

  test("extract: a ΔW too large for the float32 products (±3e38 in one weight) names the weight; --exact, and ±3e16, still extract", async () => {
    const s = spec("llama", { seed: SEED + 32 });
    const base = join(tmp, "huge-base");
    await writeGeneratedModel(base, s, false);
    const weight = "model.layers.1.mlp.down_proj.weight";
    /** The tuned model with elements 1 and 2 of `weight` set to ±v (F32, patched in place in the file). */
    const tunedWith = async (v: number): Promise<string> => {
      const dir = join(tmp, `huge-tuned-${v}`);
      await writeGeneratedModel(dir, s, true);
      const file = join(dir, "model.safetensors");
      const bytes = readFileSync(file);
      const n = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; data_offsets: [number, number] }>;
      const at = 8 + n + header[weight]!.data_offsets[0];
      assert.equal(header[weight]!.dtype, "F32");
      bytes.writeFloatLE(v, at + 4);
      bytes.writeFloatLE(-v, at + 8);
      writeFileSync(file, bytes);
      return dir;
    };
    const huge = await tunedWith(3e38);
    const hooks = { LORA_TEST_STREAM_FROM: "1", LORA_TEST_PANEL_BYTES: "600" };
    for (const [args, env] of [
      [["--rank", "2"], {}],
      [["--rank", "2", "--low-memory"], hooks],
      [["--budget", "6"], {}],
    ] as const) {
      const out = join(tmp, "huge-out");
      const r = lora(["extract", base, huge, ...args, "-o", out], env);
      assert.equal(r.status, 3, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /tensor model\.layers\.1\.mlp\.down_proj\.weight: TUNED − BASE is too large for the float32 products/, args.join(" "));
      assert.ok(!existsSync(out), args.join(" "));
      assert.deepEqual(tempLeft(tmp), [], args.join(" "));
    }
    // --exact: the SVD of ΔW in float64 carries it.
    const exact = lora(["extract", base, huge, "--rank", "2", "--exact", "-o", join(tmp, "huge-exact")]);
    assert.equal(exact.status, 0, exact.stderr);
    const fine = await tunedWith(3e16);
    const r = lora(["extract", base, fine, "--rank", "2", "-o", join(tmp, "huge-fine")]);
    assert.equal(r.status, 0, r.stderr);
  });

  test("apply: an adapter for another model (names) or another size (shapes)", async () => {
    const s = spec("llama", { seed: SEED + 31 });
    const base = join(tmp, "bad-apply-base");
    await writeGeneratedModel(base, s, false);
    const small = join(tmp, "bad-apply-small");
    await writeGeneratedModel(small, { ...s, size: { ...SIZE, hidden: 32, kv: 16 } }, false);
    const gpt = join(tmp, "gpt2-r4");
    if (!existsSync(gpt)) assert.equal(lora(["extract", M["gpt2"]!.base, M["gpt2"]!.tuned, "--rank", "4", "-o", gpt]).status, 0);
    const adapter = join(tmp, "peft-adapter-bad");
    await peftAdapter(adapter);
    for (const [b, a, re] of [
      [base, gpt, /no weight in BASE/],
      [small, adapter, /is 48×48 but/],
    ] as const) {
      const out = join(tmp, "bad-apply-out");
      const r = lora(["apply", b, a, "-o", out]);
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, re);
      assert.ok(!existsSync(out));
    }
    assert.deepEqual(tempLeft(tmp), []);
  });

  test("SIGINT during extract and during apply: exit 130, no output, no temp or scratch file", async () => {
    const big = { layers: 2, hidden: 512, inter: 1024, vocab: 64 };
    const s: PairSpec = { family: "llama", size: big, dtype: "F32", rank: 4, noise: 1e-3, seed: SEED + 40 };
    const dir = mkdtempSync(join(tmp, "sigint-"));
    const base = join(dir, "base"),
      tuned = join(dir, "tuned");
    await writeGeneratedModel(base, s, false);
    await writeGeneratedModel(tuned, s, true);
    const adapter = join(dir, "a");
    assert.equal(lora(["extract", base, tuned, "--rank", "2", "--modules", "q_proj", "-o", adapter]).status, 0);
    for (const args of [
      ["extract", base, tuned, "--rank", "64", "--exact", "-o", join(dir, "out")],
      ["apply", base, adapter, "-o", join(dir, "out")],
    ]) {
      const child = spawn(process.execPath, [loraBin, ...args], { env: { ...process.env, NO_COLOR: "1" }, stdio: "ignore" });
      // interrupt once the run has started writing (a scratch or temp file appears), or after 3 s
      const t0 = Date.now();
      while (Date.now() - t0 < 3000 && !readdirSync(dir).some((f) => f.startsWith("."))) await new Promise((res) => setTimeout(res, 20));
      child.kill("SIGINT");
      const code = await new Promise<number | null>((res) => child.on("exit", (c) => res(c)));
      assert.equal(code, 130, `${args[0]}: exit ${code}`);
      assert.ok(!existsSync(join(dir, "out")));
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.startsWith(".")),
        [],
        `${args[0]} left temp files`,
      );
    }
  });
});
