// LyCORIS files end to end (docs/formats.md "LyCORIS"): generated files of every type (LoHa ± Tucker,
// LoKr with full / low-rank / Tucker factors, conv included, LoCon Tucker, full diff, plain LoRA
// beside them) in F32/F16/BF16, small and real-shaped, against independent float64 references: the
// dense ΔW formed by LyCORIS's formulas (test/lycoris-files.ts) and its SVD by numpy (JS Jacobi when
// numpy is missing). Tolerances: spectra max|Δσ| ≤ 1e-6·σ₁; exact factors ≤ 1e-10 relative;
// truncations (written F32) within 1e-5·‖ΔW‖ of the Eckart–Young optimum; exact conversions ≤ 1e-6;
// a mixed-family merge equal to the merge of the dense-converted inputs (≤ 1e-6).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import type { DType, TensorSpec } from "../../formats/safetensors/index.js";
import { svd64 } from "../../linalg/js/dense.js";
import { jsBackend } from "../../linalg/js/index.js";
import { Rng } from "../../linalg/random.js";
import { moduleSpectra } from "../../surgery/spectra.js";
import { runCli } from "../cli.js";
import { type LyDense, type LySpec, lycorisFile } from "../lycoris-files.js";
import { hasNumpy } from "../reference.js";

const seed = Number(process.env["LORA_SEED"] ?? Date.now() % 1e9);
const tmp = mkdtempSync(join(tmpdir(), "lora-lycoris-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Singular values of a dense out×in matrix: numpy's SVD (binary through a file), else JS Jacobi. */
function refSvd(D: Float64Array, out: number, inn: number): Float64Array {
  if (!hasNumpy()) return svd64(D, out, inn).S;
  const f = join(tmp, `d-${out}x${inn}.bin`);
  writeFileSync(f, Buffer.from(D.buffer, D.byteOffset, D.byteLength));
  const r = spawnSync(
    "python3",
    [
      "-c",
      `import numpy as np,sys\nd=np.fromfile("${f}",dtype="<f8").reshape(${out},${inn})\nsys.stdout.buffer.write(np.linalg.svd(d,compute_uv=False).astype("<f8").tobytes())`,
    ],
    {
      maxBuffer: 1 << 28,
    },
  );
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return new Float64Array(new Uint8Array(r.stdout).buffer);
}

/** Each module's ΔW (s·B·A, dense) of an adapter file as our loader reads it. */
async function deltas(path: string): Promise<Map<string, LyDense & { rank: number }>> {
  const a = await loadAdapter(path);
  try {
    const out = new Map<string, LyDense & { rank: number }>();
    for (const m of a.modules) {
      const f = await readFactors(a, m, "f64");
      const D = new Float64Array(m.out * m.in);
      for (let i = 0; i < m.out; i++)
        for (let k = 0; k < m.rank; k++) {
          const b = f.B.data[i * m.rank + k]! * m.scale;
          if (b === 0) continue;
          for (let j = 0; j < m.in; j++) D[i * m.in + j]! += b * f.A.data[k * m.in + j]!;
        }
      out.set(m.name, { out: m.out, in: m.in, D, rank: m.rank });
    }
    return out;
  } finally {
    await a.file.close();
  }
}

const frob = (x: Float64Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));
function diffNorm(x: Float64Array, y: Float64Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i]! - y[i]!) ** 2;
  return Math.sqrt(s);
}
const tail = (S: Float64Array, k: number) => Math.sqrt(S.slice(k).reduce((s, v) => s + v * v, 0));

async function cli(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `lora ${args.join(" ")}: ${r.err}`);
  return r.out;
}

/** Every module of a truncated file within 1e-5·‖ΔW‖ of the Eckart–Young optimum at its rank. */
async function checkTruncation(path: string, ref: Map<string, LyDense>, S: Map<string, Float64Array>, what: string): Promise<number[]> {
  const got = await deltas(path);
  const ranks: number[] = [];
  for (const [name, d] of ref) {
    const g = got.get(name);
    const norm = frob(d.D);
    if (!g) {
      ranks.push(0);
      continue;
    }
    ranks.push(g.rank);
    const err = diffNorm(g.D, d.D),
      opt = tail(S.get(name)!, g.rank);
    assert.ok(err - opt <= 1e-5 * norm && err >= opt - 1e-9 * norm, `${what} ${name} rank ${g.rank}: ‖ΔW−ΔW_k‖ ${err} vs optimum ${opt} (‖ΔW‖ ${norm})`);
  }
  return ranks;
}

