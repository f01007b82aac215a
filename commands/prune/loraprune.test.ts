// prune --method loraprune: the criterion against golden §9.5, the group helpers, and whole runs on
// generated LLaMA-style models (MHA and GQA, committed fixtures and fresh random ones) checked
// against an independent dense float64 reference: the kept groups are exactly the top-scoring ones,
// whole heads only, W' + s·B'·A' = (W + s·B·A)[kept], and the tensor shapes match config.json.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { encodeFloats, serializeSafetensors } from "../../formats/safetensors/index.js";
import { jsBackend } from "../../linalg/js/index.js";
import { resolveBackend } from "../../linalg/backend.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { Rng } from "../../linalg/random.js";
import { fixturesDir } from "../../test/paths.js";
import { GQA, MHA, loraConfig, loraTensors, partOf as fxPart, PROJS, writeLlama, type TinyLlama } from "../../fixtures/make-prune-fixtures.js";
import { defaultSkipLayers, keptChannels, l2Normalise, llamaArch, pruneCount, selectGroups, sumIntoGroups } from "../../surgery/prune/groups.js";
import { elementImportance, ImportanceAccumulator } from "../../surgery/prune/importance.js";
import { prettyJson } from "../../surgery/prune/pruned-base.js";
import { runPrune, type PruneOptions } from "./run.js";
import { colSums, deltaW, G95, readAll, refImportance, relDiff, rowSums, tempDir } from "./reference.test.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
const be = jsBackend;
const FX = join(fixturesDir, "prune");

// ---------------------------------------------------------------------------------------------
// criterion and helpers

test("golden §9.5: LoRA-guided importance, row sums [1.03, 0.086, 0.574, 0.36], L2-normalised [0.833422, 0.069587, 0.464451, 0.291293], column sums [0.936, 0.332, 0.782]", async () => {
  const I = await elementImportance(G95.W, 4, 3, {
    r: 2,
    scale: G95.s,
    B: Float64Array.from(G95.B),
    A: Float64Array.from(G95.A),
    GB: Float64Array.from(G95.GB),
    GA: Float64Array.from(G95.GA),
  });
  const want = [0.6, 0.08, 0.35, 0, 0.014, 0.072, 0.176, 0.058, 0.34, 0.16, 0.18, 0.02];
  want.forEach((x, i) => assert.ok(Math.abs(I[i]! - x) < 1e-12, `I[${i}] = ${I[i]}`));
  const acc = new ImportanceAccumulator(
    4,
    3,
    { r: 2, scale: G95.s, B: Float64Array.from(G95.B), A: Float64Array.from(G95.A), GB: Float64Array.from(G95.GB), GA: Float64Array.from(G95.GA) },
    { rows: true, cols: true },
  );
  await acc.addRows(G95.W.slice(0, 6), 0, 2);
  await acc.addRows(G95.W.slice(6), 2, 2);
  [1.03, 0.086, 0.574, 0.36].forEach((x, i) => assert.ok(Math.abs(acc.rows![i]! - x) < 1e-12));
  const n = l2Normalise(acc.rows!);
  [0.833422, 0.069587, 0.464451, 0.291293].forEach((x, i) => assert.ok(Math.abs(n[i]! - x) < 5e-7, `normalised[${i}] = ${n[i]}`));
  [0.936, 0.332, 0.782].forEach((x, i) => assert.ok(Math.abs(acc.cols![i]! - x) < 1e-12));
  // the test-side reference agrees with the goldens too
  const R = refImportance(G95.W, 4, 3, { B: G95.B, A: G95.A, r: 2, s: G95.s, GB: G95.GB, GA: G95.GA });
  assert.ok(relDiff(rowSums(R, 4, 3), [1.03, 0.086, 0.574, 0.36]) < 1e-12);
  assert.ok(relDiff(colSums(R, 4, 3), [0.936, 0.332, 0.782]) < 1e-12);
});

