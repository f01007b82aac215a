// prune --method modules: drop whole modules by regex, layer, norm or energy share; the result
// reloads (loadAdapter checks config ranks against the shapes), keeps every other module's ΔW
// byte for byte, and its target_modules / rank_pattern / kohya metadata describe what is left.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadAdapter, readFactors, type Adapter } from "../../formats/adapter/index.js";
import { UsageError, InvalidInputError } from "../../common/errors.js";
import { jsBackend } from "../../linalg/js/index.js";
import { fixturesDir } from "../../test/paths.js";
import { layerIndexOf } from "../../surgery/prune/modules.js";
import { runPrune, type PruneOptions } from "./run.js";
import { deltaW, frob, readAll, tempDir } from "./reference.test.js";

const be = jsBackend;

async function norms(a: Adapter): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of a.modules) {
    const f = await readFactors(a, m, "f64");
    out.set(m.name, frob(deltaW(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale)));
  }
  return out;
}

async function prune(o: Partial<PruneOptions> & { input: string; output: string }): Promise<ReturnType<typeof runPrune>> {
  return runPrune({ method: "modules", force: false, ...o }, { backend: be });
}

test("layerIndexOf: PEFT paths and kohya stems", () => {
  assert.equal(layerIndexOf("model.layers.12.self_attn.q_proj"), 12);
  assert.equal(layerIndexOf("transformer.h.3.attn.c_attn"), 3);
  assert.equal(layerIndexOf("lora_te_text_model_encoder_layers_7_self_attn_q_proj"), 7);
  assert.equal(layerIndexOf("lm_head"), null);
});

test("--match drops matching modules; the output reloads, kept ΔW are unchanged, target_modules and rank_pattern describe what is left", async () => {
  const { dir, done } = tempDir("mod-match");
  try {
    const src = join(fixturesDir, "peft-rslora");
    const out = join(dir, "out");
    const rep = await prune({ input: src, output: out, match: "k_proj$" });
    const a0 = await loadAdapter(src),
      a = await loadAdapter(out);
    try {
      const kept = a0.modules.filter((m) => !m.name.endsWith("k_proj"));
      assert.deepEqual(
        a.modules.map((m) => m.name),
        kept.map((m) => m.name),
      );
      assert.deepEqual(
        rep.dropped.sort(),
        a0.modules
          .filter((m) => m.name.endsWith("k_proj"))
          .map((m) => m.name)
          .sort(),
      );
      const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
      assert.deepEqual(cfg.target_modules, kept.map((m) => m.path).sort());
      assert.equal(cfg.use_rslora, true);
      for (const m of a.modules) {
        const m0 = a0.modules.find((x) => x.name === m.name)!;
        assert.equal(m.rank, m0.rank);
        assert.equal(m.scale, m0.scale);
      }
      const t0 = await readAll(join(src, "adapter_model.safetensors")),
        t1 = await readAll(join(out, "adapter_model.safetensors"));
      for (const [k, v] of t1) assert.deepEqual(v.data, t0.get(k)!.data, `${k} copied`);
      for (const r of rep.modules) assert.equal(r.relative_error, rep.dropped.includes(r.name) ? 1 : 0);
    } finally {
      await a0.file.close();
      await a.file.close();
    }
  } finally {
    done();
  }
});

test("--layers, --min-norm and --min-energy-share select by layer index, ‖ΔW‖_F and energy share (union)", async () => {
  const { dir, done } = tempDir("mod-crit");
  try {
    const src = join(fixturesDir, "example");
    const a0 = await loadAdapter(src);
    const n = await norms(a0);
    await a0.file.close();
    const total = [...n.values()].reduce((s, x) => s + x * x, 0);
    const sorted = [...n.entries()].sort((x, y) => x[1] - y[1]);
    const floor = (sorted[2]![1] + sorted[3]![1]) / 2; // drops the three smallest
    const share = (sorted[1]![1] ** 2 + sorted[2]![1] ** 2) / 2 / total; // drops the two smallest
    const cases: [Partial<PruneOptions>, (name: string) => boolean][] = [
      [{ layers: [1, 3] }, (x) => /layers\.(1|3)\./.test(x)],
      [{ minNorm: floor }, (x) => n.get(x)! < floor],
      [{ minEnergyShare: share }, (x) => n.get(x)! ** 2 / total < share],
      [{ layers: [0], match: "v_proj" }, (x) => /layers\.0\./.test(x) || x.endsWith("v_proj")],
    ];
    let k = 0;
    for (const [opts, drop] of cases) {
      const out = join(dir, `o${k++}.safetensors`);
      const rep = await prune({ input: src, output: out, ...opts });
      const want = [...n.keys()].filter(drop).sort();
      assert.ok(want.length > 0 && want.length < n.size, JSON.stringify(opts));
      assert.deepEqual(rep.dropped.sort(), want, JSON.stringify(opts));
      const a = await loadAdapter(out);
      try {
        assert.deepEqual(a.modules.map((m) => m.name).sort(), [...n.keys()].filter((x) => !drop(x)).sort());
        assert.deepEqual(
          a.passthrough.map((t) => t.name),
          ["base_model.model.score.weight"],
          "passthrough carried",
        );
      } finally {
        await a.file.close();
      }
    }
  } finally {
    done();
  }
});