const SMALL: LySpec[] = [
  { kind: "loha", stem: "lora_unet_down_blocks_0_attn1_to_q", out: 40, in: 30, r1: 4, r2: 3, alpha: 2 },
  { kind: "loha", stem: "lora_unet_down_blocks_0_ff_net_2", out: 12, in: 20, r1: 4, r2: 4, alpha: 8 },
  { kind: "loha", stem: "lora_unet_down_blocks_1_conv1", out: 16, in: 8, r1: 2, r2: 3, alpha: 1, kernel: [3, 3] },
  { kind: "loha", stem: "lora_unet_down_blocks_1_conv2", out: 16, in: 8, r1: 2, r2: 3, alpha: 1, kernel: [3, 3], tucker: true },
  { kind: "lokr", stem: "lora_unet_down_blocks_2_to_k", a: 4, b: 8, c: 6, d: 5, alpha: 3 },
  { kind: "lokr", stem: "lora_unet_down_blocks_2_to_v", a: 4, b: 8, c: 6, d: 5, alpha: 3, w1r: 2, w2r: 2 },
  { kind: "lokr", stem: "lora_unet_down_blocks_2_to_out_0", a: 3, b: 10, c: 4, d: 9, alpha: 0, w2r: 3 },
  { kind: "lokr", stem: "lora_unet_down_blocks_3_conv", a: 4, b: 8, c: 2, d: 4, alpha: 3, w2r: 2, kernel: [3, 3], tucker: true },
  { kind: "lokr", stem: "lora_unet_input_blocks_3_0_op", a: 4, b: 8, c: 2, d: 4, alpha: -1.5, w2r: 2, kernel: [3, 3] },
  { kind: "lokr", stem: "lora_unet_down_blocks_4_conv2", a: 2, b: 6, c: 2, d: 3, kernel: [3, 3] },
  { kind: "locon-tucker", stem: "lora_unet_down_blocks_5_conv1", out: 12, inCh: 6, r: 3, kernel: [3, 3], alpha: 1.5 },
  { kind: "full", stem: "lora_unet_down_blocks_6_proj_in", out: 10, in: 7, bias: true },
  { kind: "full", stem: "lora_unet_down_blocks_6_conv_out", out: 6, in: 4, kernel: [3, 3] },
  { kind: "plain", stem: "lora_unet_down_blocks_7_proj_out", out: 10, in: 7, r: 2, alpha: 1 },
];

for (const dtype of ["F32", "F16", "BF16"] as DType[]) {
  test(`LyCORIS ${dtype} (every type, conv included): spectra, exact factors, truncations, conversions (seed ${seed})`, async () => {
    const rng = new Rng(seed + dtype.length);
    const { bytes, dense } = await lycorisFile(rng, SMALL, dtype);
    const file = join(tmp, `small-${dtype}.safetensors`);
    writeFileSync(file, bytes);
    // Spectra (the family's own for LoKr, the factor route otherwise) against numpy's SVD of the dense ΔW.
    const a = await loadAdapter(file);
    const S = new Map<string, Float64Array>();
    try {
      assert.equal(a.modules.length, SMALL.length);
      for (const [m, sp] of await moduleSpectra(a, jsBackend)) {
        const d = dense.get(m.name)!;
        const ref = refSvd(d.D, d.out, d.in);
        S.set(m.name, ref);
        const s1 = ref[0]!;
        for (let i = 0; i < ref.length; i++) {
          const got = sp.S[i] ?? 0;
          assert.ok(Math.abs(got - ref[i]!) <= 1e-6 * s1, `${m.name} σ${i + 1}: ${got} vs numpy ${ref[i]}`);
        }
        assert.equal(m.family?.dtype ?? m.A.dtype, dtype, `${m.name}: stored dtype`);
      }
    } finally {
      await a.file.close();
    }
    // Exact factors: B·A equals the LyCORIS ΔW in float64.
    for (const [name, g] of await deltas(file)) {
      const d = dense.get(name)!;
      assert.deepEqual([g.out, g.in], [d.out, d.in], name);
      assert.ok(diffNorm(g.D, d.D) <= 1e-10 * frob(d.D), `${name}: exact factors off by ${diffNorm(g.D, d.D) / frob(d.D)}`);
    }
    // Truncations at the optimum: --rank, --energy, --budget; a rank ≥ every module's exact rank is exact.
    for (const [flag, value] of [
      ["--rank", "3"],
      ["--energy", "0.9"],
      ["--budget", "40"],
    ]) {
      const out = join(tmp, `t-${dtype}${flag}.safetensors`);
      await cli(["truncate", file, flag!, value!, "--dtype", "F32", "-o", out, "--force", "-q"]);
      const ranks = await checkTruncation(out, dense, S, `${dtype} ${flag} ${value}`);
      if (flag === "--rank") assert.ok(ranks.every((r) => r <= 3));
    }
    const full = join(tmp, `t-${dtype}-full.safetensors`);
    await cli(["truncate", file, "--rank", "100", "--dtype", "F32", "-o", full, "--force", "-q"]);
    for (const [name, g] of await deltas(full)) {
      const d = dense.get(name)!;
      assert.ok(diffNorm(g.D, d.D) <= 1e-6 * frob(d.D), `${name}: rank ≥ exact rank should be exact, off by ${diffNorm(g.D, d.D) / frob(d.D)}`);
    }
    // Default output dtype: the stored one.
    const dflt = join(tmp, `t-${dtype}-dflt.safetensors`);
    await cli(["truncate", file, "--rank", "2", "-o", dflt, "--force", "-q"]);
    const o = await loadAdapter(dflt);
    try {
      assert.ok(
        o.modules.every((m) => m.A.dtype === dtype && m.B.dtype === dtype),
        "truncate writes the stored dtype by default",
      );
    } finally {
      await o.file.close();
    }
    // Exact conversions to PEFT and to kohya.
    for (const to of ["peft", "kohya"]) {
      const out = join(tmp, `c-${dtype}-${to}${to === "kohya" ? ".safetensors" : ""}`);
      await cli(["convert", file, "--to", to, "-o", out, "--force", "-q"]);
      const got = await deltas(out);
      for (const [name, d] of dense) {
        const g = to === "kohya" ? got.get(name) : [...got.values()].find((x) => x.out === d.out && x.in === d.in && diffNorm(x.D, d.D) <= 1e-6 * frob(d.D));
        assert.ok(g, `${to}: module ${name} missing`);
        assert.ok(diffNorm(g.D, d.D) <= 1e-6 * frob(d.D), `${to} ${name}: off by ${diffNorm(g.D, d.D) / frob(d.D)}`);
      }
    }
  });
}

