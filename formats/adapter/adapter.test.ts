// The adapter model: format detection, PEFT config semantics (rank_pattern/alpha_pattern first
// match, rsLoRA), kohya alpha rules, shapes (conv, embedding), bad adapters → InvalidInputError (exit 3).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { fixturesDir, needsReal, realDir } from "../../test/paths.js";
import { loadAdapter } from "./load.js";
import { patternLookup, peftModuleScale, peftPatterns } from "./peft-config.js";
import { InvalidInputError } from "../../common/errors.js";
import { kohyaStemFor, matchKeyFor } from "./names.js";
import { main as makeFixtures } from "../../fixtures/make-fixtures.js";
import { tempDir } from "../../test/temp-dir.js";

test("real PEFT adapters: module count, ranks, scales, passthrough", { skip: needsReal("distilbert-imdb", "gpt2-tigrinya") }, async () => {
  const imdb = await loadAdapter(join(realDir, "distilbert-imdb"));
  assert.equal(imdb.format, "peft");
  assert.equal(imdb.modules.length, 12);
  for (const m of imdb.modules) {
    assert.equal(m.rank, 8);
    assert.equal(m.alpha, 16);
    assert.equal(m.scale, 2);
    assert.deepEqual([m.out, m.in], [768, 768]);
  }
  assert.deepEqual(
    imdb.passthrough.map((t) => t.name).sort(),
    ["base_model.model.classifier.bias", "base_model.model.classifier.weight", "base_model.model.pre_classifier.bias", "base_model.model.pre_classifier.weight"]
      .filter((n) => imdb.file.has(n))
      .sort(),
  );
  await imdb.file.close();
  const gpt2 = await loadAdapter(join(realDir, "gpt2-tigrinya"));
  assert.equal(gpt2.modules.length, 36);
  assert.equal(new Set(gpt2.modules.map((m) => m.name.split(".").slice(-2).join("."))).size, 3);
  const cattn = gpt2.modules.find((m) => m.name === "transformer.h.0.attn.c_attn")!;
  assert.deepEqual([cattn.out, cattn.in, cattn.rank, cattn.scale], [2304, 768, 8, 4]);
  assert.equal(gpt2.config?.["fan_in_fan_out"], true);
  await gpt2.file.close();
});

test("PEFT pattern semantics: (.*\\.)?(key)$, first match wins, rsLoRA scale α/√r", async () => {
  assert.equal(patternLookup({ q_proj: 4 }, "model.layers.0.self_attn.q_proj", "t"), 4);
  assert.equal(patternLookup({ q_proj: 4 }, "model.layers.0.self_attn.xq_proj", "t"), undefined);
  assert.equal(patternLookup({ "layers.0.self_attn.q_proj": 32, q_proj: 4 }, "model.layers.0.self_attn.q_proj", "t"), 32);
  assert.equal(patternLookup({ q_proj: 4, "layers.0.self_attn.q_proj": 32 }, "model.layers.0.self_attn.q_proj", "t"), 4);
  const a = await loadAdapter(join(fixturesDir, "peft-rslora"));
  const by = Object.fromEntries(a.modules.map((m) => [m.name, m]));
  const q0 = by["model.layers.0.self_attn.q_proj"]!,
    k1 = by["model.layers.1.self_attn.k_proj"]!,
    o1 = by["model.layers.1.self_attn.o_proj"]!,
    v0 = by["model.layers.0.self_attn.v_proj"]!,
    q1 = by["model.layers.1.self_attn.q_proj"]!;
  assert.deepEqual([q0.rank, q0.alpha, q0.scale], [8, 32, 32 / Math.sqrt(8)]);
  assert.deepEqual([q1.rank, q1.alpha, q1.scale], [8, 16, 16 / Math.sqrt(8)]);
  assert.deepEqual([k1.rank, k1.alpha, k1.scale], [4, 16, 16 / 2]);
  assert.deepEqual([o1.rank, o1.alpha, o1.scale], [12, 16, 16 / Math.sqrt(12)]);
  assert.deepEqual([v0.rank, v0.alpha, v0.scale], [8, 8, 8 / Math.sqrt(8)]);
  await a.file.close();
});

test("peftPatterns writes one escaped fully-qualified key per deviating module, and PEFT's lookup reads it back", () => {
  const mods = [
    { path: "model.layers.0.q_proj", rank: 8, alpha: 16 },
    { path: "model.layers.1.q_proj", rank: 8, alpha: 16 },
    { path: "model.layers.10.q_proj", rank: 3, alpha: 5.5 },
  ];
  const p = peftPatterns(mods);
  assert.equal(p.r, 8);
  assert.equal(p.lora_alpha, 16);
  assert.deepEqual(p.rank_pattern, { "model\\.layers\\.10\\.q_proj": 3 });
  const cfg = { r: p.r, lora_alpha: p.lora_alpha, rank_pattern: p.rank_pattern, alpha_pattern: p.alpha_pattern };
  for (const m of mods) {
    const s = peftModuleScale(cfg, m.path, "t");
    assert.deepEqual([s.rank, s.alpha], [m.rank, m.alpha]);
  }
  // The escaped key does not match a module that merely looks similar.
  assert.equal(peftModuleScale(cfg, "model.layers.10xq_proj", "t").rank, 8);
});