test("both criteria streamed in row blocks equal the dense reference, with and without a backend (random)", async () => {
  const rng = new Rng(seed);
  const backends = [null, jsBackend];
  try {
    backends.push((await resolveBackend("cpu")).backend);
  } catch {
    /* no native addon here */
  }
  for (let trial = 0; trial < 12; trial++) {
    const out = 1 + rng.int(20),
      inF = 1 + rng.int(20),
      r = 1 + rng.int(5),
      s = rng.uniform() * 3;
    const W = rng.normals(out * inF),
      B = rng.normals(out * r),
      A = rng.normals(r * inF);
    const grads = trial % 2 === 1 ? { GB: rng.normals(out * r, 0.1), GA: rng.normals(r * inF, 0.1) } : {};
    const ref = refImportance(W, out, inF, { B, A, r, s, ...grads });
    for (const b of backends) {
      const acc = new ImportanceAccumulator(out, inF, { r, scale: s, B, A, ...grads }, { rows: true, cols: true }, b);
      for (let row = 0; row < out; ) {
        const n = Math.min(out - row, 1 + rng.int(4));
        await acc.addRows(W.subarray(row * inF, (row + n) * inF), row, n);
        row += n;
      }
      assert.ok(relDiff(acc.rows!, rowSums(ref, out, inF)) < 1e-12, `seed ${seed} trial ${trial} backend ${b?.name ?? "none"}`);
      assert.ok(relDiff(acc.cols!, colSums(ref, out, inF)) < 1e-12);
    }
  }
});

test("groups: GQA head groups, MLP channels, selection, prune counts, LoRAPrune's default skip layers", () => {
  const arch = llamaArch({ hidden_size: 32, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 4, num_hidden_layers: 4, intermediate_size: 6 }, "cfg");
  // q rows: group g = query heads 4g..4g+3 = rows 16g..16g+15; k/v: rows 4g..4g+3
  const q = Float64Array.from({ length: 32 }, (_, i) => (i < 16 ? 1 : 2));
  assert.deepEqual(Array.from(sumIntoGroups(q, "q_proj", arch, 0)), [16, 32]);
  assert.deepEqual(
    Array.from(
      sumIntoGroups(
        Float64Array.from({ length: 8 }, (_, i) => i),
        "k_proj",
        arch,
        0,
      ),
    ),
    [6, 22],
  );
  assert.deepEqual(Array.from(keptChannels("k_proj", [1], arch, 0)), [4, 5, 6, 7]);
  assert.deepEqual(
    Array.from(keptChannels("o_proj", [1], arch, 0)),
    Array.from({ length: 16 }, (_, i) => 16 + i),
  );
  assert.deepEqual(Array.from(keptChannels("down_proj", [0, 3, 5], arch, 0)), [0, 3, 5]);
  assert.deepEqual(selectGroups(Float64Array.of(3, 1, 2, 5), 2), [0, 3]);
  assert.deepEqual(selectGroups(Float64Array.of(3, 1, 2, 5), 1, new Set([3])), [0, 1, 2], "a forced (masked) group is pruned whatever its score");
  assert.deepEqual(selectGroups(Float64Array.of(3, 1, 2, 5), 2, new Set([3])), [0, 2], "forced groups count towards the pruned ones");
  assert.deepEqual(selectGroups(Float64Array.of(3, 1, 2, 5), 1, new Set([0, 3])), [1, 2], "more forced groups than the ratio asks: all of them go");
  assert.deepEqual(selectGroups(Float64Array.of(1, 1, 1, 1), 2), [0, 1], "ties: the higher index is pruned first");
  assert.deepEqual(selectGroups(Float64Array.of(1, 2), 5), [1], "never prune everything");
  assert.equal(pruneCount(100, 0.29), 29);
  assert.equal(pruneCount(32, 0.5), 16);
  assert.equal(pruneCount(3, 0.99), 2);
  assert.deepEqual(defaultSkipLayers(32), [0, 1, 2, 31]);
  assert.deepEqual(defaultSkipLayers(4), [3]);
  assert.equal(prettyJson({ a: [1, 2, 3], b: { c: [] } }), '{\n  "a": [1, 2, 3],\n  "b": {\n    "c": []\n  }\n}\n');
});

// ---------------------------------------------------------------------------------------------
// whole runs against the reference

