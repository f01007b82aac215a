// Fuzzing the family readers (issue 14; formats/adapter/families/): files that are valid
// safetensors but carry each family's keys with random shapes, dtypes, missing pieces and configs
// (AdaLoRA, IncreLoRA, LoRA-XS, NLoRA, MeteoRA, MiSS), plus byte mutations of a valid file of each
// family. Every case must load and compute its factors, or end in an InvalidInputError (exit 3)
// with a non-empty first line — never another exception. The case counts are printed.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { serializeSafetensors } from "../../formats/safetensors/index.js";
import { Rng } from "../../linalg/random.js";
import { adaloraFile, increloraFile, meteoraFile, missFile, threeMatrixFile } from "../families/files.js";
import { eachModule, randomTensors, tensorFields, verdict } from "./common.js";
import { tempDir } from "../temp-dir.js";

const dir = tempDir("lora-fuzz-families-");

const consume = (path: string) =>
  verdict(async () => {
    const a = await loadAdapter(path);
    await eachModule(a, (m) => readFactors(a, m, "f64"));
  });

const M = "base_model.model.layers.0.q_proj";
/** Each family's keys (suffixes to a module), and the configs it reads. */
const FAMILIES: { roles: string[]; configs: Record<string, unknown>[]; file: string; cfgName: string }[] = [
  {
    roles: [".lora_A", ".lora_E", ".lora_B"],
    configs: [{ peft_type: "ADALORA", init_r: 4, lora_alpha: 8 }, { peft_type: "ADALORA", init_r: "x" }, {}],
    file: "adapter_model.safetensors",
    cfgName: "adapter_config.json",
  },
  {
    roles: [".lora_A.0", ".lora_E.0", ".lora_B.0", ".lora_A.1", ".lora_E.1", ".lora_B.1", ".ranknum"],
    configs: [{ lora_alpha: 16 }, { lora_alpha: null }],
    file: "model.safetensors",
    cfgName: "config.json",
  },
  {
    roles: [".lora_A.weight", ".lora_B.weight", "_lora_latent_mapping.weight"],
    configs: [
      { peft_type: "LORA", r: 3, lora_alpha: 6 },
      { peft_type: "LORA", r: 2 },
    ],
    file: "adapter_model.safetensors",
    cfgName: "adapter_config.json",
  },
  {
    roles: [".lora_A.weight", ".lora_B.weight", ".lora_N.weight"],
    configs: [{ peft_type: "LORA", r: 3, lora_alpha: 6, use_rslora: true }],
    file: "adapter_model.safetensors",
    cfgName: "adapter_config.json",
  },
  {
    roles: [".lora_A.weight", ".lora_B.weight", ".moe_gate.weight"],
    configs: [{ r: 2, lora_alpha: 4 }, { r: 3, lora_alpha: 4 }, {}],
    file: "model.safetensors",
    cfgName: "adapter_config.json",
  },
  {
    roles: [".miss_block", ".bone_block"],
    configs: [
      { peft_type: "MISS", r: 2, init_weights: true },
      { peft_type: "BONE", init_weights: "bat" },
      { peft_type: "MISS", init_weights: "mini", mini_r: 2 },
    ],
    file: "adapter_model.safetensors",
    cfgName: "adapter_config.json",
  },
];

const caseArb = fc.record({
  fam: fc.nat(FAMILIES.length - 1),
  ...tensorFields(3),
  dtype: fc.constantFrom("F32", "F16", "BF16", "I32", "F64"),
  cfg: fc.nat(5),
  seed: fc.nat(),
});

test("fuzz: 2,000 structured family files (random shapes, dtypes, missing keys, configs)", async () => {
  const counts = { ok: 0, invalid: 0 };
  let n = 0;
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const f = FAMILIES[c.fam]!;
      const rng = new Rng(c.seed);
      const specs = randomTensors(f.roles, (role) => M + role, c, rng);
      if (specs.length === 0) return;
      const d = join(dir, `s${n++}`);
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
      writeFileSync(join(d, f.file), await serializeSafetensors(specs, null));
      writeFileSync(join(d, f.cfgName), JSON.stringify(f.configs[c.cfg % f.configs.length]));
      counts[await consume(join(d, f.file))]++;
      rmSync(d, { recursive: true, force: true });
    }),
    { numRuns: 2000, seed: 14 },
  );
  console.log(`family fuzz (structured): ${counts.ok + counts.invalid} cases (accepted ${counts.ok}, rejected with exit 3: ${counts.invalid})`);
  assert.ok(counts.invalid > 0 && counts.ok + counts.invalid >= 1500);
});

test("fuzz: 1,200 byte mutations of a valid file of each family", async () => {
  const rng = new Rng(14);
  const seeds = [
    await adaloraFile(join(dir, "ada"), rng),
    await increloraFile(join(dir, "inc"), rng),
    await threeMatrixFile(join(dir, "xs"), rng, "xs"),
    await threeMatrixFile(join(dir, "nl"), rng, "nlora"),
    await meteoraFile(join(dir, "met"), rng),
    await missFile(join(dir, "miss"), rng, "default"),
  ].map((f) => (f.input.endsWith(".safetensors") ? f.input : join(f.input, "adapter_model.safetensors")));
  const originals = seeds.map((p) => readFileSync(p));
  const counts = { ok: 0, invalid: 0 };
  await fc.assert(
    fc.asyncProperty(fc.nat(seeds.length - 1), fc.array(fc.tuple(fc.nat(2), fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 3 }), async (si, muts) => {
      let b = Buffer.from(originals[si]!);
      const hdr = Number(b.readBigUInt64LE(0)) + 8;
      for (const [kind, pos, val] of muts) {
        if (kind === 0) b = b.subarray(0, pos % (b.length + 1));
        else if (kind === 1 && b.length > 8) b[8 + (pos % Math.max(1, Math.min(b.length, hdr) - 8))] = val;
        else if (b.length) b[pos % b.length] = val;
      }
      writeFileSync(seeds[si]!, b);
      try {
        counts[await consume(seeds[si]!)]++;
      } finally {
        writeFileSync(seeds[si]!, originals[si]!);
      }
    }),
    { numRuns: 1200, seed: 14 },
  );
  console.log(`family fuzz (mutations): ${counts.ok + counts.invalid} cases (accepted ${counts.ok}, rejected with exit 3: ${counts.invalid})`);
  assert.ok(counts.ok + counts.invalid === 1200);
});