test(`LyCORIS real-shaped: SDXL LoHa (attention, ff, 3×3 conv) and a Flux LoKr (factor 16, full and low-rank w2) (seed ${seed})`, async () => {
  const rng = new Rng(seed + 7);
  const specs: LySpec[] = [
    { kind: "loha", stem: "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", out: 640, in: 640, r1: 8, r2: 8, alpha: 4 },
    { kind: "loha", stem: "lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_0_proj", out: 5120, in: 640, r1: 4, r2: 4, alpha: 4 },
    { kind: "loha", stem: "lora_unet_input_blocks_1_0_in_layers_2", out: 320, in: 320, r1: 4, r2: 4, alpha: 1, kernel: [3, 3] },
    { kind: "lokr", stem: "lora_unet_double_blocks_0_img_attn_proj", a: 16, b: 192, c: 16, d: 192, alpha: 1 },
    { kind: "lokr", stem: "lora_unet_double_blocks_0_img_mlp_2", a: 16, b: 192, c: 16, d: 768, alpha: 8, w2r: 16 },
  ];
  for (const [dtype, pick] of [
    ["BF16", [0, 1, 2]],
    ["F16", [3, 4]],
  ] as [DType, number[]][]) {
    const { bytes, dense } = await lycorisFile(
      rng,
      pick.map((i) => specs[i]!),
      dtype,
    );
    const file = join(tmp, `real-${dtype}.safetensors`);
    writeFileSync(file, bytes);
    const S = new Map<string, Float64Array>();
    const a = await loadAdapter(file);
    try {
      for (const [m, sp] of await moduleSpectra(a, jsBackend)) {
        const d = dense.get(m.name)!;
        const ref = refSvd(d.D, d.out, d.in);
        S.set(m.name, ref);
        let worst = 0;
        for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs((sp.S[i] ?? 0) - ref[i]!));
        assert.ok(worst <= 1e-6 * ref[0]!, `${m.name}: max |Δσ| ${worst} (σ₁ ${ref[0]})`);
      }
    } finally {
      await a.file.close();
    }
    const out = join(tmp, `real-${dtype}-r16.safetensors`);
    await cli(["truncate", file, "--rank", "16", "--dtype", "F32", "-o", out, "--force", "-q"]);
    await checkTruncation(out, dense, S, `real ${dtype} --rank 16`);
  }
});