async function readModel(dir: string): Promise<Map<string, { shape: number[]; data: Float64Array; dtype: string }>> {
  const all = new Map<string, { shape: number[]; data: Float64Array; dtype: string }>();
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".safetensors"))) for (const [k, v] of await readAll(join(dir, f))) all.set(k, v);
  return all;
}

async function readRaw(dir: string): Promise<Map<string, Buffer>> {
  const { SafetensorsFile } = await import("../../formats/safetensors/index.js");
  const out = new Map<string, Buffer>();
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".safetensors"))) {
    const st = await SafetensorsFile.open(join(dir, f));
    for (const t of st.tensors) out.set(t.name, await st.readRaw(t));
    await st.close();
  }
  return out;
}

interface RefFactors {
  B: Float64Array;
  A: Float64Array;
  r: number;
  s: number;
  GA?: Float64Array;
  GB?: Float64Array;
}

async function adapterFactors(path: string, grads?: string): Promise<Map<string, RefFactors>> {
  const a = await loadAdapter(path);
  const g = grads ? await readAll(grads) : null;
  try {
    const out = new Map<string, RefFactors>();
    for (const m of a.modules) {
      const f = await readFactors(a, m, "f64");
      const rf: RefFactors = { B: f.B.data as Float64Array, A: f.A.data as Float64Array, r: m.rank, s: m.scale };
      if (g) {
        rf.GA = g.get(`base_model.model.${m.path}.lora_A.grad`)!.data;
        rf.GB = g.get(`base_model.model.${m.path}.lora_B.grad`)!.data;
      }
      out.set(m.path, rf);
    }
    return out;
  } finally {
    await a.file.close();
  }
}

interface Expect {
  m: TinyLlama;
  ratio: number;
  skip: number[];
  masked?: Map<number, { kv: number[]; ch: number[] }>;
}

/** Reference scores per layer part: Σ over projections of L2-normalised group sums of I. */
function referenceScores(
  model: Map<string, { data: Float64Array }>,
  fac: Map<string, RefFactors>,
  m: TinyLlama,
  layer: number,
): { attn: Float64Array; mlp: Float64Array } {
  const rep = m.heads / m.kvHeads,
    hd = m.headDim;
  const attn = new Float64Array(m.kvHeads),
    mlp = new Float64Array(m.inter);
  for (const p of PROJS) {
    const path = `model.layers.${layer}.${fxPart(p)}.${p}`;
    const lo = fac.get(path);
    if (!lo) continue;
    const W = model.get(path + ".weight")!.data;
    const rowWise = !["o_proj", "down_proj"].includes(p);
    const [out, inF] = shapeOf(m, p);
    const I = refImportance(W, out, inF, lo);
    const v = rowWise ? rowSums(I, out, inF) : colSums(I, out, inF);
    let groups: Float64Array;
    if (fxPart(p) === "mlp") groups = v;
    else {
      const width = p === "k_proj" || p === "v_proj" ? hd : rep * hd;
      groups = new Float64Array(m.kvHeads);
      for (let j = 0; j < v.length; j++) groups[Math.floor(j / width)] += v[j]!;
    }
    let n = 0;
    for (const x of groups) n += x * x;
    const target = fxPart(p) === "mlp" ? mlp : attn;
    for (let g = 0; g < groups.length; g++) target[g] += groups[g]! / (Math.sqrt(n) + 1e-8);
  }
  return { attn, mlp };
}

function shapeOf(m: TinyLlama, p: string): [number, number] {
  const q = m.heads * m.headDim,
    kv = m.kvHeads * m.headDim;
  return (
    {
      q_proj: [q, m.hidden],
      k_proj: [kv, m.hidden],
      v_proj: [kv, m.hidden],
      o_proj: [m.hidden, q],
      gate_proj: [m.inter, m.hidden],
      up_proj: [m.inter, m.hidden],
      down_proj: [m.hidden, m.inter],
    } as Record<string, [number, number]>
  )[p]!;
}

