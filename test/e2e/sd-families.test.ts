// The naming maps end to end (docs/formats.md "Naming maps", issue 13): generated kohya files of
// SD 1.5, SDXL (sgm and diffusers-style stems, te1/te2) and Flux (BFL names, scaled-down dims) in
// F16/BF16/F32 through `convert --to diffusers|peft|kohya` and back. Every module's ΔW is compared
// with the dense float64 ΔW formed here from the file's stored values, by the module map written
// out below by hand from kohya's and diffusers' conventions (not by the code under test):
// ≤ 1e-6 relative. When ../shared/tools/diffusers-check, Debian's torch and a diffusers src/ are
// present, diffusers' own loader reads every SD 1.5, SDXL and Flux file convert wrote, with the
// ΔW we meant (≤ 1e-6).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { encodeFloats, SafetensorsFile, serializeSafetensors, type DType, type TensorSpec } from "../../formats/safetensors/index.js";
import { Rng } from "../../linalg/random.js";
import { loraBin, repoRoot, sharedDir } from "../paths.js";
import { diffusersFile, kohyaFile, product, rows, swapped, type Dense, type KohyaSpec } from "../sd-files.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-sd-families-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const seed = Number(process.env["LORA_SEED"] ?? Date.now() % 1e9);
console.log(`sd-families seed ${seed}`);
const DTYPES: DType[] = ["F16", "BF16", "F32"];