test("kohya: alpha in F16/BF16/F32, missing or 0 ⇒ alpha = rank; conv flattened", async () => {
  const a = await loadAdapter(join(fixturesDir, "kohya-sd.safetensors"));
  assert.equal(a.format, "kohya");
  const by = Object.fromEntries(a.modules.map((m) => [m.name, m]));
  const stem = "lora_unet_down_blocks_0_attentions_0_";
  assert.equal(by[stem + "proj_in"]!.alpha, 2);
  assert.equal(by[stem + "proj_in"]!.scale, 0.5);
  assert.equal(by[stem + "transformer_blocks_0_attn1_to_q"]!.scale, 0.25);
  assert.equal(by[stem + "transformer_blocks_0_attn1_to_k"]!.scale, 1); // alpha 0
  assert.equal(by[stem + "transformer_blocks_0_attn1_to_v"]!.scale, 1); // no alpha
  const conv = by["lora_unet_down_blocks_0_resnets_0_conv1"]!;
  assert.deepEqual([conv.kind, conv.out, conv.in, conv.rank, conv.scale], ["conv", 24, 16 * 9, 4, 2]);
  assert.equal(by["lora_te_text_model_encoder_layers_0_self_attn_q_proj"]!.kohyaStem, "te");
  assert.ok(a.notes.some((n) => /alpha = rank/.test(n)));
  await a.file.close();
});

test("embedding and conv PEFT modules; kohya DyLoRA detected from metadata", async () => {
  const a = await loadAdapter(join(fixturesDir, "peft-f16-embed-conv"));
  const by = Object.fromEntries(a.modules.map((m) => [m.name, m]));
  assert.deepEqual([by["model.embed_tokens"]!.kind, by["model.embed_tokens"]!.out, by["model.embed_tokens"]!.in], ["embedding", 32, 100]);
  assert.deepEqual([by["unet.conv_in"]!.kind, by["unet.conv_in"]!.in], ["conv", 72]);
  assert.equal(a.dtype, "F16");
  await a.file.close();
  const d = await loadAdapter(join(fixturesDir, "kohya-dylora.safetensors"));
  assert.deepEqual(d.dylora, { unit: 2 });
  await d.file.close();
});

test("bad adapters are InvalidInputError (exit 3) naming the tensor", async () => {
  const cases: [string, RegExp][] = [
    ["nan-factor", /lora_A\.weight holds NaN/],
    ["inf-factor", /lora_B\.weight holds \+Inf/],
    ["rank-mismatch", /ranks differ/],
    ["config-contradicts", /config says rank 4/],
    ["up-without-down", /has lora_B but no lora_A/],
    ["not-lora", /not a LoRA adapter/],
    ["kohya-nan-alpha", /alpha is NaN|alpha must be finite/],
  ];
  const { checkFactorsFinite, readFactors } = await import("./factors.js");
  // the decoding read and the byte scan (convert's) refuse alike, with the same message
  for (const check of [readFactors, checkFactorsFinite])
    for (const [name, re] of cases) {
      await assert.rejects(
        async () => {
          const a = await loadAdapter(join(fixturesDir, "bad-adapters", `${name}.safetensors`));
          try {
            for (const m of a.modules) await check(a, m);
          } finally {
            await a.file.close();
          }
        },
        (e: unknown) => e instanceof InvalidInputError && e.exitCode === 3 && re.test(e.message),
        `${name} (${check.name})`,
      );
    }
});

test("kohya stems and match keys", () => {
  assert.equal(kohyaStemFor("model.layers.0.self_attn.q_proj"), "lora_model_layers_0_self_attn_q_proj");
  assert.equal(kohyaStemFor("unet.down_blocks.0.attentions.0.proj_in"), "lora_unet_down_blocks_0_attentions_0_proj_in");
  assert.equal(kohyaStemFor("text_encoder.text_model.encoder.layers.0.self_attn.q_proj"), "lora_te_text_model_encoder_layers_0_self_attn_q_proj");
  assert.equal(matchKeyFor("unet.a.b"), "unet_a_b");
});

test("fixtures regenerate byte for byte", async () => {
  const dir = tempDir("lora-fixtures-");
  await makeFixtures(dir);
  for (const f of [
    "example/adapter_model.safetensors",
    "example/adapter_config.json",
    "peft-rslora/adapter_model.safetensors",
    "kohya-sd.safetensors",
    "peft-bf16.safetensors",
    "bad-adapters/nan-factor.safetensors",
  ]) {
    assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(fixturesDir, f))), f);
  }
});

test("use_rslora: true gives alpha/√r, false or absent alpha/r, anything else is refused (PEFT's truthiness would decide)", () => {
  const base = { r: 4, lora_alpha: 8 };
  assert.equal(peftModuleScale({ ...base, use_rslora: true }, "m", "t").scale, 8 / Math.sqrt(4));
  for (const v of [false, null, undefined]) assert.equal(peftModuleScale({ ...base, use_rslora: v }, "m", "t").scale, 8 / 4);
  // what PEFT would do with each, by Python's truth
  for (const [v, py] of [
    ["yes", true],
    ["false", true],
    ["", false],
    [1, true],
    [0, false],
    [[true], true],
    [[], false],
    [{}, false],
  ] as const)
    assert.throws(
      () => peftModuleScale({ ...base, use_rslora: v }, "m", "t"),
      (e: unknown) => e instanceof InvalidInputError && e.message.includes(`use_rslora must be true or false`) && e.message.includes(`take it as ${py}`),
      JSON.stringify(v),
    );
});