/** Top groups by score (ascending indices) and the gap between the last kept and the first pruned. */
function topGroups(scores: Float64Array, keep: number, forced: number[] = []): { kept: number[]; gap: number } {
  const cand = Array.from(scores.keys())
    .filter((i) => !forced.includes(i))
    .sort((a, b) => scores[b]! - scores[a]!);
  const kept = cand.slice(0, keep).sort((a, b) => a - b);
  const gap = keep < cand.length && keep > 0 ? scores[cand[keep - 1]!]! - scores[cand[keep]!]! : Infinity;
  return { kept, gap };
}

async function runAndCheck(
  tag: string,
  modelDir: string,
  adapter: string,
  e: Expect,
  extra: Partial<PruneOptions> = {},
  backend: LinalgBackend = be,
): Promise<void> {
  const { dir, done } = tempDir(tag);
  try {
    const out = join(dir, "adapter"),
      baseOut = join(dir, "model");
    const rep = await runPrune(
      { input: adapter, output: out, method: "loraprune", base: modelDir, ratio: e.ratio, baseOut, force: false, ...extra },
      { backend },
    );
    const plan = JSON.parse(readFileSync(join(dir, "pruning_plan.json"), "utf8"));
    const cfg = JSON.parse(readFileSync(join(baseOut, "config.json"), "utf8"));
    const model = await readModel(modelDir);
    const raw = await readRaw(modelDir),
      rawOut = await readRaw(baseOut);
    const pruned = await readModel(baseOut);
    const fac = await adapterFactors(adapter, extra.grads);
    const facOut = await adapterFactors(out);
    const m = e.m,
      rep_ = m.heads / m.kvHeads,
      hd = m.headDim;
    assert.deepEqual(plan.skip_layers, e.skip);
    const heads: number[] = [],
      kvs: number[] = [],
      inters: number[] = [];
    for (let l = 0; l < m.layers; l++) {
      const L = plan.layers[l];
      let keptKv: number[], keptCh: number[];
      if (e.skip.includes(l)) {
        keptKv = Array.from({ length: m.kvHeads }, (_, i) => i);
        keptCh = Array.from({ length: m.inter }, (_, i) => i);
      } else {
        const sc = referenceScores(model, fac, m, l);
        const mk = e.masked?.get(l) ?? { kv: [], ch: [] };
        const nKv = m.kvHeads - Math.max(Math.floor(m.kvHeads * e.ratio + 1e-9), mk.kv.length);
        const nCh = m.inter - Math.max(Math.floor(m.inter * e.ratio + 1e-9), mk.ch.length);
        const ta = topGroups(sc.attn, nKv, mk.kv),
          tm = topGroups(sc.mlp, nCh, mk.ch);
        assert.ok(ta.gap > 1e-9 && tm.gap > 1e-9, `${tag} layer ${l}: the reference ranking is ambiguous (gap ${ta.gap}, ${tm.gap}); seed ${seed}`);
        keptKv = ta.kept;
        keptCh = tm.kept;
      }
      assert.deepEqual(L.kept_kv_heads, keptKv, `${tag} layer ${l}: kept key/value groups (seed ${seed})`);
      assert.deepEqual(L.kept_channels, keptCh, `${tag} layer ${l}: kept MLP channels (seed ${seed})`);
      // whole heads only: each kept kv group brings exactly its rep query heads
      assert.deepEqual(
        L.kept_heads,
        keptKv.flatMap((g) => Array.from({ length: rep_ }, (_, i) => g * rep_ + i)),
      );
      assert.equal(L.num_attention_heads, keptKv.length * rep_);
      assert.equal(L.num_key_value_heads, keptKv.length);
      assert.equal(L.intermediate_size, keptCh.length);
      heads.push(keptKv.length * rep_);
      kvs.push(keptKv.length);
      inters.push(keptCh.length);

      // the consistency identity and bit-exact restriction, per projection
      const qRows = keptKv.flatMap((g) => Array.from({ length: rep_ * hd }, (_, i) => g * rep_ * hd + i));
      const kvRows = keptKv.flatMap((g) => Array.from({ length: hd }, (_, i) => g * hd + i));
      for (const p of PROJS) {
        const path = `model.layers.${l}.${fxPart(p)}.${p}`;
        const [o, i] = shapeOf(m, p);
        const idx = p === "q_proj" || p === "o_proj" ? qRows : p === "k_proj" || p === "v_proj" ? kvRows : keptCh;
        const rows = !["o_proj", "down_proj"].includes(p);
        const W = model.get(path + ".weight")!.data,
          Wp = pruned.get(path + ".weight")!;
        assert.deepEqual(Wp.shape, rows ? [idx.length, i] : [o, idx.length], `${path} shape`);
        const restrict = (M: Float64Array) =>
          rows
            ? Float64Array.from(idx.flatMap((r) => Array.from(M.subarray(r * i, (r + 1) * i))))
            : Float64Array.from({ length: o * idx.length }, (_, k) => M[Math.floor(k / idx.length) * i + idx[k % idx.length]!]!);
        assert.deepEqual(Wp.data, restrict(W), `${path}: W' is W restricted, bit for bit`);
        const lo = fac.get(path),
          lp = facOut.get(path);
        if (lo && lp) {
          const full = deltaW(lo.B, lo.A, o, lo.r, i, lo.s).map((x, k) => x + W[k]!);
          const [po, pi] = rows ? [idx.length, i] : [o, idx.length];
          const mine = deltaW(lp.B, lp.A, po, lp.r, pi, lp.s).map((x, k) => x + Wp.data[k]!);
          const err = relDiff(mine, restrict(full));
          assert.ok(err <= 1e-12, `${path}: W' + s·B'·A' vs (W + s·B·A)[kept]: ${err}`);
          assert.equal(lp.s, lo.s, "scale unchanged");
        }
        const b = model.get(path + ".bias");
        if (b) {
          const bp = pruned.get(path + ".bias")!;
          assert.deepEqual(bp.data, rows ? Float64Array.from(idx.map((r) => b.data[r]!)) : b.data, `${path}.bias`);
        }
      }
    }
    // shapes match the config (uniform fields, or per-layer lists)
    for (let l = 0; l < m.layers; l++) {
      const H = cfg.layer_num_attention_heads?.[l] ?? cfg.num_attention_heads;
      const KV = cfg.layer_num_key_value_heads?.[l] ?? cfg.num_key_value_heads ?? H;
      const I = cfg.layer_intermediate_size?.[l] ?? cfg.intermediate_size;
      const hdc = cfg.head_dim ?? cfg.hidden_size / cfg.num_attention_heads;
      assert.equal(hdc, hd, "head_dim from the config");
      assert.equal(H, heads[l]);
      assert.equal(KV, kvs[l]);
      assert.equal(I, inters[l]);
      const want: Record<string, number[]> = {
        q_proj: [H * hdc, cfg.hidden_size],
        k_proj: [KV * hdc, cfg.hidden_size],
        v_proj: [KV * hdc, cfg.hidden_size],
        o_proj: [cfg.hidden_size, H * hdc],
        gate_proj: [I, cfg.hidden_size],
        up_proj: [I, cfg.hidden_size],
        down_proj: [cfg.hidden_size, I],
      };
      for (const p of PROJS) assert.deepEqual(pruned.get(`model.layers.${l}.${fxPart(p)}.${p}.weight`)!.shape, want[p], `layer ${l} ${p} vs config`);
    }
    // everything else is copied byte for byte, and no tensor is lost or added
    assert.deepEqual([...rawOut.keys()].sort(), [...raw.keys()].sort());
    for (const [k, v] of raw) if (!/layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\./.test(k)) assert.ok(v.equals(rawOut.get(k)!), `${k} copied`);
    // the pruned adapter reloads; its config's ranks match its shapes (loadAdapter checks) and it fits the pruned model
    const a = await loadAdapter(out);
    try {
      for (const mod of a.modules) {
        const w = pruned.get(mod.path + ".weight");
        if (w) assert.deepEqual([mod.out, mod.in], w.shape, `${mod.path} fits the pruned model`);
      }
    } finally {
      await a.file.close();
    }
    assert.equal(rep.command, "prune");
    assert.equal(rep.modules.length, fac.size);
  } finally {
    done();
  }
}

