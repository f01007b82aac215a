// Fuzzing the LyCORIS reader (issue 13; formats/adapter/parse-lycoris.ts, formats/adapter/lycoris/):
// files that are valid safetensors but carry one LyCORIS module type's keys (LoHa ± Tucker, LoKr in
// its full / low-rank / Tucker forms, LoCon with `lora_mid`, full `diff`/`diff_b`, (IA)³) with random
// shapes, dtypes, missing pieces and alphas, plus byte mutations of a valid mixed file. Every case
// must load and compute its factors and spectra, or end in an InvalidInputError (exit 3) with a
// non-empty first line — never another exception. The case counts are printed.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import fc from "fast-check";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { serializeSafetensors } from "../../formats/safetensors/index.js";
import { Rng } from "../../linalg/random.js";
import { type LySpec, lycorisFile } from "../lycoris-files.js";
import { eachModule, randomTensors, tensorFields, verdict } from "./common.js";

const dir = mkdtempSync(join(tmpdir(), "lora-fuzz-lycoris-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const META = { ss_network_module: "lycoris.kohya" };

const consume = (path: string) =>
  verdict(async () => {
    const a = await loadAdapter(path);
    await eachModule(a, async (m) => {
      await readFactors(a, m, "f64");
      if (m.family?.spectrum) await m.family.spectrum();
      if (m.family?.truncate) await m.family.truncate(1);
    });
  });

const STEM = "lora_unet_down_blocks_0_attentions_0_proj_in";
/** Each LyCORIS module type's key suffixes (beside `alpha`). */
const TYPES: string[][] = [
  ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"],
  ["hada_w1_a", "hada_w1_b", "hada_t1", "hada_w2_a", "hada_w2_b", "hada_t2"],
  ["lokr_w1", "lokr_w2"],
  ["lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"],
  ["lokr_w1", "lokr_w2_a", "lokr_w2_b", "lokr_t2"],
  ["lora_down.weight", "lora_mid.weight", "lora_up.weight"],
  ["diff", "diff_b"],
  ["weight", "on_input"],
];

const caseArb = fc.record({
  type: fc.nat(TYPES.length - 1),
  ...tensorFields(4),
  dtype: fc.constantFrom("F32", "F16", "BF16", "I64", "F64"),
  alpha: fc.option(fc.oneof(fc.double({ noNaN: false }), fc.constant(0)), { nil: undefined }),
  seed: fc.nat(),
});

test("fuzz: 2,000 structured LyCORIS files (random shapes, dtypes, missing keys, alphas)", async () => {
  const counts = { ok: 0, invalid: 0 };
  let n = 0;
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const roles = TYPES[c.type]!;
      const rng = new Rng(c.seed);
      const specs = randomTensors(roles, (role) => `${STEM}.${role}`, c, rng);
      if (c.alpha !== undefined) {
        const a = new Uint8Array(4);
        new DataView(a.buffer).setFloat32(0, c.alpha, true);
        specs.push({ name: `${STEM}.alpha`, dtype: "F32", shape: [], data: a });
      }
      if (specs.length === 0) return;
      const p = join(dir, `s${n++}.safetensors`);
      writeFileSync(p, await serializeSafetensors(specs, META));
      counts[await consume(p)]++;
      rmSync(p, { force: true });
    }),
    { numRuns: 2000, seed: 13 },
  );
  console.log(`lycoris fuzz (structured): ${counts.ok + counts.invalid} cases (accepted ${counts.ok}, rejected with exit 3: ${counts.invalid})`);
  assert.ok(counts.invalid > 0 && counts.ok > 0 && counts.ok + counts.invalid >= 1500);
});

test("fuzz: 1,500 byte mutations of a valid mixed LyCORIS file", async () => {
  const rng = new Rng(13);
  const specs: LySpec[] = [
    { kind: "loha", stem: "lora_unet_a_to_q", out: 6, in: 5, r1: 2, r2: 3, alpha: 2 },
    { kind: "loha", stem: "lora_unet_a_conv", out: 4, in: 3, r1: 2, r2: 2, kernel: [3, 3], tucker: true },
    { kind: "lokr", stem: "lora_unet_a_to_k", a: 2, b: 3, c: 2, d: 4, w2r: 2, alpha: 1 },
    { kind: "lokr", stem: "lora_unet_a_to_v", a: 2, b: 3, c: 2, d: 4, w1r: 1 },
    { kind: "locon-tucker", stem: "lora_unet_a_conv2", out: 4, inCh: 3, r: 2, kernel: [3, 3], alpha: 1 },
    { kind: "full", stem: "lora_unet_a_proj", out: 3, in: 4, bias: true },
    { kind: "plain", stem: "lora_unet_a_to_out_0", out: 6, in: 5, r: 2, alpha: 1 },
    { kind: "ia3", stem: "lora_unet_a_ff", n: 5 },
  ];
  const { bytes } = await lycorisFile(rng, specs, "F16", META, { dense: false });
  const original = Buffer.from(bytes);
  const hdr = Number(original.readBigUInt64LE(0)) + 8;
  const p = join(dir, "mutated.safetensors");
  writeFileSync(p, original);
  assert.equal(await consume(p), "ok", "the unmutated seed file loads");
  const counts = { ok: 0, invalid: 0 };
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.nat(2), fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 3 }), async (muts) => {
      let b = Buffer.from(original);
      for (const [kind, pos, val] of muts) {
        if (kind === 0) b = b.subarray(0, pos % (b.length + 1));
        else if (kind === 1 && b.length > 8) b[8 + (pos % Math.max(1, Math.min(b.length, hdr) - 8))] = val;
        else if (b.length) b[pos % b.length] = val;
      }
      writeFileSync(p, b);
      counts[await consume(p)]++;
    }),
    { numRuns: 1500, seed: 13 },
  );
  console.log(`lycoris fuzz (mutations): ${counts.ok + counts.invalid} cases (accepted ${counts.ok}, rejected with exit 3: ${counts.invalid})`);
  assert.ok(counts.ok + counts.invalid === 1500 && counts.invalid > 0);
});