test(`merge of a kohya LoRA, a LoHa and a LoKr of one base equals the merge of their dense-converted files (seed ${seed})`, async () => {
  const rng = new Rng(seed + 11);
  const stems = ["lora_unet_down_blocks_0_to_q", "lora_unet_down_blocks_1_to_k"];
  const files: string[] = [];
  const converted: string[] = [];
  const sets: LySpec[][] = [
    stems.map((stem) => ({ kind: "plain", stem, out: 24, in: 20, r: 3, alpha: 2 })),
    stems.map((stem) => ({ kind: "loha", stem, out: 24, in: 20, r1: 2, r2: 3, alpha: 1 })),
    stems.map((stem) => ({ kind: "lokr", stem, a: 4, b: 6, c: 4, d: 5, alpha: 2, w2r: 2 })),
  ];
  for (const [i, set] of sets.entries()) {
    const { bytes } = await lycorisFile(rng, set, "F32");
    const f = join(tmp, `mix-${i}.safetensors`);
    writeFileSync(f, bytes);
    files.push(f);
    const c = join(tmp, `mix-${i}-kohya.safetensors`);
    await cli(["convert", f, "--to", "kohya", "-o", c, "--force", "-q"]);
    converted.push(c);
  }
  for (const method of [
    ["--method", "cat"],
    ["--method", "svd", "--rank", "6"],
    ["--method", "linear"],
  ]) {
    const m1 = join(tmp, `merged-${method[1]}.safetensors`),
      m2 = join(tmp, `merged-${method[1]}-dense.safetensors`);
    await cli(["merge", ...files, ...method, "--to", "kohya", "-o", m1, "--force", "-q"]);
    await cli(["merge", ...converted, ...method, "--to", "kohya", "-o", m2, "--force", "-q"]);
    const [x, y] = [await deltas(m1), await deltas(m2)];
    assert.deepEqual([...x.keys()].sort(), [...y.keys()].sort());
    for (const [name, d] of y) {
      const g = x.get(name)!;
      assert.ok(diffNorm(g.D, d.D) <= 1e-6 * frob(d.D), `merge ${method[1]} ${name}: off by ${diffNorm(g.D, d.D) / frob(d.D)}`);
    }
  }
});

test("(IA)³ and bias-only modules: inspect lists them with the reason, write commands exit 3; LoHa with dora_scale is refused by truncate", async () => {
  const rng = new Rng(seed + 13);
  const { bytes } = await lycorisFile(
    rng,
    [
      { kind: "loha", stem: "lora_unet_a_to_q", out: 8, in: 6, r1: 2, r2: 2 },
      { kind: "ia3", stem: "lora_te_text_model_encoder_layers_0_mlp_fc2", n: 8 },
    ],
    "F32",
  );
  const file = join(tmp, "ia3.safetensors");
  writeFileSync(file, bytes);
  const rep = JSON.parse(await cli(["inspect", file, "--json"])) as {
    base_dependent: { name: string; type: string; reason: string }[];
    modules: { family?: { type: string } }[];
  };
  assert.equal(rep.base_dependent[0]!.type, "ia3");
  assert.match(rep.base_dependent[0]!.reason, /base weight/);
  assert.equal(rep.modules[0]!.family?.type, "loha");
  const table = await runCli(["inspect", file]);
  assert.match(table.out + table.err, /ia3/);
  for (const args of [
    ["truncate", file, "--rank", "2", "-o", join(tmp, "x.safetensors")],
    ["convert", file, "--to", "peft", "-o", join(tmp, "x-peft")],
    ["merge", file, file, "-o", join(tmp, "x-m.safetensors")],
  ]) {
    const r = await runCli(args);
    assert.equal(r.code, 3, `${args[0]}: ${r.err}`);
    assert.match(r.err, /need the base model's weights/);
  }
  // dora_scale beside hada_*: DoRA stays refused where factors change.
  const { bytes: b2 } = await lycorisFile(rng, [{ kind: "loha", stem: "lora_unet_a_to_q", out: 8, in: 6, r1: 2, r2: 2 }], "F32");
  const withDora = Buffer.from(b2);
  const { serializeSafetensors, SafetensorsFile, encodeFloats } = await import("../../formats/safetensors/index.js");
  const f = SafetensorsFile.fromBuffer(withDora, "mem");
  const specs: TensorSpec[] = await Promise.all(
    f.header.tensors.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: Uint8Array.from(await f.readRaw(t)) })),
  );
  specs.push({ name: "lora_unet_a_to_q.dora_scale", dtype: "F32", shape: [8, 1], data: encodeFloats("F32", new Float64Array(8).fill(1)) });
  const dfile = join(tmp, "dora.safetensors");
  writeFileSync(dfile, await serializeSafetensors(specs, { ss_network_module: "lycoris.kohya" }));
  const r = await runCli(["truncate", dfile, "--rank", "2", "-o", join(tmp, "d.safetensors")]);
  assert.equal(r.code, 3, r.err);
  assert.match(r.err, /DoRA/);
  assert.ok(readFileSync(dfile).length > 0);
});