test("fixture MHA model: top-scoring heads and channels kept, identity holds, shapes match config (magnitude, ratio 0.5)", async () => {
  await runAndCheck("mha", join(FX, "llama-mha"), join(FX, "adapter-mha"), { m: MHA, ratio: 0.5, skip: [3] });
});

test("fixture GQA model (sharded, F16, attention biases): whole key/value groups with their query heads (ratio 0.5, skip none)", async () => {
  await runAndCheck("gqa", join(FX, "llama-gqa"), join(FX, "adapter-gqa"), { m: GQA, ratio: 0.5, skip: [] }, { skipLayers: [] });
});

test("fixture GQA with gradients: the LoRA-guided criterion", async () => {
  await runAndCheck(
    "gqa-grads",
    join(FX, "llama-gqa"),
    join(FX, "adapter-gqa"),
    { m: GQA, ratio: 0.3, skip: [0, 3] },
    { grads: join(FX, "grads-gqa.safetensors"), skipLayers: [0, 3] },
  );
});

test("fixture GQA with lora_mask tensors: masked groups are pruned, the rest by score", async () => {
  const masked = new Map([[1, { kv: [1], ch: Array.from({ length: 10 }, (_, i) => i) }]]);
  await runAndCheck("gqa-mask", join(FX, "llama-gqa"), join(FX, "adapter-gqa-masked.safetensors"), { m: GQA, ratio: 0.25, skip: [3], masked });
});