test("a --match or --layers index that selects no module gets a note (a typo drops nothing silently otherwise); selectors that do select get none", async () => {
  const { dir, done } = tempDir("mod-unused");
  try {
    const src = join(fixturesDir, "example"); // layers 0-3
    let k = 0;
    const notesOf = async (opts: Partial<PruneOptions>) => (await prune({ input: src, output: join(dir, `o${k++}`), ...opts })).notes;
    const unused = (notes: string[]) => notes.filter((n) => /selects? no|matches no module|no module is in layer/.test(n));
    let notes = await notesOf({ layers: [5] });
    assert.deepEqual(unused(notes), ["--layers: no module is in layer 5 (the adapter's layers: 0-3): it drops nothing"]);
    notes = await notesOf({ layers: [0, 5, 6, 7, 9] });
    assert.deepEqual(unused(notes), ["--layers: no module is in layers 5-7,9 (the adapter's layers: 0-3): those select nothing"]);
    notes = await notesOf({ match: "nothing_here" });
    assert.deepEqual(unused(notes), ["--match nothing_here matches no module: it drops nothing"]);
    notes = await notesOf({ layers: [1, 3], match: "v_proj" });
    assert.deepEqual(unused(notes), []);
  } finally {
    done();
  }
});

test("kohya in, kohya out: stems kept, ss_network_dim / ss_network_alpha rewritten for the remaining modules", async () => {
  const { dir, done } = tempDir("mod-kohya");
  try {
    const src = join(fixturesDir, "kohya-sd.safetensors");
    const out = join(dir, "out.safetensors");
    await prune({ input: src, output: out, match: "conv1|attn1_to_(k|v)|te_" });
    const a = await loadAdapter(out);
    try {
      assert.equal(a.format, "kohya");
      assert.deepEqual(a.modules.map((m) => m.name).sort(), [
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
      ]);
      assert.equal(a.metadata["ss_network_dim"], "4");
      assert.equal(a.metadata["ss_network_alpha"], "Dynamic");
      assert.equal(a.metadata["ss_output_name"], "fixture");
    } finally {
      await a.file.close();
    }
    // PEFT output from kohya input (--to peft): loadable, same scales
    const out2 = join(dir, "peft");
    await prune({ input: src, output: out2, match: "conv1", to: "peft" });
    const b = await loadAdapter(out2),
      b0 = await loadAdapter(src);
    try {
      for (const m of b.modules) {
        const m0 = b0.modules.find((x) => x.path === m.path)!;
        assert.ok(Math.abs(m.scale - m0.scale) < 1e-12, m.path);
      }
    } finally {
      await b.file.close();
      await b0.file.close();
    }
  } finally {
    done();
  }
});

test("errors: no criterion, everything dropped, bad regex (usage, exit 2); DoRA (exit 3); nothing written", async () => {
  const { dir, done } = tempDir("mod-err");
  try {
    const out = join(dir, "out");
    const src = join(fixturesDir, "example");
    await assert.rejects(prune({ input: src, output: out }), UsageError);
    await assert.rejects(prune({ input: src, output: out, match: "." }), (e) => e instanceof UsageError && /every module/.test(e.message));
    await assert.rejects(prune({ input: src, output: out, match: "(" }), UsageError);
    await assert.rejects(
      prune({ input: join(fixturesDir, "peft-dora"), output: out, match: "x" }),
      (e) => e instanceof InvalidInputError && /DoRA/.test(e.message),
    );
    const { readdirSync } = await import("node:fs");
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    done();
  }
});
