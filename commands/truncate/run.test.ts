// runTruncate end to end in-process: outputs reloaded under the loaders' rules (PEFT config ranks
// must match tensor shapes, rank_pattern/alpha_pattern/rsLoRA resolved as PEFT does) and their ΔW
// compared with an independent dense float64 optimum; --budget/--energy ranks compared with
// `lora inspect` and with the global greedy top-K of σ²; kohya-compat ranks on the golden spectrum;
// DyLoRA prefixes, --unit splits, conv/embedding modules, dtypes, errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAdapter, readFactors, regexEscape, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import { encodeFloats, serializeSafetensors, type DType, type TensorSpec } from "../../formats/safetensors/index.js";
import { jsBackend } from "../../linalg/js/index.js";
import { gemm64, qr64 } from "../../linalg/js/dense.js";
import { Rng } from "../../linalg/random.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { fixturesDir } from "../../test/paths.js";
import { optimal, relDiff } from "../../test/reference.js";
import { runInspect } from "../inspect/run.js";
import type { WriteReport } from "../../surgery/report.js";
import { isSplitReport, runTruncate, type TruncateOptions } from "./run.js";
import { slowedBackend } from "../../test/slowed-backend.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`truncate run.test seed=${seed}`);

const work = mkdtempSync(join(tmpdir(), "lora-truncate-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
let counter = 0;
const fresh = (name: string) => join(work, `${counter++}-${name}`);

let be: LinalgBackend = jsBackend;
try {
  const { resolveBackend } = await import("../../linalg/backend.js");
  be = (await resolveBackend("auto")).backend;
} catch {
  /* js */
}

const defaults: Omit<TruncateOptions, "input" | "output"> = { score: "energy", minRank: 0, rho: 2, alphaMode: "keep", kohyaCompat: false, force: false };

async function truncate(input: string, output: string, extra: Partial<TruncateOptions>): Promise<WriteReport> {
  const r = await runTruncate({ ...defaults, input, output, ...extra }, { backend: be });
  assert.ok(!isSplitReport(r));
  return r;
}

/** Dense ΔW = scale·B·A of a loaded module (float64, B@A orientation). */
async function deltaW(a: Adapter, m: LoraModule): Promise<Float64Array> {
  const f = await readFactors(a, m, "f64");
  return gemm64(f.B.data, m.out, m.rank, f.A.data, m.rank, m.in, false, false, m.scale).data;
}

async function withAdapter<T>(path: string, f: (a: Adapter) => Promise<T>): Promise<T> {
  const a = await loadAdapter(path);
  try {
    return await f(a);
  } finally {
    await a.file.close();
  }
}

/** Input ΔW per module name. */
async function inputDeltas(path: string): Promise<Map<string, { W: Float64Array; m: LoraModule }>> {
  return withAdapter(path, async (a) => {
    const out = new Map<string, { W: Float64Array; m: LoraModule }>();
    for (const m of a.modules) out.set(m.matchKey, { W: await deltaW(a, m), m });
    return out;
  });
}

/** Every output module's ΔW is the optimal rank-t approximation of the input's (t = its rank). */
async function assertOptimal(input: string, output: string, tol: number, label: string): Promise<Map<string, number>> {
  const ins = await inputDeltas(input);
  return withAdapter(output, async (a) => {
    const ranks = new Map<string, number>();
    for (const m of a.modules) {
      const src = ins.get(m.matchKey);
      assert.ok(src, `${label}: output module ${m.name} not in the input`);
      const want = optimal(src.W, m.out, m.in, m.rank).P;
      const d = relDiff(await deltaW(a, m), want);
      assert.ok(d <= tol, `${label}: ${m.name} rank ${m.rank}: ‖ΔW' − [ΔW]_t‖/‖[ΔW]_t‖ = ${d}`);
      ranks.set(m.name, m.rank);
    }
    return ranks;
  });
}

interface Mod {
  path: string;
  out: number;
  in: number;
  r: number;
  alpha?: number;
  mult?: number;
}

/** A fresh random PEFT adapter directory (F32 unless said), with rank_pattern/alpha_pattern as needed. */
async function makePeft(rng: Rng, mods: Mod[], opts: { rslora?: boolean; r?: number; alpha?: number; dtype?: DType; decay?: boolean } = {}): Promise<string> {
  const dir = fresh("peft-in");
  mkdirSync(dir);
  const specs: TensorSpec[] = [];
  const r0 = opts.r ?? 8,
    a0 = opts.alpha ?? 16;
  const rank_pattern: Record<string, number> = {},
    alpha_pattern: Record<string, number> = {};
  for (const m of mods) {
    const base = "base_model.model." + m.path;
    const A = rng.normals(m.r * m.in, 1 / Math.sqrt(m.in));
    const B = rng.normals(m.out * m.r, 0.05 * (m.mult ?? 1));
    if (opts.decay) for (let i = 0; i < m.out; i++) for (let c = 0; c < m.r; c++) B[i * m.r + c]! *= 0.6 ** c;
    specs.push({ name: base + ".lora_A.weight", dtype: opts.dtype ?? "F32", shape: [m.r, m.in], data: encodeFloats(opts.dtype ?? "F32", A) });
    specs.push({ name: base + ".lora_B.weight", dtype: opts.dtype ?? "F32", shape: [m.out, m.r], data: encodeFloats(opts.dtype ?? "F32", B) });
    if (m.r !== r0) rank_pattern[regexEscape(m.path)] = m.r;
    if ((m.alpha ?? a0) !== a0) alpha_pattern[regexEscape(m.path)] = m.alpha!;
  }
  specs.push({ name: "base_model.model.score.weight", dtype: "F32", shape: [2, 4], data: encodeFloats("F32", rng.normals(8)) });
  writeFileSync(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
  writeFileSync(
    join(dir, "adapter_config.json"),
    JSON.stringify({
      peft_type: "LORA",
      r: r0,
      lora_alpha: a0,
      use_rslora: !!opts.rslora,
      target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"],
      rank_pattern,
      alpha_pattern,
      modules_to_save: ["score"],
      task_type: "CAUSAL_LM",
    }),
  );
  return dir;
}

const llama = (layers: number, d: number, ranks: (l: number, t: string) => number, alpha?: (l: number, t: string) => number | undefined): Mod[] => {
  const out: Mod[] = [];
  for (let l = 0; l < layers; l++)
    for (const t of ["q_proj", "k_proj", "v_proj", "o_proj"]) {
      const a = alpha?.(l, t);
      out.push({ path: `model.layers.${l}.self_attn.${t}`, out: t === "k_proj" ? d / 2 : d, in: d, r: ranks(l, t), ...(a !== undefined ? { alpha: a } : {}) });
    }
  return out;
};

test("--rank on PEFT (mixed ranks, alpha_pattern): optimal ΔW per module, config ranks match shapes, r ≤ R copied byte for byte", async () => {
  const rng = new Rng(seed);
  const input = await makePeft(
    rng,
    llama(
      2,
      24,
      (l, t) => (t === "k_proj" ? 3 : l === 1 && t === "o_proj" ? 12 : 8),
      (l, t) => (t === "v_proj" ? 4 : l === 0 && t === "q_proj" ? 32 : undefined),
    ),
  );
  for (const split of ["balanced", "all-in-up"] as const) {
    const out = fresh("peft-r4");
    const rep = await truncate(input, out, { rank: 4, split });
    const ranks = await assertOptimal(input, out, 1e-5, `--rank 4 ${split}`);
    for (const [name, r] of ranks) assert.equal(r, name.endsWith("k_proj") ? 3 : 4);
    // k_proj (rank 3 ≤ 4) is copied unchanged; its report says error 0.
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.r, 4);
    assert.deepEqual(cfg.modules_to_save, ["score"]);
    assert.deepEqual(cfg.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
    for (const m of rep.modules) {
      if (m.name.endsWith("k_proj")) assert.equal(m.relative_error, 0);
      else
        assert.ok(Math.abs(m.relative_error - Math.sqrt(1 - m.retained_energy!)) < 1e-6, `${m.name}: error ${m.relative_error} vs √(1 − ${m.retained_energy})`);
    }
    await withAdapter(out, async (a) => {
      await withAdapter(input, async (src) => {
        const k = a.modules.find((m) => m.name.endsWith("layers.0.self_attn.k_proj"))!;
        const ks = src.modules.find((m) => m.name === k.name)!;
        assert.deepEqual(await a.file.readRaw(k.A), await src.file.readRaw(ks.A));
        assert.deepEqual(await a.file.readRaw(k.B), await src.file.readRaw(ks.B));
        // The report's norm of each module kept whole (no spectrum pass with --rank): ‖s·B·A‖_F, dense float64.
        for (const m of rep.modules.filter((x) => x.name.endsWith("k_proj"))) {
          const sm = src.modules.find((x) => x.name === m.name)!;
          const norm = Math.hypot(...(await deltaW(src, sm)));
          assert.ok(Math.abs(m.target_norm - norm) <= 1e-10 * norm, `${m.name}: target_norm ${m.target_norm}, dense ${norm}`);
        }
        // Passthrough (the classifier head) byte for byte.
        assert.deepEqual(await a.file.readRaw("base_model.model.score.weight"), await src.file.readRaw("base_model.model.score.weight"));
        // Scale convention kept: alpha' = s·t.
        for (const m of a.modules) {
          const s = src.modules.find((x) => x.name === m.name)!;
          assert.ok(Math.abs(m.scale - s.scale) < 1e-12 * s.scale, `${m.name} scale ${m.scale} vs ${s.scale}`);
        }
      });
    });
  }
});

test("rsLoRA with rank_pattern/alpha_pattern (fixture peft-rslora): alpha' = s·√t, reloaded ΔW optimal", async () => {
  const input = join(fixturesDir, "peft-rslora");
  const out = fresh("rslora.safetensors");
  await truncate(input, out, { rank: 5 });
  await assertOptimal(input, out, 1e-5, "rsLoRA --rank 5");
  await withAdapter(out, async (a) => {
    assert.equal(a.config?.["use_rslora"], true);
    for (const m of a.modules) assert.ok(Math.abs(m.alpha - m.scale * Math.sqrt(m.rank)) < 1e-9 * m.alpha);
  });
});

test("--budget K (every score) and --energy F give exactly the ranks `lora inspect` prints; energy = global greedy top-K of σ²", async () => {
  const rng = new Rng(seed + 1);
  const input = await makePeft(
    rng,
    llama(2, 20, (_l, t) => (t === "k_proj" ? 4 : 8)),
    { decay: true },
  );
  const insp = await runInspect({ input, score: "energy", minRank: 0, rho: 2 }, { backend: be });
  const total = insp.modules.reduce((s, m) => s + m.rank, 0);
  for (const sel of [
    { budget: 10, score: "energy" },
    { budget: 17, score: "energy", minRank: 1 },
    { budget: 12, score: "ratio", rho: 1.2 },
    { budget: 9, score: "params" },
    { energy: 0.8 },
    { energy: 0.95, minRank: 2 },
  ] as const) {
    const opts = { score: "energy" as const, minRank: 0, rho: 2, ...sel };
    const out = fresh("budget.safetensors");
    const rep = await truncate(input, out, opts);
    const ref = await runInspect({ input, ...opts }, { backend: be });
    const got = Object.fromEntries(rep.modules.map((m) => [m.name, m.rank]));
    assert.deepEqual(got, ref.redistribution!.ranks, JSON.stringify(sel));
    // The file holds exactly those ranks (modules at 0 are gone), each the optimal ΔW at its rank.
    const fileRanks = await assertOptimal(input, out, 1e-5, JSON.stringify(sel));
    for (const [name, r] of Object.entries(got)) assert.equal(fileRanks.get(name) ?? 0, r, name);
    assert.equal(rep.dropped.length, Object.values(got).filter((r) => r === 0).length);
    if ("budget" in sel && sel.score === "energy" && !("minRank" in sel)) {
      // Independent check: the K largest σ² over all modules, counted per module.
      const all = insp.modules.flatMap((m) => m.singular_values.map((s) => ({ name: m.name, e: s * s })));
      all.sort((x, y) => y.e - x.e);
      const want: Record<string, number> = Object.fromEntries(insp.modules.map((m) => [m.name, 0]));
      for (const c of all.slice(0, Math.min(sel.budget, total))) want[c.name]!++;
      assert.deepEqual(got, want);
      assert.equal(rep.totals.rank, sel.budget);
    }
  }
});

test("a module at rank 0 is removed from the tensors and from target_modules", async () => {
  const rng = new Rng(seed + 2);
  const mods = llama(1, 16, () => 4);
  mods.find((m) => m.path.endsWith("k_proj"))!.mult = 1e-3; // tiny: the budget drops it
  const input = await makePeft(rng, mods);
  const out = fresh("drop");
  const rep = await truncate(input, out, { budget: 9 });
  assert.deepEqual(rep.dropped, ["model.layers.0.self_attn.k_proj"]);
  const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
  for (const d of rep.dropped) assert.ok(!cfg.target_modules.includes(d), `${d} still targeted`);
  assert.deepEqual(
    [...cfg.target_modules].sort(),
    rep.modules
      .filter((m) => m.rank > 0)
      .map((m) => m.name)
      .sort(),
  );
  await withAdapter(out, async (a) => {
    for (const d of rep.dropped) assert.ok(!a.modules.some((m) => m.name === d));
    for (const d of rep.dropped) assert.ok(!a.file.header.tensors.some((t) => t.name.includes(d + ".")));
  });
});

test("kohya (fixture kohya-sd): per-module F32 .alpha, stems kept, conv written as [r, in, kh, kw], ss_network_dim Dynamic when mixed", async () => {
  const input = join(fixturesDir, "kohya-sd.safetensors");
  const out = fresh("kohya-r2.safetensors");
  await truncate(input, out, { rank: 2 });
  await assertOptimal(input, out, 2e-3, "kohya --rank 2 (F16 factors)");
  await withAdapter(out, async (a) => {
    await withAdapter(input, async (src) => {
      assert.equal(a.format, "kohya");
      assert.deepEqual(
        a.modules.map((m) => m.name),
        src.modules.map((m) => m.name),
      );
      for (const m of a.modules) {
        const alpha = a.file.header.tensors.find((t) => t.name === m.name + ".alpha")!;
        assert.equal(alpha.dtype, "F32");
        assert.deepEqual(alpha.shape, []);
        const s = src.modules.find((x) => x.name === m.name)!;
        assert.ok(Math.abs(m.scale - s.scale) < 1e-6 * s.scale, `${m.name}: kohya rule alpha/r keeps the scale`);
        assert.equal(m.A.dtype, "F16");
      }
      const conv = a.modules.find((m) => m.name.endsWith("conv1"))!;
      assert.deepEqual(conv.A.shape, [2, 16, 3, 3]);
      assert.deepEqual(conv.B.shape, [24, 2, 1, 1]);
      assert.equal(a.metadata["ss_network_dim"], "2");
      assert.equal(a.metadata["ss_network_module"], "networks.lora");
      assert.match(a.metadata["ss_training_comment"]!, /^dimension is resized from Dynamic to 2; generated by/);
    });
  });
  const mixed = fresh("kohya-e.safetensors");
  await truncate(input, mixed, { energy: 0.7 });
  await withAdapter(mixed, async (a) => {
    assert.ok(new Set(a.modules.map((m) => m.rank)).size > 1);
    assert.equal(a.metadata["ss_network_dim"], "Dynamic");
    assert.equal(a.metadata["ss_network_alpha"], "Dynamic");
  });
});

/** A kohya file whose every module has ΔW = U diag(S) Vᵀ (6×6, rank 6, alpha 6 ⇒ scale 1). */
async function goldenKohya(rng: Rng, S: number[], alpha = 6): Promise<string> {
  const specs: TensorSpec[] = [];
  for (const name of ["to_q", "to_k"]) {
    const U = qr64(rng.normals(36), 6, 6).Q,
      V = qr64(rng.normals(36), 6, 6).Q;
    const s = alpha / 6;
    const B = new Float64Array(36),
      A = new Float64Array(36);
    for (let i = 0; i < 6; i++)
      for (let c = 0; c < 6; c++) {
        B[i * 6 + c] = (U[i * 6 + c]! * S[c]!) / s;
        A[c * 6 + i] = V[i * 6 + c]!;
      }
    const stem = `lora_unet_mid_block_attentions_0_${name}`;
    specs.push({ name: stem + ".lora_down.weight", dtype: "F32", shape: [6, 6], data: encodeFloats("F32", A) });
    specs.push({ name: stem + ".lora_up.weight", dtype: "F32", shape: [6, 6], data: encodeFloats("F32", B) });
    specs.push({ name: stem + ".alpha", dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(alpha)) });
  }
  const p = fresh("golden.safetensors");
  writeFileSync(p, await serializeSafetensors(specs, { ss_network_module: "networks.lora", ss_network_dim: "6", ss_network_alpha: String(alpha) }));
  return p;
}

test("--kohya-compat on the golden spectrum §9.9: sv_ratio(5) → 4, sv_cumulative(0.9) → 5, sv_fro(0.95) → 3; clean rule one less", async () => {
  const rng = new Rng(seed + 3);
  const S = [4, 2, 1, 0.5, 0.25, 0.1];
  const input = await goldenKohya(rng, S, 3); // alpha 3 at rank 6: scale 0.5
  for (const [dynamic, param, kohya, clean] of [
    ["sv_ratio", 5, 4, 3],
    ["sv_cumulative", 0.9, 5, 4],
    ["sv_fro", 0.95, 3, 2],
  ] as const) {
    const out = fresh(`${dynamic}.safetensors`);
    const rep = await truncate(input, out, { kohyaCompat: true, dynamic, dynamicParam: param });
    assert.deepEqual(
      rep.modules.map((m) => m.rank),
      [kohya, kohya],
      dynamic,
    );
    await assertOptimal(input, out, 1e-5, dynamic);
    await withAdapter(out, async (a) => {
      for (const m of a.modules) {
        assert.equal(m.alpha, 0.5 * kohya, "new_alpha = (alpha/r)·new_rank"); // kohya's rule
        // kohya's split: up = U·S, down = Vᵀ (orthonormal rows)
        const f = await readFactors(a, m, "f64");
        const aat = gemm64(f.A.data, m.rank, 6, f.A.data, m.rank, 6, false, true, 1).data;
        for (let i = 0; i < m.rank; i++) assert.ok(Math.abs(aat[i * m.rank + i]! - 1) < 1e-6);
      }
      assert.match(a.metadata["ss_training_comment"]!, new RegExp(`^Dynamic resize with ${dynamic}: ${param} from 6; `));
    });
    const c = await truncate(input, fresh(`${dynamic}-clean.safetensors`), { dynamic, dynamicParam: param });
    assert.deepEqual(
      c.modules.map((m) => m.rank),
      [clean, clean],
      `${dynamic} clean`,
    );
  }
  // --rank caps kohya's rule (its --new_rank)
  const capped = await truncate(input, fresh("capped.safetensors"), { kohyaCompat: true, dynamic: "sv_cumulative", dynamicParam: 0.9, rank: 3 });
  assert.deepEqual(
    capped.modules.map((m) => m.rank),
    [3, 3],
  );
});

test("kohya DyLoRA (fixture): prefix by default (with a note), exact slices, alpha kept; --alpha-mode; --unit split files", async () => {
  const input = join(fixturesDir, "kohya-dylora.safetensors");
  const out = fresh("dy4.safetensors");
  const rep = await truncate(input, out, { rank: 4 });
  assert.equal(rep.method, "prefix");
  assert.ok(
    rep.notes.some((n) => /DyLoRA.*--method prefix/.test(n)),
    rep.notes.join("|"),
  );
  const check = async (path: string, b: number, alphaWant: (alpha: number, r: number) => number) => {
    await withAdapter(path, async (a) => {
      await withAdapter(input, async (src) => {
        for (const m of a.modules) {
          const s = src.modules.find((x) => x.name === m.name)!;
          assert.equal(m.rank, b);
          const fa = await readFactors(src, s, "f32"),
            fo = await readFactors(a, m, "f32");
          assert.deepEqual(Array.from(fo.A.data), Array.from(fa.A.data.subarray(0, b * s.in)), "A[:b]");
          for (let i = 0; i < s.out; i++) for (let c = 0; c < b; c++) assert.equal(fo.B.data[i * b + c], fa.B.data[i * s.rank + c], "B[:, :b]");
          assert.ok(Math.abs(m.alpha - alphaWant(s.alpha, s.rank)) < 1e-6, `${m.name} alpha ${m.alpha}`);
        }
      });
    });
  };
  await check(out, 4, (alpha) => alpha);
  const kt = fresh("dy4kt.safetensors");
  await truncate(input, kt, { rank: 4, alphaMode: "kohya-train" });
  await check(kt, 4, (alpha, r) => alpha * Math.sqrt(4 / r));
  // --unit 2: ranks 2, 4, 6 (strictly below the full 8), named <stem>-0002.safetensors …
  const dir = fresh("split");
  mkdirSync(dir);
  const res = await runTruncate({ ...defaults, input, output: join(dir, "dylora.safetensors"), unit: 2 }, { backend: be });
  assert.ok(isSplitReport(res));
  assert.deepEqual(readdirSync(dir).sort(), ["dylora-0002.safetensors", "dylora-0004.safetensors", "dylora-0006.safetensors"]);
  for (const b of [2, 4, 6]) {
    const p = join(dir, `dylora-${String(b).padStart(4, "0")}.safetensors`);
    await check(p, b, (alpha) => alpha);
    await withAdapter(p, async (a) => {
      assert.equal(a.metadata["ss_network_dim"], String(b));
      assert.match(a.metadata["ss_training_comment"]!, new RegExp(`^split from DyLoRA, rank 8 to ${b}; `));
    });
  }
  // The svd method is still available and is then the optimum.
  const svd = fresh("dy-svd.safetensors");
  await truncate(input, svd, { rank: 4, method: "svd" });
  await assertOptimal(input, svd, 1e-5, "DyLoRA --method svd");
});

test("F16 embedding and conv modules (fixture peft-f16-embed-conv): shapes, dtype kept, ΔW optimal up to F16 rounding", async () => {
  const input = join(fixturesDir, "peft-f16-embed-conv");
  const out = fresh("embconv");
  await truncate(input, out, { rank: 2 });
  await assertOptimal(input, out, 2e-3, "embed/conv --rank 2");
  await withAdapter(out, async (a) => {
    const emb = a.modules.find((m) => m.kind === "embedding")!;
    assert.deepEqual(emb.A.shape, [2, 100]);
    assert.ok(a.file.header.tensors.some((t) => t.name.endsWith("embed_tokens.lora_embedding_A")));
    const conv = a.modules.find((m) => m.name.endsWith("conv_in"))!;
    assert.deepEqual(conv.A.shape, [2, 8, 3, 3]);
    assert.deepEqual(conv.B.shape, [16, 2, 1, 1]);
    const p = a.modules.find((m) => m.name.endsWith("proj_out"))!;
    assert.deepEqual(p.A.shape, [2, 16, 1, 1]);
    for (const m of a.modules) assert.equal(m.A.dtype, "F16");
  });
});

test("--dtype and --to: BF16 factors; PEFT → kohya with the same ΔW", async () => {
  const rng = new Rng(seed + 4);
  const input = await makePeft(
    rng,
    llama(1, 16, () => 6),
  );
  const bf = fresh("bf16.safetensors");
  const rep = await truncate(input, bf, { rank: 3, dtype: "BF16" });
  await withAdapter(bf, async (a) => {
    for (const m of a.modules) {
      assert.equal(m.A.dtype, "BF16");
      assert.equal(m.B.dtype, "BF16");
    }
  });
  await assertOptimal(input, bf, 1e-2, "BF16");
  for (const m of rep.modules) assert.ok(m.relative_error > Math.sqrt(1 - m.retained_energy!) - 1e-9, "rounding counted");
  const k = fresh("to-kohya.safetensors");
  await truncate(input, k, { rank: 3, to: "kohya" });
  await withAdapter(k, async (a) => assert.equal(a.format, "kohya"));
  await assertOptimal(input, k, 1e-5, "--to kohya");
});

test("diffusers input keeps its format (PEFT-style keys + lora_adapter_metadata); --to kohya gives kohya stems", async () => {
  for (const f of ["peft-style-metadata.safetensors", "attn-processor-alphas.safetensors"]) {
    const input = join(fixturesDir, "diffusers", f);
    if (!existsSync(input)) continue;
    const out = fresh("diffusers-out");
    const rep = await truncate(input, out, { rank: 2 });
    assert.equal(rep.format, "diffusers");
    await withAdapter(out, async (a) => assert.equal(a.format, "diffusers"));
    await assertOptimal(input, out, 1e-5, `diffusers ${f}`);
    const k = fresh("diffusers-kohya.safetensors");
    await truncate(input, k, { rank: 2, to: "kohya" });
    await withAdapter(k, async (a) => {
      assert.equal(a.format, "kohya");
      for (const m of a.modules) assert.match(m.name, /^lora_(unet|te[12]?)_/);
    });
    await assertOptimal(input, k, 1e-5, `diffusers ${f} → kohya`);
  }
});

test("refusals: DoRA and malformed adapters exit 3, bad options exit 2, and nothing is written", async () => {
  const dir = fresh("refuse");
  mkdirSync(dir);
  const out = join(dir, "out.safetensors");
  const rejects = async (o: Partial<TruncateOptions> & { input: string }, code: number, msg?: RegExp) => {
    await assert.rejects(runTruncate({ ...defaults, output: out, rank: 2, ...o }, { backend: be }), (e: { exitCode?: number; message?: string }) => {
      assert.equal(e.exitCode, code, e.message);
      if (msg) assert.match(e.message!, msg);
      return true;
    });
    assert.deepEqual(readdirSync(dir), [], "nothing written");
  };
  await rejects({ input: join(fixturesDir, "peft-dora") }, 3, /DoRA/);
  for (const f of readdirSync(join(fixturesDir, "bad-adapters"))) await rejects({ input: join(fixturesDir, "bad-adapters", f) }, 3);
  for (const f of readdirSync(join(fixturesDir, "bad")).slice(0, 8)) await rejects({ input: join(fixturesDir, "bad", f) }, 3);
  const ex = join(fixturesDir, "example");
  const usage: Partial<TruncateOptions>[] = [
    { rank: undefined },
    { energy: 0.9 },
    { rank: undefined, energy: 0.9, budget: 3 },
    { dynamic: "sv_fro" },
    { rank: undefined, kohyaCompat: true, energy: 0.5 },
    { method: "prefix", split: "balanced" },
    { method: "svd", alphaMode: "lycoris" },
    { unit: 2 },
    { rank: undefined, unit: 2, method: "svd" },
    { rank: undefined, budget: 0 },
    { rank: undefined, dynamic: "sv_fro", dynamicParam: 1.5 },
  ];
  for (const u of usage) await rejects({ input: ex, ...u }, 2);
  assert.ok(!existsSync(out));
});

test("the fused native route (cpu) writes what the TS route (js) writes: F16 Llama-shaped modules, one cancelling module that falls back", {
  skip: !be.truncateFactors && "no backend with truncateFactors here",
}, async () => {
  const rng = new Rng(seed + 7);
  const mods = llama(2, 48, () => 8);
  const input = await makePeft(rng, mods, { dtype: "F16", decay: true });
  // Make layers.1.v_proj cancel: B = [x x …], A rows y and −y + small (sBA tiny next to s‖B‖‖A‖).
  {
    const file = join(input, "adapter_model.safetensors");
    const a = await loadAdapter(input);
    const specs: TensorSpec[] = [];
    for (const t of a.file.tensors) {
      const data = new Uint8Array(await a.file.readRaw(t));
      if (t.name.includes("layers.1.self_attn.v_proj")) {
        const [rows, cols] = t.shape as [number, number];
        const v = new Float64Array(rows * cols);
        if (t.name.includes("lora_B"))
          for (let i = 0; i < rows; i++) {
            const x = rng.normal() * 0.05;
            for (let c = 0; c < cols; c++) v[i * cols + c] = x;
          }
        else
          for (let j = 0; j < cols; j++) {
            const y = rng.normal() * 0.1;
            for (let k = 0; k < rows; k++) v[k * cols + j] = (k % 2 ? -y : y) + (k === rows - 1 ? 1e-4 * Math.cos(j) : 0);
          }
        specs.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: encodeFloats(t.dtype, v) });
      } else specs.push({ name: t.name, dtype: t.dtype, shape: t.shape, data });
    }
    await a.file.close();
    writeFileSync(file, await serializeSafetensors(specs, { format: "pt" }));
  }
  const viaNative = fresh("fused"),
    viaTs = fresh("ts");
  const rn = await truncate(input, viaNative, { rank: 3 });
  const rj = await runTruncate({ ...defaults, input, output: viaTs, rank: 3 }, { backend: jsBackend });
  assert.ok(!isSplitReport(rj));
  assert.deepEqual(
    rn.modules.map((m) => [m.name, m.rank]),
    rj.modules.map((m) => [m.name, m.rank]),
  );
  for (let i = 0; i < rn.modules.length; i++) {
    const x = rn.modules[i]!,
      y = rj.modules[i]!;
    assert.ok(
      Math.abs(x.relative_error - y.relative_error) <= 1e-3 * y.relative_error + 1e-6,
      `${x.name}: relative error ${x.relative_error} vs ${y.relative_error}`,
    );
    assert.ok(Math.abs(x.retained_energy! - y.retained_energy!) <= 1e-9, `${x.name}: retained energy`);
  }
  assert.deepEqual(rn.notes, rj.notes, "the cancelling module is computed by Householder QR on both");
  assert.ok(rn.notes.some((n) => /Householder/.test(n)));
  const ins = await inputDeltas(input);
  await withAdapter(viaNative, (an) =>
    withAdapter(viaTs, async (aj) => {
      for (const m of an.modules) {
        const mj = aj.modules.find((x) => x.name === m.name)!;
        const wn = await deltaW(an, m),
          wj = await deltaW(aj, mj),
          w = ins.get(m.matchKey)!.W;
        const norm = Math.sqrt(w.reduce((s, v) => s + v * v, 0));
        let d = 0;
        for (let k = 0; k < wn.length; k++) d += (wn[k]! - wj[k]!) ** 2;
        assert.ok(Math.sqrt(d) <= 4 * 2 ** -11 * norm, `${m.name}: ‖ΔW_native − ΔW_js‖/‖ΔW‖ = ${Math.sqrt(d) / norm}`);
      }
    }),
  );
});

test("a failed write waits for the modules computed ahead before the lanes end", async () => {
  const rng = new Rng(seed + 19);
  const mods: Mod[] = [0, 1, 2, 3, 4, 5].map((i) => ({ path: `model.layers.${i}.self_attn.q_proj`, out: 24, in: 20, r: 8 }));
  const input = await makePeft(rng, mods);
  const dir = fresh("ahead");
  mkdirSync(dir);
  const out = join(dir, "out.safetensors");
  // The first module's call fails at once; the ones started ahead of it are still running then.
  const { backend, stats } = slowedBackend(be, ["truncateFactors"], "fail");
  await assert.rejects(runTruncate({ ...defaults, input, output: out, rank: 2 }, { backend }), /injected failure/);
  assert.ok(stats.calls > 1, `modules were started ahead (${stats.calls} calls)`);
  assert.equal(stats.atEnd, 0, "no call in flight when the lanes ended");
  assert.deepEqual(readdirSync(dir), [], "nothing written");
});