for (const [name, shape] of [
  ["MHA", { hidden: 24, heads: 6, kvHeads: 6, headDim: 4, inter: 40, layers: 5, vocab: 16 }],
  ["GQA", { hidden: 32, heads: 8, kvHeads: 4, headDim: 4, inter: 36, layers: 3, vocab: 16, attentionBias: true }],
] as [string, TinyLlama][]) {
  test(`fresh random ${name} model and adapter (seed ${seed}): kept groups = reference top groups, identity, config shapes`, async () => {
    const { dir, done } = tempDir("rand");
    try {
      const rng = new Rng(seed + name.length);
      const ratio = [0.25, 0.5, 0.6][rng.int(3)]!;
      await writeLlama(join(dir, "model"), seed, shape, rng.uniform() < 0.5 ? "F32" : "BF16", 1 + rng.int(2));
      const projs = PROJS.filter(() => rng.uniform() < 0.8);
      if (!projs.includes("q_proj")) projs.push("q_proj");
      if (!projs.includes("up_proj")) projs.push("up_proj");
      const specs = loraTensors(rng, shape, { rank: () => 3, alpha: 6, projs }, "F32");
      const { mkdirSync } = await import("node:fs");
      mkdirSync(join(dir, "adapter"));
      writeFileSync(join(dir, "adapter", "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
      writeFileSync(join(dir, "adapter", "adapter_config.json"), JSON.stringify(loraConfig({ r: 3, lora_alpha: 6, target_modules: projs })));
      // the auto backend (BLAS when the addon is built), as the CLI uses
      await runAndCheck(
        `rand-${name}`,
        join(dir, "model"),
        join(dir, "adapter"),
        { m: shape, ratio, skip: defaultSkipLayers(shape.layers) },
        {},
        (await resolveBackend("auto")).backend,
      );
    } finally {
      done();
    }
  });
}

test("uniform result: standard config fields updated (with head_dim); a .safetensors --base-out gets config.json beside it", async () => {
  const { dir, done } = tempDir("uniform");
  try {
    const baseOut = join(dir, "pruned.safetensors");
    await runPrune(
      {
        input: join(FX, "adapter-mha"),
        output: join(dir, "ad.safetensors"),
        method: "loraprune",
        base: join(FX, "llama-mha"),
        ratio: 0.5,
        skipLayers: [],
        baseOut,
        force: false,
      },
      { backend: be },
    );
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    assert.equal(cfg.num_attention_heads, 2);
    assert.equal(cfg.num_key_value_heads, 2);
    assert.equal(cfg.intermediate_size, 24);
    assert.equal(cfg.head_dim, 8);
    assert.equal(cfg.layer_num_attention_heads, undefined);
    const w = await readAll(baseOut);
    assert.deepEqual(w.get("model.layers.2.self_attn.o_proj.weight")!.shape, [32, 16]);
    assert.ok(existsSync(join(dir, "pruning_plan.json")));
  } finally {
    done();
  }
});

test("--score-modules all scores projections without a LoRA by |W|; without it such parts are kept with a note", async () => {
  const { dir, done } = tempDir("score-all");
  try {
    const rng = new Rng(5);
    const specs = loraTensors(rng, MHA, { rank: () => 2, alpha: 4, projs: ["q_proj", "v_proj"] }, "F32");
    const ad = join(dir, "ad.safetensors");
    writeFileSync(
      ad,
      await serializeSafetensors(specs, {
        format: "pt",
        adapter_config: JSON.stringify(loraConfig({ r: 2, lora_alpha: 4, target_modules: ["q_proj", "v_proj"] })),
      }),
    );
    const r1 = await runPrune(
      { input: ad, output: join(dir, "o1.safetensors"), method: "loraprune", base: join(FX, "llama-mha"), ratio: 0.5, force: false },
      { backend: be },
    );
    assert.ok(r1.notes.some((n) => /no LoRA module in mlp/.test(n)));
    const p1 = JSON.parse(readFileSync(join(dir, "pruning_plan.json"), "utf8"));
    assert.equal(p1.layers[0].intermediate_size, MHA.inter);
    assert.equal(p1.layers[0].num_attention_heads, 2);
    await runPrune(
      { input: ad, output: join(dir, "o2.safetensors"), method: "loraprune", base: join(FX, "llama-mha"), ratio: 0.5, scoreModules: "all", force: true },
      { backend: be },
    );
    const p2 = JSON.parse(readFileSync(join(dir, "pruning_plan.json"), "utf8"));
    assert.equal(p2.layers[0].intermediate_size, MHA.inter / 2);
    // reference: MLP scored by |W| of gate, up, down
    const model = await readModel(join(FX, "llama-mha"));
    const mlp = new Float64Array(MHA.inter);
    for (const p of ["gate_proj", "up_proj", "down_proj"]) {
      const [o, i] = shapeOf(MHA, p);
      const I = refImportance(model.get(`model.layers.0.mlp.${p}.weight`)!.data, o, i, null);
      const v = p === "down_proj" ? colSums(I, o, i) : rowSums(I, o, i);
      const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0)) + 1e-8;
      v.forEach((x, c) => (mlp[c] += x / n));
    }
    assert.deepEqual(p2.layers[0].kept_channels, topGroups(mlp, MHA.inter / 2).kept);
  } finally {
    done();
  }
});