function lora(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [loraBin, ...args], { env: { ...process.env, LORA_TEST: "1", NO_COLOR: "1" }, encoding: "utf8", maxBuffer: 256 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** One kohya module and the diffusers module(s) it is: rows [r0, r0+n) of its ΔW, halves swapped for norm_out. */
interface Entry {
  spec: KohyaSpec;
  parts: { path: string; r0: number; n: number }[];
  swap?: boolean;
  /** Expected rank of each diffusers part (split qkv/linear1). */
  partRank?: number;
}
const one = (spec: KohyaSpec, path: string, swap = false): Entry => ({ spec, parts: [{ path, r0: 0, n: spec.out }], ...(swap ? { swap } : {}) });
const split = (spec: KohyaSpec, paths: string[], sizes: number[], partRank: number): Entry => ({
  spec,
  parts: paths.map((path, j) => ({ path, r0: sizes.slice(0, j).reduce((x, y) => x + y, 0), n: sizes[j]! })),
  partRank,
});

const TB = "unet.down_blocks.0.attentions.0.transformer_blocks.0";
const TE = "text_encoder.text_model.encoder.layers";
const TE2 = "text_encoder_2.text_model.encoder.layers";

const SD15: Entry[] = [
  one({ stem: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", out: 40, in: 40, r: 4, alpha: 2 }, `${TB}.attn1.to_q`),
  one({ stem: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", out: 40, in: 24, r: 4, alpha: 2 }, `${TB}.attn2.to_k`),
  one({ stem: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0", out: 40, in: 40, r: 2, alpha: 2 }, `${TB}.attn1.to_out.0`),
  one({ stem: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj", out: 64, in: 40, r: 4, alpha: 8 }, `${TB}.ff.net.0.proj`),
  one({ stem: "lora_unet_mid_block_attentions_0_proj_in", out: 32, in: 32, r: 2, alpha: 0.5 }, "unet.mid_block.attentions.0.proj_in"),
  one({ stem: "lora_unet_up_blocks_1_resnets_0_conv1", out: 16, in: 24 * 9, r: 4, alpha: 4, kernel: [3, 3] }, "unet.up_blocks.1.resnets.0.conv1"),
  one({ stem: "lora_unet_down_blocks_1_resnets_0_time_emb_proj", out: 32, in: 48, r: 2 }, "unet.down_blocks.1.resnets.0.time_emb_proj"),
  one({ stem: "lora_te_text_model_encoder_layers_0_self_attn_q_proj", out: 768, in: 768, r: 2, alpha: 2 }, `${TE}.0.self_attn.q_proj`),
  one({ stem: "lora_te_text_model_encoder_layers_0_self_attn_out_proj", out: 768, in: 768, r: 2, alpha: 2 }, `${TE}.0.self_attn.out_proj`),
  one({ stem: "lora_te_text_model_encoder_layers_11_mlp_fc1", out: 3072, in: 768, r: 2, alpha: 1 }, `${TE}.11.mlp.fc1`),
];

const SDXL_SGM: Entry[] = [
  one(
    { stem: "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", out: 40, in: 40, r: 4, alpha: 2 },
    "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
  ),
  one({ stem: "lora_unet_input_blocks_8_1_proj_in", out: 32, in: 32, r: 2, alpha: 1 }, "unet.down_blocks.2.attentions.1.proj_in"),
  one(
    { stem: "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v", out: 40, in: 20, r: 4, alpha: 2 },
    "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
  ),
  one({ stem: "lora_unet_middle_block_2_in_layers_2", out: 16, in: 16 * 9, r: 2, alpha: 1, kernel: [3, 3] }, "unet.mid_block.resnets.1.conv1"),
  one({ stem: "lora_unet_output_blocks_2_2_conv", out: 16, in: 16 * 9, r: 2, alpha: 2, kernel: [3, 3] }, "unet.up_blocks.0.upsamplers.0.conv"),
  one(
    { stem: "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2", out: 40, in: 80, r: 4, alpha: 4 },
    "unet.up_blocks.1.attentions.2.transformer_blocks.1.ff.net.2",
  ),
  one({ stem: "lora_unet_input_blocks_1_0_emb_layers_1", out: 24, in: 48, r: 2, alpha: 2 }, "unet.down_blocks.0.resnets.0.time_emb_proj"),
  one({ stem: "lora_unet_input_blocks_3_0_op", out: 16, in: 16 * 9, r: 2, alpha: 2, kernel: [3, 3] }, "unet.down_blocks.0.downsamplers.0.conv"),
  one({ stem: "lora_unet_output_blocks_0_0_skip_connection", out: 16, in: 24, r: 2, alpha: 2, kernel: [1, 1] }, "unet.up_blocks.0.resnets.0.conv_shortcut"),
  one({ stem: "lora_te1_text_model_encoder_layers_0_self_attn_k_proj", out: 768, in: 768, r: 2, alpha: 4 }, `${TE}.0.self_attn.k_proj`),
  one({ stem: "lora_te1_text_model_encoder_layers_0_self_attn_out_proj", out: 768, in: 768, r: 2, alpha: 4 }, `${TE}.0.self_attn.out_proj`),
  one({ stem: "lora_te2_text_model_encoder_layers_31_self_attn_v_proj", out: 1280, in: 1280, r: 2, alpha: 4 }, `${TE2}.31.self_attn.v_proj`),
  one({ stem: "lora_te2_text_model_encoder_layers_31_self_attn_out_proj", out: 1280, in: 1280, r: 2, alpha: 4 }, `${TE2}.31.self_attn.out_proj`),
];

const SDXL_DIFFUSERS: Entry[] = [
  one(
    { stem: "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k", out: 40, in: 40, r: 4, alpha: 4 },
    "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k",
  ),
  one(
    { stem: "lora_unet_up_blocks_0_attentions_2_transformer_blocks_9_attn2_to_out_0", out: 40, in: 40, r: 2, alpha: 4 },
    "unet.up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_out.0",
  ),
  one({ stem: "lora_unet_mid_block_resnets_1_conv2", out: 16, in: 16 * 9, r: 2, alpha: 1, kernel: [3, 3] }, "unet.mid_block.resnets.1.conv2"),
  one({ stem: "lora_te1_text_model_encoder_layers_3_self_attn_q_proj", out: 768, in: 768, r: 2, alpha: 4 }, `${TE}.3.self_attn.q_proj`),
  one({ stem: "lora_te1_text_model_encoder_layers_3_self_attn_out_proj", out: 768, in: 768, r: 2, alpha: 4 }, `${TE}.3.self_attn.out_proj`),
  one({ stem: "lora_te2_text_model_encoder_layers_0_self_attn_q_proj", out: 1280, in: 1280, r: 2, alpha: 4 }, `${TE2}.0.self_attn.q_proj`),
  one({ stem: "lora_te2_text_model_encoder_layers_0_self_attn_out_proj", out: 1280, in: 1280, r: 2, alpha: 4 }, `${TE2}.0.self_attn.out_proj`),
];

/**
 * Flux modules with hidden size h (Flux-dev: 3072, MLP 4h): scaled down in the plain tests, real
 * output dims in the diffusers check (diffusers splits linear1 at 3072, 3072, 3072, 12288), whose
 * input dims are `inn` (diffusers never checks them). `outside`: the modules diffusers' kohya Flux
 * converter drops (img_in, time_in, final_layer).
 */
function flux(h: number, inn: number, outside: boolean): Entry[] {
  const D = "transformer.transformer_blocks";
  const S = "transformer.single_transformer_blocks";
  const i = (n: number) => (inn > 0 ? inn : n);
  const e: Entry[] = [
    split(
      { stem: "lora_unet_double_blocks_0_img_attn_qkv", out: 3 * h, in: i(h), r: 4, alpha: 8 },
      [`${D}.0.attn.to_q`, `${D}.0.attn.to_k`, `${D}.0.attn.to_v`],
      [h, h, h],
      4,
    ),
    split(
      { stem: "lora_unet_double_blocks_0_txt_attn_qkv", out: 3 * h, in: i(h), r: 6, alpha: 3, blocks: [h, h, h] },
      [`${D}.0.attn.add_q_proj`, `${D}.0.attn.add_k_proj`, `${D}.0.attn.add_v_proj`],
      [h, h, h],
      2,
    ),
    one({ stem: "lora_unet_double_blocks_0_img_attn_proj", out: h, in: i(h), r: 4, alpha: 4 }, `${D}.0.attn.to_out.0`),
    one({ stem: "lora_unet_double_blocks_1_txt_mlp_0", out: 4 * h, in: i(h), r: 2, alpha: 1 }, `${D}.1.ff_context.net.0.proj`),
    one({ stem: "lora_unet_double_blocks_1_img_mlp_2", out: h, in: i(4 * h), r: 2, alpha: 1 }, `${D}.1.ff.net.2`),
    one({ stem: "lora_unet_double_blocks_1_img_mod_lin", out: 6 * h, in: i(h), r: 2, alpha: 2 }, `${D}.1.norm1.linear`),
    split(
      { stem: "lora_unet_single_blocks_0_linear1", out: 7 * h, in: i(h), r: 4, alpha: 2 },
      [`${S}.0.attn.to_q`, `${S}.0.attn.to_k`, `${S}.0.attn.to_v`, `${S}.0.proj_mlp`],
      [h, h, h, 4 * h],
      4,
    ),
    split(
      { stem: "lora_unet_single_blocks_1_linear1", out: 7 * h, in: i(h), r: 8, alpha: 8, blocks: [h, h, h, 4 * h] },
      [`${S}.1.attn.to_q`, `${S}.1.attn.to_k`, `${S}.1.attn.to_v`, `${S}.1.proj_mlp`],
      [h, h, h, 4 * h],
      2,
    ),
    one({ stem: "lora_unet_single_blocks_0_linear2", out: h, in: i(5 * h), r: 2, alpha: 1 }, `${S}.0.proj_out`),
    one({ stem: "lora_unet_single_blocks_0_modulation_lin", out: 3 * h, in: i(h), r: 2, alpha: 2 }, `${S}.0.norm.linear`),
    one({ stem: "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", out: 768, in: 768, r: 2, alpha: 2 }, `${TE}.0.self_attn.q_proj`),
    one({ stem: "lora_te1_text_model_encoder_layers_0_self_attn_out_proj", out: 768, in: 768, r: 2, alpha: 2 }, `${TE}.0.self_attn.out_proj`),
  ];
  if (outside)
    e.push(
      one({ stem: "lora_unet_img_in", out: h, in: i(16), r: 2, alpha: 2 }, "transformer.x_embedder"),
      one({ stem: "lora_unet_time_in_in_layer", out: h, in: i(32), r: 2, alpha: 1 }, "transformer.time_text_embed.timestep_embedder.linear_1"),
      one({ stem: "lora_unet_final_layer_adaLN_modulation_1", out: 2 * h, in: i(h), r: 2, alpha: 4 }, "transformer.norm_out.linear", true),
      one({ stem: "lora_unet_final_layer_linear", out: 16, in: i(h), r: 2, alpha: 2 }, "transformer.proj_out"),
    );
  return e;
}

const FAMILIES: [string, Entry[]][] = [
  ["SD 1.5", SD15],
  ["SDXL sgm", SDXL_SGM],
  ["SDXL diffusers-style", SDXL_DIFFUSERS],
  ["Flux", flux(16, 0, true)],
];

/** The expected ΔW of every diffusers module of a family's file. */
function expectedDiffusers(entries: Entry[], dense: Map<string, Dense>): Map<string, Dense> {
  const m = new Map<string, Dense>();
  for (const e of entries) {
    const d = dense.get(e.spec.stem)!;
    const full = e.swap ? swapped(d) : d;
    for (const p of e.parts) m.set(p.path, rows(full, p.r0, p.n));
  }
  return m;
}

/** Every module of a written adapter: ΔW = scale·B·A in float64, by path (or kohya stem). */
async function deltas(path: string, by: "path" | "name"): Promise<Map<string, Dense & { rank: number; format: string }>> {
  const a = await loadAdapter(path);
  try {
    const out = new Map<string, Dense & { rank: number; format: string }>();
    for (const m of a.modules) {
      const f = await readFactors(a, m, "f64");
      out.set(by === "path" ? m.path : m.name, {
        out: m.out,
        in: m.in,
        rank: m.rank,
        format: a.format,
        D: product(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale),
      });
    }
    return out;
  } finally {
    await a.file.close();
  }
}

function relDiff(x: Float64Array, y: Float64Array): number {
  let num = 0,
    den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i]! - y[i]!) ** 2;
    den += y[i]! ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-300);
}

function assertSameDeltas(got: Map<string, Dense>, want: Map<string, Dense>, what: string): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: module names`);
  for (const [k, w] of want) {
    const g = got.get(k)!;
    assert.deepEqual([g.out, g.in], [w.out, w.in], `${what}: ${k} shape`);
    const e = relDiff(g.D, w.D);
    assert.ok(e <= 1e-6, `${what}: ${k} ΔW differs by ${e} (seed ${seed})`);
  }
}

async function writeKohya(name: string, entries: Entry[], dtype: DType, rng: Rng): Promise<{ file: string; dense: Map<string, Dense> }> {
  const { bytes, dense } = await kohyaFile(
    rng,
    entries.map((e) => e.spec),
    dtype,
  );
  const file = join(tmp, `${name.replace(/\W+/g, "-")}-${dtype}.safetensors`);
  writeFileSync(file, bytes);
  return { file, dense };
}

test("kohya SD 1.5, SDXL (sgm, diffusers-style) and Flux files, F16/BF16/F32: --to diffusers and --to peft give diffusers' module names and the exact ΔW", async () => {
  const rng = new Rng(seed);
  for (const [fam, entries] of FAMILIES) {
    for (const dtype of DTYPES) {
      const { file, dense } = await writeKohya(fam, entries, dtype, rng);
      const want = expectedDiffusers(entries, dense);
      const d = join(tmp, `d-${fam.replace(/\W+/g, "-")}-${dtype}.safetensors`);
      const r = lora(["convert", file, "--to", "diffusers", "-o", d, "--json"]);
      assert.equal(r.status, 0, r.stderr);
      const got = await deltas(d, "path");
      assertSameDeltas(got, want, `${fam} ${dtype} → diffusers`);
      for (const e of entries) if (e.partRank !== undefined) for (const p of e.parts) assert.equal(got.get(p.path)!.rank, e.partRank, `${p.path} rank`);
      const p = join(tmp, `p-${fam.replace(/\W+/g, "-")}-${dtype}`);
      const rp = lora(["convert", file, "--to", "peft", "-o", p]);
      assert.equal(rp.status, 0, rp.stderr);
      assertSameDeltas(await deltas(p, "path"), want, `${fam} ${dtype} → peft`);
      const cfg = JSON.parse(readFileSync(join(p, "adapter_config.json"), "utf8")) as { target_modules: string[] };
      assert.deepEqual(cfg.target_modules, [...want.keys()].sort(), `${fam}: PEFT target_modules`);
    }
  }
});

test("kohya → diffusers → kohya and kohya → PEFT → kohya: stems kept (SDXL sgm written diffusers-style), ΔW exact; Flux factors fuse back byte for byte", async () => {
  const rng = new Rng(seed + 1);
  for (const [fam, entries] of FAMILIES) {
    for (const dtype of DTYPES) {
      const { file, dense } = await writeKohya(`rt-${fam}`, entries, dtype, rng);
      for (const via of ["diffusers", "peft"] as const) {
        const mid = join(tmp, `rt-${via}-${fam.replace(/\W+/g, "-")}-${dtype}${via === "diffusers" ? ".safetensors" : ""}`);
        const back = join(tmp, `rt-back-${via}-${fam.replace(/\W+/g, "-")}-${dtype}.safetensors`);
        for (const [src, to, out] of [
          [file, via, mid],
          [mid, "kohya", back],
        ] as const) {
          const r = lora(["convert", src, "--to", to, "-o", out]);
          assert.equal(r.status, 0, r.stderr);
        }
        const got = await deltas(back, "name");
        const want = new Map<string, Dense>();
        for (const e of entries) {
          // SDXL sgm stems come back in the diffusers-style spelling kohya and diffusers both read.
          const stem =
            fam === "SDXL sgm" && e.spec.stem.startsWith("lora_unet_")
              ? "lora_unet_" + e.parts[0]!.path.slice("unet.".length).replace(/\./g, "_")
              : e.spec.stem;
          want.set(stem, dense.get(e.spec.stem)!);
        }
        assertSameDeltas(got, want, `${fam} ${dtype} via ${via}`);
        if (fam === "Flux") {
          const a = await loadAdapter(file),
            b = await loadAdapter(back);
          try {
            for (const m of a.modules) {
              const y = b.modules.find((x) => x.name === m.name)!;
              assert.equal(y.rank, m.rank, `${m.name}: rank after the round trip`);
              assert.ok((await b.file.readRaw(y.A)).equals(await a.file.readRaw(m.A)), `${m.name}: lora_down bytes`);
              assert.ok((await b.file.readRaw(y.B)).equals(await a.file.readRaw(m.B)), `${m.name}: lora_up bytes`);
            }
          } finally {
            await Promise.all([a.file.close(), b.file.close()]);
          }
        }
      }
    }
  }
});

test("diffusers Flux parts of different ranks and scales, one missing, fuse into one kohya module: stacked down, block-diagonal up, ΔW exact", async () => {
  const rng = new Rng(seed + 2);
  const h = 12;
  for (const dtype of DTYPES) {
    const S = "transformer.single_transformer_blocks.3";
    const D = "transformer.transformer_blocks.2";
    const { bytes, dense } = await diffusersFile(
      rng,
      [
        { path: `${S}.attn.to_q`, out: h, in: h, r: 2, alpha: 4 },
        { path: `${S}.attn.to_v`, out: h, in: h, r: 3, alpha: 1.5 },
        { path: `${S}.proj_mlp`, out: 4 * h, in: h, r: 1, alpha: 1 },
        { path: `${D}.attn.add_k_proj`, out: h, in: h, r: 2 },
        { path: `${D}.attn.to_out.0`, out: h, in: h, r: 2, alpha: 2 },
        { path: "transformer.norm_out.linear", out: 2 * h, in: h, r: 2, alpha: 2 },
      ],
      dtype,
    );
    const src = join(tmp, `fuse-${dtype}.safetensors`);
    writeFileSync(src, bytes);
    const k = join(tmp, `fuse-${dtype}-k.safetensors`);
    const r = lora(["convert", src, "--to", "kohya", "-o", k, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const zero = (n: number) => ({ out: n, in: h, D: new Float64Array(n * h) });
    const cat = (...ds: Dense[]): Dense => {
      const D = new Float64Array(ds.reduce((s, d) => s + d.D.length, 0));
      let o = 0;
      for (const d of ds) {
        D.set(d.D, o);
        o += d.D.length;
      }
      return { out: ds.reduce((s, d) => s + d.out, 0), in: h, D };
    };
    const want = new Map<string, Dense>([
      ["lora_unet_single_blocks_3_linear1", cat(dense.get(`${S}.attn.to_q`)!, zero(h), dense.get(`${S}.attn.to_v`)!, dense.get(`${S}.proj_mlp`)!)],
      ["lora_unet_double_blocks_2_txt_attn_qkv", cat(zero(h), dense.get(`${D}.attn.add_k_proj`)!, zero(h))],
      ["lora_unet_double_blocks_2_img_attn_proj", dense.get(`${D}.attn.to_out.0`)!],
      ["lora_unet_final_layer_adaLN_modulation_1", swapped(dense.get("transformer.norm_out.linear")!)],
    ]);
    const got = await deltas(k, "name");
    assertSameDeltas(got, want, `fuse ${dtype}`);
    assert.equal(got.get("lora_unet_single_blocks_3_linear1")!.rank, 6);
    // Different scales are folded into up: written in F32 at least.
    const a = await loadAdapter(k);
    try {
      const m = a.modules.find((x) => x.name === "lora_unet_single_blocks_3_linear1")!;
      assert.equal(m.A.dtype, dtype === "F32" ? "F32" : "F32");
      assert.equal(a.modules.find((x) => x.name === "lora_unet_double_blocks_2_img_attn_proj")!.A.dtype, dtype);
    } finally {
      await a.file.close();
    }
    // And back to diffusers: the parts again (the fused up is block-diagonal), the missing ones as zero ΔW.
    const d = join(tmp, `fuse-${dtype}-d.safetensors`);
    assert.equal(lora(["convert", k, "--to", "diffusers", "-o", d]).status, 0);
    const back = await deltas(d, "path");
    for (const [p, w] of dense) assert.ok(relDiff(back.get(p)!.D, w.D) <= 1e-6, `${p} after fuse and split`);
    assert.equal(
      back.get(`${S}.attn.to_k`)!.D.every((x) => x === 0),
      true,
    );
  }
});

test("a module no naming map covers exits 3 naming it, and nothing is written", async () => {
  const rng = new Rng(seed + 3);
  const cases: [string, KohyaSpec[], string, string][] = [
    [
      "flux-unknown",
      [
        { stem: "lora_unet_double_blocks_0_img_attn_qkv", out: 24, in: 8, r: 2 },
        { stem: "lora_unet_double_blocks_0_img_attn_norm", out: 8, in: 8, r: 2 },
      ],
      "diffusers",
      "lora_unet_double_blocks_0_img_attn_norm",
    ],
    [
      "sd-unknown",
      [{ stem: "lora_unet_down_blocks_0_attentions_0_bogus_layer", out: 8, in: 8, r: 2 }],
      "peft",
      "lora_unet_down_blocks_0_attentions_0_bogus_layer",
    ],
    ["flux-linear1-rows", [{ stem: "lora_unet_single_blocks_0_linear1", out: 20, in: 8, r: 2 }], "diffusers", "lora_unet_single_blocks_0_linear1"],
  ];
  for (const [name, specs, to, key] of cases) {
    const { bytes } = await kohyaFile(rng, specs, "F32");
    const src = join(tmp, `${name}.safetensors`);
    writeFileSync(src, bytes);
    const out = join(tmp, `${name}-out${to === "diffusers" ? ".safetensors" : ""}`);
    const r = lora(["convert", src, "--to", to, "-o", out]);
    assert.equal(r.status, 3, `${name}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(key), name);
    assert.equal(existsSync(out), false, `${name}: nothing written`);
    // inspect still reads the file (names kept as kohya stems) and kohya → kohya keeps them.
    assert.equal(lora(["inspect", src]).status, 0);
  }
  // A diffusers transformer module that is no Flux module has no kohya name.
  const { bytes } = await diffusersFile(rng, [{ path: "transformer.pos_embed.proj", out: 8, in: 8, r: 2 }], "F32");
  const src = join(tmp, "sd3ish.safetensors");
  writeFileSync(src, bytes);
  const r = lora(["convert", src, "--to", "kohya", "-o", join(tmp, "sd3ish-k.safetensors")]);
  assert.equal(r.status, 3, r.stderr);
  assert.match(r.stderr, /transformer\.pos_embed\.proj/);
  assert.equal(existsSync(join(tmp, "sd3ish-k.safetensors")), false);
});

test("convert warns where diffusers would drop or mis-scale a module of the written file", async () => {
  const rng = new Rng(seed + 4);
  const run = async (name: string, specs: KohyaSpec[], to: string) => {
    const { bytes } = await kohyaFile(rng, specs, "F32");
    const src = join(tmp, `${name}.safetensors`);
    writeFileSync(src, bytes);
    const r = lora(["convert", src, "--to", to, "-o", join(tmp, `${name}-${to}.safetensors`), "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const w = (JSON.parse(r.stdout) as { warnings: string[] }).warnings;
    for (const x of w) assert.ok(r.stderr.includes(`lora: warning: ${x}`));
    return w;
  };
  const fluxSpecs: KohyaSpec[] = [
    { stem: "lora_unet_double_blocks_0_img_attn_qkv", out: 24, in: 8, r: 2 },
    { stem: "lora_unet_img_in", out: 8, in: 16, r: 2 },
    { stem: "lora_unet_final_layer_linear", out: 16, in: 8, r: 2 },
    { stem: "lora_te3_encoder_block_0_layer_0_SelfAttention_q", out: 16, in: 16, r: 2 },
  ];
  const wk = await run("warn-flux", fluxSpecs, "kohya");
  assert.ok(
    wk.some((x) => /drops 2 module\(s\).*lora_unet_img_in/.test(x)),
    JSON.stringify(wk),
  );
  assert.ok(
    wk.some((x) => /T5 \(lora_te3_\)/.test(x)),
    JSON.stringify(wk),
  );
  const wd = await run("warn-flux", fluxSpecs, "diffusers");
  assert.deepEqual(
    wd.map((x) => /text_encoder_2 \(T5\)/.test(x)),
    [true],
    JSON.stringify(wd),
  );
  const sd: KohyaSpec[] = [
    { stem: "lora_te_text_model_encoder_layers_0_self_attn_q_proj", out: 16, in: 16, r: 2, alpha: 1 },
    { stem: "lora_te_text_model_encoder_layers_0_mlp_fc1", out: 16, in: 16, r: 2, alpha: 1 },
    { stem: "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q", out: 8, in: 8, r: 2, alpha: 1 },
    { stem: "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_k", out: 8, in: 8, r: 2, alpha: 1 },
    { stem: "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_v", out: 8, in: 8, r: 2, alpha: 2 },
  ];
  const ws = await run("warn-sd", sd, "kohya");
  assert.ok(
    ws.some((x) => /q\/k\/v module\(s\).*out_proj/.test(x)),
    JSON.stringify(ws),
  );
  assert.ok(
    ws.some((x) => /alpha 1 .* lora_unet_ attention module\(s\).*attn1_to_v/.test(x)),
    JSON.stringify(ws),
  );
  assert.deepEqual(await run("warn-sd", sd, "diffusers"), []);
  const mlpOnly = await run("warn-mlp", [{ stem: "lora_te_text_model_encoder_layers_0_mlp_fc1", out: 16, in: 16, r: 2 }], "diffusers");
  assert.ok(
    mlpOnly.some((x) => /rejects text_encoder LoRAs without an attention module/.test(x)),
    JSON.stringify(mlpOnly),
  );
});

/** The ΔW a kohya file stores, per dotted path (its lora_module_names): alpha/r·lora_up·lora_down from the tensors as they are on disk. */
async function storedKohyaDeltas(file: string): Promise<Map<string, Dense>> {
  const f = await SafetensorsFile.open(file);
  try {
    const out = new Map<string, Dense>();
    for (const [stem, path] of Object.entries(JSON.parse(f.header.metadata!["lora_module_names"]!) as Record<string, string>)) {
      const up = f.tensor(`${stem}.lora_up.weight`),
        down = f.tensor(`${stem}.lora_down.weight`);
      const [o, r] = up.shape as [number, number];
      const i = down.shape[1]!;
      const alpha = (await f.readFloat64(`${stem}.alpha`))[0]!;
      out.set(path, { out: o, in: i, D: product(await f.readFloat64(up), await f.readFloat64(down), o, r, i, alpha / r) });
    }
    return out;
  } finally {
    await f.close();
  }
}

test("a PEFT fan_in_fan_out (GPT-2 Conv1D) adapter in kohya: lora_up·lora_down is the weight's in×out layout, read back as PEFT's out×in, and back", async () => {
  const rng = new Rng(seed + 5);
  for (const dtype of DTYPES) {
    const dir = join(tmp, `ffo-${dtype}`);
    mkdirSync(dir, { recursive: true });
    const mods = [
      { path: "transformer.h.0.attn.c_attn", inF: 16, outF: 48, r: 4 },
      { path: "transformer.h.0.mlp.c_fc", inF: 16, outF: 64, r: 2 },
    ];
    const specs: TensorSpec[] = [];
    const want = new Map<string, Dense>();
    for (const m of mods) {
      const A = encodeFloats(dtype, rng.normals(m.r * m.inF, 0.3)),
        B = encodeFloats(dtype, rng.normals(m.outF * m.r, 0.3));
      specs.push({ name: `base_model.model.${m.path}.lora_A.weight`, dtype, shape: [m.r, m.inF], data: A });
      specs.push({ name: `base_model.model.${m.path}.lora_B.weight`, dtype, shape: [m.outF, m.r], data: B });
    }
    writeFileSync(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
    writeFileSync(
      join(dir, "adapter_config.json"),
      JSON.stringify({
        peft_type: "LORA",
        r: 4,
        lora_alpha: 8,
        rank_pattern: { "transformer\\.h\\.0\\.mlp\\.c_fc": 2 },
        fan_in_fan_out: true,
        target_modules: ["c_attn", "c_fc"],
      }),
    );
    // PEFT's ΔW in the Conv1D weight layout: (s·B·A)ᵀ, in×out (get_delta_weight with fan_in_fan_out).
    const peft = await deltas(dir, "path");
    for (const [p, d] of peft) {
      const T = new Float64Array(d.D.length);
      for (let i = 0; i < d.out; i++) for (let j = 0; j < d.in; j++) T[j * d.out + i] = d.D[i * d.in + j]!;
      want.set(p, { out: d.in, in: d.out, D: T });
    }
    const k = join(tmp, `ffo-${dtype}.safetensors`);
    assert.equal(lora(["convert", dir, "--to", "kohya", "-o", k]).status, 0);
    assertSameDeltas(await storedKohyaDeltas(k), want, `fan_in_fan_out ${dtype} → kohya, on disk`);
    // lora reads the marked file transposed back (docs/formats.md "fan_in_fan_out"): the PEFT ΔW.
    assertSameDeltas(await deltas(k, "path"), peft, `fan_in_fan_out ${dtype} → kohya, read back`);
    const back = join(tmp, `ffo-${dtype}-back`);
    assert.equal(lora(["convert", k, "--to", "peft", "-o", back]).status, 0);
    assertSameDeltas(await deltas(back, "path"), peft, `fan_in_fan_out ${dtype} → kohya → peft`);
    const cfg = JSON.parse(readFileSync(join(back, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(cfg["fan_in_fan_out"], true);
  }
});

// ---- diffusers' own loader (../shared/tools/diffusers-check) ----

const PY = "/usr/bin/python3";
const checkTool = join(sharedDir, "tools", "diffusers-check", "diffusers_check.py");
const diffusersSrc = process.env["DIFFUSERS_SRC"] ?? "/tmp/diffusers-src/src";
function diffusersCheckUnavailable(): string | false {
  if (!existsSync(checkTool)) return "../shared/tools/diffusers-check not found";
  if (!existsSync(join(diffusersSrc, "diffusers"))) return `no diffusers src/ at ${diffusersSrc} (set DIFFUSERS_SRC)`;
  if (spawnSync(PY, ["-c", "import torch, numpy"], { stdio: "ignore" }).status !== 0) return "Debian python3-torch not installed";
  return false;
}

/** Run diffusers-check on `file`; compare its ΔW per module with `want` (written as F64 tensors for the comparer). */
async function diffusersReads(file: string, model: string, want: Map<string, Dense>, what: string): Promise<void> {
  const npz = `${file}.npz`;
  const r = spawnSync(PY, [checkTool, file, "--model", model, "--json", "--out", npz, "--diffusers-src", diffusersSrc], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  assert.equal(r.status, 0, `${what}: diffusers-check exit ${r.status}:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  const specs: TensorSpec[] = [...want].map(([k, d]) => ({ name: k, dtype: "F64", shape: [d.out, d.in], data: encodeFloats("F64", d.D) }));
  const exp = `${file}.expected.safetensors`;
  writeFileSync(exp, await serializeSafetensors(specs, null));
  const c = spawnSync(PY, [join(repoRoot, "test", "diffusers_compare.py"), npz, exp], { encoding: "utf8", maxBuffer: 64 << 20 });
  assert.equal(c.status, 0, c.stderr);
  const res = JSON.parse(c.stdout) as { only_diffusers: string[]; only_expected: string[]; max_rel: number; worst: string };
  assert.deepEqual(res.only_diffusers, [], `${what}: modules diffusers built that we did not mean`);
  assert.deepEqual(res.only_expected, [], `${what}: modules diffusers did not load`);
  assert.ok(res.max_rel <= 1e-6, `${what}: diffusers' ΔW of ${res.worst} differs by ${res.max_rel}`);
}

test("diffusers reads every SD 1.5, SDXL and Flux file convert --to diffusers and --to kohya writes with the ΔW we meant", {
  skip: diffusersCheckUnavailable(),
}, async () => {
  const rng = new Rng(seed + 6);
  const cases: [string, Entry[], string, DType][] = [
    ["SD 1.5", SD15, "sd15", "F16"],
    ["SDXL sgm", SDXL_SGM, "sdxl", "BF16"],
    ["SDXL diffusers-style", SDXL_DIFFUSERS, "sdxl", "F32"],
    ["Flux", flux(3072, 64, true), "flux", "BF16"],
    ["Flux in-blocks", flux(3072, 64, false), "flux", "F16"],
  ];
  for (const [fam, entries, model, dtype] of cases) {
    const { file, dense } = await writeKohya(`dc-${fam}`, entries, dtype, rng);
    const want = expectedDiffusers(entries, dense);
    const d = join(tmp, `dc-${fam.replace(/\W+/g, "-")}-d.safetensors`);
    const rd = lora(["convert", file, "--to", "diffusers", "-o", d, "--json"]);
    assert.equal(rd.status, 0, rd.stderr);
    await diffusersReads(d, model, want, `${fam} --to diffusers`);
    if (fam === "Flux") continue; // its img_in/time_in/final_layer are what diffusers drops from kohya files (warned)
    const k = join(tmp, `dc-${fam.replace(/\W+/g, "-")}-k.safetensors`);
    const rk = lora(["convert", d, "--to", "kohya", "-o", k, "--json"]);
    assert.equal(rk.status, 0, rk.stderr);
    assert.deepEqual((JSON.parse(rk.stdout) as { warnings: string[] }).warnings, [], `${fam}: no warning expected`);
    await diffusersReads(k, model, want, `${fam} --to kohya`);
  }
});