test("refusals (exit 3, nothing written): unknown architecture naming the fields, DoRA, an adapter for another model, missing config.json; --ratio 1 is a usage error", async () => {
  const { dir, done } = tempDir("refuse");
  try {
    const out = join(dir, "out");
    const { mkdirSync, copyFileSync } = await import("node:fs");
    // GPT-2-like config and tensors
    mkdirSync(join(dir, "gpt2"));
    writeFileSync(
      join(dir, "gpt2", "config.json"),
      JSON.stringify({ model_type: "gpt2", architectures: ["GPT2LMHeadModel"], n_embd: 32, n_head: 4, n_layer: 2 }),
    );
    writeFileSync(
      join(dir, "gpt2", "model.safetensors"),
      await serializeSafetensors([{ name: "h.0.attn.c_attn.weight", dtype: "F32", shape: [2, 2], data: encodeFloats("F32", new Float64Array(4)) }], null),
    );
    await assert.rejects(
      runPrune({ input: join(FX, "adapter-mha"), output: out, method: "loraprune", base: join(dir, "gpt2"), ratio: 0.5, force: false }, { backend: be }),
      (e) =>
        e instanceof InvalidInputError && /gpt2/.test(e.message) && /hidden_size/.test(e.message + (e.hint ?? "")) && /num_attention_heads/.test(e.message),
    );
    // LLaMA fields but fused tensors
    mkdirSync(join(dir, "fused"));
    writeFileSync(
      join(dir, "fused", "config.json"),
      JSON.stringify({ model_type: "phi3", hidden_size: 32, num_attention_heads: 4, num_hidden_layers: 1, intermediate_size: 8 }),
    );
    writeFileSync(
      join(dir, "fused", "model.safetensors"),
      await serializeSafetensors(
        [{ name: "model.layers.0.self_attn.qkv_proj.weight", dtype: "F32", shape: [96, 32], data: encodeFloats("F32", new Float64Array(96 * 32)) }],
        null,
      ),
    );
    await assert.rejects(
      runPrune({ input: join(FX, "adapter-mha"), output: out, method: "loraprune", base: join(dir, "fused"), ratio: 0.5, force: false }, { backend: be }),
      (e) => e instanceof InvalidInputError && /qkv_proj/.test(e.message) && /hidden_size/.test(e.hint ?? ""),
    );
    await assert.rejects(
      runPrune(
        { input: join(fixturesDir, "peft-dora"), output: out, method: "loraprune", base: join(FX, "llama-mha"), ratio: 0.5, force: false },
        { backend: be },
      ),
      (e) => e instanceof InvalidInputError && /DoRA/.test(e.message),
    );
    await assert.rejects(
      runPrune({ input: join(FX, "adapter-gqa"), output: out, method: "loraprune", base: join(FX, "llama-mha"), ratio: 0.5, force: false }, { backend: be }),
      (e) => e instanceof InvalidInputError && /is this adapter for this model/.test(e.message),
    );
    mkdirSync(join(dir, "nocfg"));
    copyFileSync(join(FX, "llama-mha", "model.safetensors"), join(dir, "nocfg", "model.safetensors"));
    await assert.rejects(
      runPrune({ input: join(FX, "adapter-mha"), output: out, method: "loraprune", base: join(dir, "nocfg"), ratio: 0.5, force: false }, { backend: be }),
      (e) => e instanceof InvalidInputError && /config\.json/.test(e.message),
    );
    await assert.rejects(
      runPrune({ input: join(FX, "adapter-mha"), output: out, method: "loraprune", base: join(FX, "llama-mha"), ratio: 1, force: false }, { backend: be }),
      (e) => e instanceof UsageError,
    );
    assert.deepEqual(readdirSync(dir).sort(), ["fused", "gpt2", "nocfg"]);
  } finally {
    done();
  }
});

test("the adapter may go inside the --base-out directory; modules of another stack (a vision tower) are left as they are", async () => {
  const { dir, done } = tempDir("inside");
  try {
    const rng = new Rng(9);
    const specs = loraTensors(rng, MHA, { rank: () => 2, alpha: 4, projs: ["q_proj", "down_proj"] }, "F32");
    specs.push({
      name: "base_model.model.vision_tower.encoder.layers.0.self_attn.q_proj.lora_A.weight",
      dtype: "F32",
      shape: [2, 10],
      data: encodeFloats("F32", rng.normals(20)),
    });
    specs.push({
      name: "base_model.model.vision_tower.encoder.layers.0.self_attn.q_proj.lora_B.weight",
      dtype: "F32",
      shape: [10, 2],
      data: encodeFloats("F32", rng.normals(20)),
    });
    const ad = join(dir, "ad.safetensors");
    writeFileSync(
      ad,
      await serializeSafetensors(specs, {
        format: "pt",
        adapter_config: JSON.stringify(loraConfig({ r: 2, lora_alpha: 4, target_modules: ["q_proj", "down_proj"] })),
      }),
    );
    const rep = await runPrune(
      {
        input: ad,
        output: join(dir, "model", "adapter"),
        method: "loraprune",
        base: join(FX, "llama-mha"),
        ratio: 0.5,
        baseOut: join(dir, "model"),
        force: false,
      },
      { backend: be },
    );
    assert.deepEqual(
      readdirSync(join(dir, "model")).sort(),
      ["adapter", "config.json", "model.safetensors", "pruning_plan.json"],
      "the plan goes beside the adapter",
    );
    const v = rep.modules.find((m) => m.name.startsWith("vision_tower"))!;
    assert.deepEqual([v.rank, v.relative_error, v["shape"]], [2, 0, [10, 10]]);
    const q = rep.modules.find((m) => m.name === "model.layers.0.self_attn.q_proj")!;
    assert.deepEqual(q["shape"], [16, 32]);
  } finally {
    done();
  }
});
