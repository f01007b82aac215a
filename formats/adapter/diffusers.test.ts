// diffusers LoRA files (issue 8): detection, both layouts and every scale rule, malformed files,
// the writer, conversions, and the real SD 1.5 adapter (the optional real adapter sd15-pokemon beside the checkout:
// 128 attention projections of rank 4, no alpha) against independent float64 references.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { diffusersFixtures, diffusersFixturesDir, main as makeFixtures, processorKey, sd15AttentionModules } from "../../fixtures/make-diffusers-fixtures.js";
import { jsBackend } from "../../linalg/js/index.js";
import { concatTerms, lowRankSingularValues, lowRankSvd, relativeError, splitFactors, type LowRankTerm } from "../../linalg/lowrank.js";
import { Rng } from "../../linalg/random.js";
import { runConvert } from "../../commands/convert/run.js";
import { runInspect } from "../../commands/inspect/run.js";
import { fixturesDir, realDir } from "../../test/paths.js";
import { InvalidInputError } from "../../common/errors.js";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../safetensors/index.js";
import { loadAdapter, readFactors, type Adapter, type LoraModule } from "./index.js";
import { diffusersPathFromKohya, hasTextEncoder2, kohyaStemFor, kohyaStemInSet, matchKeyFor } from "./names.js";
import { pathOfKohyaStem } from "./name-map.js";
import { hasDiffusersKeys, splitAdapterMetadata } from "./parse-diffusers.js";
import { diffusersAdapterMetadata, diffusersKeyBase } from "./write-diffusers.js";
import { writeAdapter, type AdapterOutput, type OutModule } from "./write.js";

const REAL = join(realDir, "sd15-pokemon", "pytorch_lora_weights.safetensors");
const haveReal = existsSync(REAL);
const skipReal = haveReal ? false : `real adapter not found at ${REAL}`;
const fx = (name: string) => join(diffusersFixturesDir, name);

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "lora-diffusers-"));
}

async function withAdapter<T>(path: string, f: (a: Adapter) => Promise<T>): Promise<T> {
  const a = await loadAdapter(path);
  try {
    return await f(a);
  } finally {
    await a.file.close();
  }
}

function byName(a: Adapter): Map<string, LoraModule> {
  return new Map(a.modules.map((m) => [m.name, m]));
}

async function rejects(path: string, ...needles: string[]): Promise<void> {
  await assert.rejects(loadAdapter(path), (e: unknown) => {
    assert.ok(e instanceof InvalidInputError, `expected InvalidInputError, got ${String(e)}`);
    assert.equal(e.exitCode, 3);
    for (const n of needles) assert.ok(e.message.includes(n), `message should name ${n}: ${e.message}`);
    return true;
  });
}

// ---- independent float64 references ----------------------------------------------------------

/** Dense s·B·A (out×in) in float64, plain triple loop. */
function denseDW(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inn: number, s: number): Float64Array {
  const d = new Float64Array(out * inn);
  for (let i = 0; i < out; i++)
    for (let p = 0; p < r; p++) {
      const b = s * B[i * r + p]!;
      if (b === 0) continue;
      for (let j = 0; j < inn; j++) d[i * inn + j] += b * A[p * inn + j]!;
    }
  return d;
}

/**
 * Eigenvalues of a small symmetric positive definite matrix by the unshifted QR algorithm
 * (A ← R·Q with A = Q·R by Gram–Schmidt; A tends to diagonal), descending. Not Jacobi: the library's
 * js backend rotates, so the reference does not.
 */
function qrEigenvalues(g: Float64Array, n: number): number[] {
  let a = Float64Array.from(g);
  const at = (m: Float64Array, i: number, j: number) => m[i * n + j]!;
  for (let it = 0; it < 200_000; it++) {
    const Q = new Float64Array(n * n),
      R = new Float64Array(n * n);
    for (let j = 0; j < n; j++) {
      const v = Float64Array.from({ length: n }, (_, i) => at(a, i, j));
      for (let p = 0; p < j; p++) {
        let d = 0;
        for (let i = 0; i < n; i++) d += at(Q, i, p) * v[i]!;
        R[p * n + j] = d;
        for (let i = 0; i < n; i++) v[i] -= d * at(Q, i, p);
      }
      const norm = Math.hypot(...v);
      R[j * n + j] = norm;
      for (let i = 0; i < n; i++) Q[i * n + j] = norm > 0 ? v[i]! / norm : 0;
    }
    const next = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = i; k < n; k++) next[i * n + j] += at(R, i, k) * at(Q, k, j);
    a = next;
    let off = 0,
      diag = 0;
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        if (i === j) diag += at(a, i, j) ** 2;
        else off += at(a, i, j) ** 2;
      }
    if (off <= 1e-26 * diag) break;
  }
  return Array.from({ length: n }, (_, i) => at(a, i, i)).sort((x, y) => y - x);
}

/**
 * Singular values of a dense out×in matrix of rank ≤ k without the library: Y = M·X for a random
 * in×k X spans the range of M; Q = Gram–Schmidt(Y) (twice); the σ² are the eigenvalues of
 * (QᵀM)(QᵀM)ᵀ (k×k, QR algorithm).
 */
function referenceSigma(M: Float64Array, out: number, inn: number, k: number, rng: Rng): number[] {
  const X = rng.normals(inn * k, 1);
  const Y = new Float64Array(out * k);
  for (let i = 0; i < out; i++)
    for (let j = 0; j < inn; j++) {
      const m = M[i * inn + j]!;
      if (m === 0) continue;
      for (let c = 0; c < k; c++) Y[i * k + c] += m * X[j * k + c]!;
    }
  const cols: Float64Array[] = [];
  let top = 0;
  for (let c = 0; c < k; c++) {
    const v = Float64Array.from({ length: out }, (_, i) => Y[i * k + c]!);
    const n0 = Math.hypot(...v);
    top = Math.max(top, n0);
    for (let pass = 0; pass < 2; pass++)
      for (const q of cols) {
        let d = 0;
        for (let i = 0; i < out; i++) d += q[i]! * v[i]!;
        for (let i = 0; i < out; i++) v[i] -= d * q[i]!;
      }
    const n = Math.hypot(...v);
    if (n > 1e-10 * top) cols.push(v.map((x) => x / n));
  }
  const q = cols.length;
  const C = new Float64Array(q * inn);
  for (let c = 0; c < q; c++)
    for (let i = 0; i < out; i++) {
      const qi = cols[c]![i]!;
      if (qi === 0) continue;
      for (let j = 0; j < inn; j++) C[c * inn + j] += qi * M[i * inn + j]!;
    }
  const G = new Float64Array(q * q);
  for (let a = 0; a < q; a++)
    for (let b = 0; b < q; b++) {
      let s = 0;
      for (let j = 0; j < inn; j++) s += C[a * inn + j]! * C[b * inn + j]!;
      G[a * q + b] = s;
    }
  return qrEigenvalues(G, q).map((x) => Math.sqrt(Math.max(x, 0)));
}

/**
 * numpy (LAPACK) σ of up@down for every module of an attention-processor file, or null without
 * python3/numpy: from QR of both factors for every module, and from the SVD of the dense ΔW for
 * the smaller ones (a dense SVD of every 1280×1280 ΔW takes about a minute); both must agree.
 */
function numpySigma(path: string): Map<string, number[]> | null {
  const script = `
import json, struct, sys
import numpy as np
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
def read(k):
    e = h[k]; f.seek(base + e["data_offsets"][0])
    return np.frombuffer(f.read(e["data_offsets"][1] - e["data_offsets"][0]), dtype="<f4").astype(np.float64).reshape(e["shape"])
out = {}
for k in h:
    if k.endswith(".down.weight"):
        blk, proj = k[: -len("_lora.down.weight")].split(".processor.")
        name = blk + "." + ("to_out.0" if proj == "to_out" else proj)
        B = read(k.replace(".down.", ".up.")); A = read(k)
        rb = np.linalg.qr(B)[1]; ra = np.linalg.qr(A.T)[1]
        s = np.linalg.svd(rb @ ra.T, compute_uv=False)
        if B.shape[0] * A.shape[1] <= 320 * 768:
            d = np.linalg.svd(B @ A, compute_uv=False)[: len(s)]
            assert np.allclose(s, d, rtol=0, atol=1e-10 * s[0]), (name, s, d)
        out[name] = s.tolist()
print(json.dumps(out))
`;
  const env = { ...process.env, OMP_NUM_THREADS: "1", OPENBLAS_NUM_THREADS: "1", MKL_NUM_THREADS: "1" };
  if (spawnSync("python3", ["-c", "import numpy"], { env }).status !== 0) return null;
  const r = spawnSync("python3", ["-c", script, path], { encoding: "utf8", maxBuffer: 1 << 26, env, timeout: 120_000 });
  assert.equal(r.status, 0, `numpy reference failed: ${r.stderr}`);
  return new Map(Object.entries(JSON.parse(r.stdout) as Record<string, number[]>));
}

const closeSigma = (got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) => {
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `${what} σ${i + 1}: ${got[i]} vs ${want[i]} (tolerance ${tol})`);
  }
};

// ---- detection ---------------------------------------------------------------------------------

test("detection: claims both diffusers layouts and leaves PEFT and kohya files alone", async () => {
  const ctx = (metadata: Record<string, string> = {}, config: Record<string, unknown> | null = null) => ({ metadata, config });
  assert.ok(hasDiffusersKeys(["a.processor.to_k_lora.down.weight"], ctx()));
  assert.ok(hasDiffusersKeys(["text_encoder.x.q_proj.lora_linear_layer.up.weight"], ctx()));
  assert.ok(hasDiffusersKeys(["unet.a.to_k.lora_A.weight", "unet.a.to_k.lora_B.weight"], ctx()));
  assert.ok(hasDiffusersKeys(["transformer.b.attn.to_q.lora_A.weight"], ctx()));
  assert.ok(hasDiffusersKeys(["down_blocks.0.to_k.lora_A.weight"], ctx({ lora_adapter_metadata: "{}" })));
  assert.ok(!hasDiffusersKeys(["unet.a.to_k.lora_A.weight"], ctx({}, { peft_type: "LORA" })), "an adapter_config makes it PEFT");
  assert.ok(!hasDiffusersKeys(["base_model.model.unet.a.lora_A.weight"], ctx()));
  assert.ok(!hasDiffusersKeys(["model.layers.0.q_proj.lora_A.weight"], ctx()));
  assert.ok(!hasDiffusersKeys(["lora_unet_a_to_k.lora_down.weight", "lora_unet_a_to_k.alpha"], ctx()));
  for (const [p, want] of [
    ["example", "peft"],
    ["kohya-sd.safetensors", "kohya"],
    ["peft-f16-embed-conv", "peft"],
    ["peft-bf16.safetensors", "peft"],
  ] as const) {
    if (!existsSync(join(fixturesDir, p))) continue;
    assert.equal(await withAdapter(join(fixturesDir, p), async (a) => a.format), want, p);
  }
});

test("metadata: lora_adapter_metadata splits into one LoraConfig per component", () => {
  const m = splitAdapterMetadata(JSON.stringify({ "unet.r": 4, "unet.rank_pattern": { "a.b": 2 }, "text_encoder_2.lora_alpha": 8, r: 16 }), "x");
  assert.deepEqual(m.get("unet"), { r: 4, rank_pattern: { "a.b": 2 } });
  assert.deepEqual(m.get("text_encoder_2"), { lora_alpha: 8 });
  assert.deepEqual(m.get(""), { r: 16 });
  assert.throws(() => splitAdapterMetadata("{", "x"), InvalidInputError);
  assert.throws(() => splitAdapterMetadata(JSON.stringify({ "unet.peft_type": "LOHA" }), "x"), /LOHA/);
});

// ---- the synthetic fixtures ----------------------------------------------------------------------

test("fixtures: regenerating fixtures/diffusers gives identical bytes", async () => {
  const dir = tmp();
  try {
    const files = await makeFixtures(dir);
    assert.equal(files.length, diffusersFixtures().length);
    for (const f of files) {
      const name = f.slice(dir.length + 1);
      assert.ok(readFileSync(f).equals(readFileSync(fx(name))), `${name} differs from the committed file (run node dist/fixtures/make-diffusers-fixtures.js)`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("attention-processor keys with network alphas: alpha/rank where stored, 1 elsewhere", async () => {
  await withAdapter(fx("attn-processor-alphas.safetensors"), async (a) => {
    assert.equal(a.format, "diffusers");
    const b = "mid_block.attentions.0.transformer_blocks.0.attn2";
    const m = byName(a);
    assert.deepEqual([...m.keys()].sort(), [`${b}.to_k`, `${b}.to_out.0`, `${b}.to_q`, `${b}.to_v`]);
    const s = (n: string) => [m.get(`${b}.${n}`)!.alpha, m.get(`${b}.${n}`)!.scale];
    assert.deepEqual(s("to_k"), [2, 0.5]);
    assert.deepEqual(s("to_out.0"), [8, 2]);
    assert.deepEqual(s("to_q"), [4, 1]);
    assert.deepEqual(s("to_v"), [4, 1]);
    assert.equal(m.get(`${b}.to_k`)!.path, `unet.${b}.to_k`);
    assert.equal(m.get(`${b}.to_k`)!.matchKey, `unet_${b.replace(/\./g, "_")}_to_k`);
    assert.equal(m.get(`${b}.to_k`)!.out, 32);
    assert.equal(m.get(`${b}.to_k`)!.in, 16);
    assert.deepEqual(a.passthrough, []);
    assert.match(a.configSource, /network alphas/);
    assert.match(a.configSource, /scale 1/);
  });
});

test("text-encoder attention-processor keys: lora_linear_layer → <…>.q_proj, scale 1", async () => {
  await withAdapter(fx("text-encoder-attn-processor.safetensors"), async (a) => {
    assert.equal(a.format, "diffusers");
    assert.equal(a.modules.length, 8);
    const m = a.modules.find((x) => x.name === "text_encoder.text_model.encoder.layers.1.self_attn.out_proj")!;
    assert.ok(m, a.modules.map((x) => x.name).join(", "));
    assert.equal(m.path, m.name);
    assert.equal(m.matchKey, "te_text_model_encoder_layers_1_self_attn_out_proj");
    assert.equal(m.A.name, "text_encoder.text_model.encoder.layers.1.self_attn.out_proj.lora_linear_layer.down.weight");
    assert.equal(m.B.name, "text_encoder.text_model.encoder.layers.1.self_attn.out_proj.lora_linear_layer.up.weight");
    assert.ok(a.modules.every((x) => x.scale === 1 && x.alpha === 4 && x.rank === 4));
    assert.match(a.configSource, /no network alpha: scale 1/);
  });
});

test("PEFT-style keys with lora_adapter_metadata: per-component r, lora_alpha and patterns", async () => {
  await withAdapter(fx("peft-style-metadata.safetensors"), async (a) => {
    assert.equal(a.format, "diffusers");
    assert.equal(a.configSource, "__metadata__.lora_adapter_metadata");
    assert.equal(a.config, null, "two components: no single config");
    const u = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1",
      t = "text_encoder.text_model.encoder.layers.0.self_attn";
    const m = byName(a);
    const rs = (n: string) => {
      const x = m.get(n)!;
      return [x.rank, x.alpha, x.scale];
    };
    assert.deepEqual(rs(`${u}.to_q`), [4, 8, 2]);
    assert.deepEqual(rs(`${u}.to_k`), [2, 8, 4]); // rank_pattern to_k: 2
    assert.deepEqual(rs(`${u}.to_v`), [4, 2, 0.5]); // alpha_pattern attn1.to_v: 2
    assert.deepEqual(rs(`${u}.to_out.0`), [4, 8, 2]);
    assert.deepEqual(rs(`${t}.q_proj`), [4, 4, 1]);
    assert.deepEqual(rs(`${t}.out_proj`), [4, 16, 4]);
  });
});

test("PEFT-style keys without a config: alpha = rank, network alphas where stored, passthrough kept", async () => {
  await withAdapter(fx("peft-style-no-config.safetensors"), async (a) => {
    assert.equal(a.format, "diffusers");
    const m = byName(a);
    assert.equal(m.size, 4);
    assert.deepEqual([m.get("unet.down_blocks.1.attentions.0.proj_in")!.alpha, m.get("unet.down_blocks.1.attentions.0.proj_in")!.scale], [2, 0.25]);
    for (const n of [
      "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
      "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
      "text_encoder_2.text_model.encoder.layers.0.mlp.fc1",
    ]) {
      assert.equal(m.get(n)!.scale, 1, n);
      assert.equal(m.get(n)!.alpha, m.get(n)!.rank, n);
    }
    assert.deepEqual(
      a.passthrough.map((p) => p.name),
      ["unet.conv_in.weight_delta"],
    );
    assert.match(a.configSource, /alpha = rank \(diffusers' default/);
  });
});

test("old-layout relatives: CLIP to_q_lora (no .processor.) → q_proj, and <module>.lora.down.weight", async () => {
  const dir = tmp();
  try {
    const rng = new Rng(9);
    const t = (name: string, shape: number[]): TensorSpec => ({
      name,
      dtype: "F32",
      shape,
      data: encodeFloats(
        "F32",
        rng.normals(
          shape.reduce((x, y) => x * y, 1),
          0.1,
        ),
      ),
    });
    const specs = [
      t("text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight", [2, 8]),
      t("text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight", [8, 2]),
      t("text_encoder.text_model.encoder.layers.0.self_attn.to_out_lora.down.weight", [2, 8]),
      t("text_encoder.text_model.encoder.layers.0.self_attn.to_out_lora.up.weight", [8, 2]),
      t("unet.mid_block.attentions.0.proj_in.lora.down.weight", [2, 8]),
      t("unet.mid_block.attentions.0.proj_in.lora.up.weight", [8, 2]),
      { name: "unet.mid_block.attentions.0.proj_in.alpha", dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(1)) },
    ] satisfies TensorSpec[];
    const p = join(dir, "old.safetensors");
    writeFileSync(p, await serializeSafetensors(specs, { format: "pt" }));
    await withAdapter(p, async (a) => {
      assert.deepEqual(
        a.modules.map((m) => m.name),
        [
          "text_encoder.text_model.encoder.layers.0.self_attn.out_proj",
          "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
          "unet.mid_block.attentions.0.proj_in",
        ],
      );
      assert.equal(a.modules[2]!.scale, 0.5);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("malformed and half-converted files are refused (exit 3) naming the key", async () => {
  const b = "down_blocks.0.attentions.0.transformer_blocks.0.attn1";
  await rejects(fx("bad-up-without-down.safetensors"), `${b}.processor.to_k_lora.up.weight`, `${b}.processor.to_k_lora.down.weight`);
  await rejects(fx("bad-rank-mismatch.safetensors"), `${b}.processor.to_v_lora.down.weight`, `${b}.processor.to_v_lora.up.weight`, "ranks differ");
  await rejects(fx("bad-half-converted.safetensors"), "half-converted", `${b}.processor.to_k_lora.up.weight`, `unet.${b}.to_k.lora_A.weight`);
  await rejects(fx("bad-duplicate-module.safetensors"), "stored twice", `${b}.processor.to_q_lora.down.weight`, `unet.${b}.to_q.lora_A.weight`);
  await rejects(fx("bad-metadata-rank.safetensors"), "rank 8", `unet.${b}.to_q.lora_A.weight`);
});

// ---- names and the writer ----------------------------------------------------------------------

test("names: kohya stems as kohya/ComfyUI spell them, and back to diffusers paths", () => {
  const p = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0";
  assert.equal(kohyaStemFor(p), "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0");
  assert.equal(kohyaStemFor("text_encoder.text_model.encoder.layers.3.self_attn.q_proj"), "lora_te_text_model_encoder_layers_3_self_attn_q_proj");
  assert.equal(kohyaStemInSet("text_encoder.text_model.encoder.layers.3.self_attn.q_proj", true), "lora_te1_text_model_encoder_layers_3_self_attn_q_proj");
  assert.equal(kohyaStemInSet("text_encoder_2.text_model.encoder.layers.3.mlp.fc2", true), "lora_te2_text_model_encoder_layers_3_mlp_fc2");
  assert.equal(kohyaStemInSet(p, true), kohyaStemFor(p));
  assert.ok(hasTextEncoder2(["unet.a", "text_encoder_2.b"]) && !hasTextEncoder2(["unet.a", "text_encoder.b"]));
  for (const q of [
    p,
    "unet.down_blocks.0.resnets.0.conv1",
    "unet.mid_block.attentions.0.proj_in",
    "unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj",
    "unet.down_blocks.1.resnets.0.time_emb_proj",
    "unet.down_blocks.1.resnets.0.conv_shortcut",
    "text_encoder.text_model.encoder.layers.11.mlp.fc1",
    "text_encoder.text_model.encoder.layers.0.self_attn.out_proj",
    "unet.up_blocks.0.upsamplers.0.conv",
  ]) {
    assert.equal(diffusersPathFromKohya(kohyaStemFor(q)), q, q);
    assert.equal(diffusersPathFromKohya(matchKeyFor(q)), q, q);
  }
  assert.equal(diffusersPathFromKohya("lora_te1_text_model_encoder_layers_0_self_attn_k_proj"), "text_encoder.text_model.encoder.layers.0.self_attn.k_proj");
  assert.equal(diffusersPathFromKohya("lora_te2_text_model_encoder_layers_0_self_attn_k_proj"), "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj");
  assert.equal(diffusersPathFromKohya("model_layers_0_q_proj"), undefined);
  assert.equal(diffusersKeyBase("unet.a.to_k"), "unet.a.to_k");
  assert.equal(diffusersKeyBase("down_blocks.0.attentions.0.proj_in"), "unet.down_blocks.0.attentions.0.proj_in");
  // A kohya stem is mapped when read (name-map.ts), so the writer never sees an undotted UNet path.
  assert.equal(pathOfKohyaStem("lora_unet_mid_block_attentions_0_proj_out", "sd"), "unet.mid_block.attentions.0.proj_out");
  assert.equal(diffusersKeyBase("model.layers.0.self_attn.q_proj"), "model.layers.0.self_attn.q_proj");
});

test("writer: lora_adapter_metadata holds one LoraConfig per component with exact patterns", () => {
  const mod = (path: string, rank: number, alpha: number): OutModule => ({ path, kind: "linear", rank, alpha, out: 8, in: 8, dtype: "F32" });
  const out: AdapterOutput = {
    format: "diffusers",
    passthrough: [],
    baseConfig: null,
    metadata: {},
    modules: [
      mod("unet.a.to_q", 4, 4),
      mod("unet.a.to_k", 4, 4),
      mod("unet.b.to_q", 2, 8),
      mod("text_encoder.x.q_proj", 8, 8),
      mod("down_blocks.0.c.to_v", 4, 4),
    ],
  };
  const meta = diffusersAdapterMetadata(out);
  assert.equal(meta["unet.r"], 4);
  assert.equal(meta["unet.lora_alpha"], 4);
  assert.deepEqual(meta["unet.rank_pattern"], { "b\\.to_q": 2 });
  assert.deepEqual(meta["unet.alpha_pattern"], { "b\\.to_q": 8 });
  assert.deepEqual(meta["unet.target_modules"], ["a.to_k", "a.to_q", "b.to_q", "down_blocks.0.c.to_v"]);
  assert.equal(meta["text_encoder.r"], 8);
  assert.equal(meta["text_encoder.lora_alpha"], 8);
  assert.equal(meta["unet.use_rslora"], undefined);
  assert.equal(diffusersAdapterMetadata({ ...out, baseConfig: { use_rslora: true } })["text_encoder.use_rslora"], true);
  assert.ok(
    Object.keys(meta).every((k) => k.startsWith("unet.") || k.startsWith("text_encoder.")),
    Object.keys(meta).join(","),
  );
});

test("convert diffusers → diffusers keeps every module's rank and scale (metadata written, old layout re-keyed)", async () => {
  const dir = tmp();
  try {
    for (const name of [
      "peft-style-metadata.safetensors",
      "attn-processor-alphas.safetensors",
      "peft-style-no-config.safetensors",
      "text-encoder-attn-processor.safetensors",
    ]) {
      const o = join(dir, name);
      await runConvert({ input: fx(name), output: o, to: "diffusers", force: false }, {});
      await withAdapter(fx(name), (a) =>
        withAdapter(o, async (b) => {
          assert.equal(b.format, "diffusers");
          assert.equal(b.configSource, "__metadata__.lora_adapter_metadata", name);
          assert.deepEqual(
            b.passthrough.map((p) => p.name),
            a.passthrough.map((p) => p.name),
          );
          const bm = new Map(b.modules.map((m) => [m.matchKey, m]));
          assert.equal(bm.size, a.modules.length);
          for (const m of a.modules) {
            const n = bm.get(m.matchKey)!;
            assert.ok(n, `${name}: ${m.name} missing`);
            assert.equal(n.name, m.path, "PEFT-style keys carry the component");
            assert.equal(n.rank, m.rank);
            assert.ok(Math.abs(n.scale - m.scale) <= 1e-15 * m.scale, `${name} ${m.name}: scale ${n.scale} vs ${m.scale}`);
            assert.deepEqual(await readFactors(b, n, "f32"), await readFactors(a, m, "f32"));
          }
          assert.equal(b.file.header.metadata?.["format"], "pt");
        }),
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("model-level save_lora_adapter files: unprefixed keys and metadata, component from the module root", async () => {
  const dir = tmp();
  try {
    const rng = new Rng(12);
    const t = (name: string, shape: number[]): TensorSpec => ({
      name,
      dtype: "F32",
      shape,
      data: encodeFloats("F32", rng.normals(shape[0]! * shape[1]!, 0.1)),
    });
    const src = join(dir, "pytorch_lora_weights.safetensors");
    writeFileSync(
      src,
      await serializeSafetensors(
        [
          t("transformer_blocks.0.attn.to_q.lora_A.weight", [4, 8]),
          t("transformer_blocks.0.attn.to_q.lora_B.weight", [8, 4]),
          t("transformer_blocks.0.attn.to_k.lora_A.weight", [2, 8]),
          t("transformer_blocks.0.attn.to_k.lora_B.weight", [8, 2]),
        ],
        { format: "pt", lora_adapter_metadata: JSON.stringify({ r: 4, lora_alpha: 4, rank_pattern: { to_k: 2 }, target_modules: ["to_q", "to_k"] }) },
      ),
    );
    await withAdapter(dir, async (a) => {
      assert.equal(a.format, "diffusers");
      const m = byName(a);
      assert.equal(m.get("transformer_blocks.0.attn.to_q")!.path, "transformer.transformer_blocks.0.attn.to_q");
      assert.equal(m.get("transformer_blocks.0.attn.to_q")!.scale, 1);
      assert.equal(m.get("transformer_blocks.0.attn.to_k")!.scale, 2);
      assert.deepEqual(a.config?.["rank_pattern"], { to_k: 2 });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("rsLoRA in lora_adapter_metadata: scale alpha/√r read; diffusers and PEFT output keep use_rslora (alpha as for PEFT)", async () => {
  const dir = tmp();
  try {
    const rng = new Rng(11);
    const b = "unet.mid_block.attentions.0.transformer_blocks.0.attn1";
    const t = (name: string, shape: number[]): TensorSpec => ({
      name,
      dtype: "F32",
      shape,
      data: encodeFloats("F32", rng.normals(shape[0]! * shape[1]!, 0.1)),
    });
    const src = join(dir, "rs.safetensors");
    writeFileSync(
      src,
      await serializeSafetensors([t(`${b}.to_q.lora_A.weight`, [4, 8]), t(`${b}.to_q.lora_B.weight`, [8, 4])], {
        format: "pt",
        lora_adapter_metadata: JSON.stringify({ "unet.r": 4, "unet.lora_alpha": 8, "unet.use_rslora": true, "unet.target_modules": ["to_q"] }),
      }),
    );
    await withAdapter(src, async (a) => {
      assert.equal(a.modules[0]!.scale, 4);
      assert.equal(a.modules[0]!.rslora, true);
      assert.equal(a.config?.["use_rslora"], true);
    });
    await runConvert({ input: src, output: join(dir, "d.safetensors"), to: "diffusers", force: false }, {});
    await withAdapter(join(dir, "d.safetensors"), async (d) => {
      assert.deepEqual([d.modules[0]!.alpha, d.modules[0]!.scale, d.modules[0]!.rslora], [8, 4, true]);
      const meta = JSON.parse(d.file.header.metadata!["lora_adapter_metadata"]!) as Record<string, unknown>;
      assert.equal(meta["unet.use_rslora"], true);
      assert.equal(meta["unet.lora_alpha"], 8);
    });
    await runConvert({ input: src, output: join(dir, "p"), to: "peft", force: false }, {});
    await withAdapter(join(dir, "p"), async (p) => {
      assert.deepEqual([p.modules[0]!.alpha, p.modules[0]!.scale, p.modules[0]!.rslora], [8, 4, true]);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("convert: SDXL-like text encoders become lora_te1_/lora_te2_ in kohya, and come back", async () => {
  const dir = tmp();
  try {
    await runConvert({ input: fx("peft-style-no-config.safetensors"), output: join(dir, "k.safetensors"), to: "kohya", force: false }, {});
    await withAdapter(join(dir, "k.safetensors"), async (k) => {
      const names = k.modules.map((m) => m.name).sort();
      assert.deepEqual(names, [
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_0_mlp_fc1",
        "lora_unet_down_blocks_1_attentions_0_proj_in",
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
      ]);
      assert.equal(byName(k).get("lora_unet_down_blocks_1_attentions_0_proj_in")!.scale, 0.25);
    });
    await runConvert({ input: join(dir, "k.safetensors"), output: join(dir, "d.safetensors"), to: "diffusers", force: false }, {});
    await withAdapter(join(dir, "d.safetensors"), async (d) => {
      assert.deepEqual(d.modules.map((m) => m.name).sort(), [
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc1",
        "unet.down_blocks.1.attentions.0.proj_in",
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
      ]);
      assert.equal(byName(d).get("unet.down_blocks.1.attentions.0.proj_in")!.scale, 0.25);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("convert: a kohya file named by kohya itself (no name map) becomes dotted diffusers keys, ΔW kept", async (t) => {
  const src = join(fixturesDir, "kohya-sd.safetensors");
  if (!existsSync(src)) {
    t.skip("fixtures/kohya-sd.safetensors missing");
    return;
  }
  const dir = tmp();
  try {
    await runConvert({ input: src, output: join(dir, "d.safetensors"), to: "diffusers", force: false }, {});
    await withAdapter(src, (k) =>
      withAdapter(join(dir, "d.safetensors"), async (d) => {
        assert.equal(d.format, "diffusers");
        assert.deepEqual(d.modules.map((m) => m.name).sort(), [
          "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
          "unet.down_blocks.0.attentions.0.proj_in",
          "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
          "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
          "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
          "unet.down_blocks.0.resnets.0.conv1",
        ]);
        const dm = new Map(d.modules.map((m) => [m.matchKey, m]));
        for (const m of k.modules) {
          const n = dm.get(m.matchKey)!;
          assert.ok(n, m.name);
          assert.equal(n.kind, m.kind);
          assert.equal(n.A.shape.join("x"), m.A.shape.join("x"));
          assert.ok(Math.abs(n.scale - m.scale) <= 1e-12 * m.scale, `${m.name}: ${n.scale} vs ${m.scale}`);
        }
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- the real SD 1.5 adapter -------------------------------------------------------------------

test("real sd15-pokemon: 128 attention modules of rank 4, scale 1, the SD 1.5 shapes", { skip: skipReal }, async () => {
  await withAdapter(REAL, async (a) => {
    assert.equal(a.format, "diffusers");
    assert.equal(a.modules.length, 128);
    assert.ok(a.modules.every((m) => m.rank === 4 && m.alpha === 4 && m.scale === 1 && m.kind === "linear" && m.A.dtype === "F32"));
    assert.deepEqual(a.passthrough, []);
    assert.match(a.configSource, /no network alpha: scale 1/);
    const want = new Map(sd15AttentionModules().map((m) => [m.path, m]));
    for (const m of a.modules) {
      const w = want.get(m.name);
      assert.ok(w, `unexpected module ${m.name}`);
      assert.deepEqual([m.out, m.in], [w.out, w.in], m.name);
      assert.equal(m.path, `unet.${m.name}`);
      assert.equal(m.A.name, processorKey(m.name, "down"));
      assert.equal(m.B.name, processorKey(m.name, "up"));
      assert.equal("lora_" + m.matchKey, kohyaStemFor(m.path));
    }
    assert.equal(want.size, 128);
  });
});

test("real sd15-pokemon: singular values (inspect) match independent float64 computations", { skip: skipReal }, async () => {
  const rep = await runInspect({ input: REAL, score: "energy", minRank: 0, rho: 2 }, { backend: jsBackend });
  assert.equal(rep.format, "diffusers");
  assert.equal(rep.modules.length, 128);
  assert.equal(rep.totals.rank, 512);
  const np = numpySigma(REAL);
  console.log(np ? "diffusers.test: numpy reference available" : "diffusers.test: python3/numpy unavailable; dense + QR-algorithm reference only");
  const rng = new Rng(2024);
  await withAdapter(REAL, async (a) => {
    const mods = byName(a);
    for (const r of rep.modules) {
      const m = mods.get(r.name)!;
      const f = await readFactors(a, m, "f64");
      const ref = referenceSigma(denseDW(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale), m.out, m.in, 8, rng);
      const tol = 1e-9 * ref[0]! + 1e-12;
      assert.equal(r.singular_values.length, 4);
      closeSigma(r.singular_values, ref.slice(0, 4), tol, `${r.name} (dense+QR algorithm)`);
      for (let i = 4; i < ref.length; i++) assert.ok(ref[i]! <= 1e-9 * ref[0]!, `${r.name}: rank > 4 in the reference`);
      if (np) closeSigma(r.singular_values, np.get(r.name)!, tol, `${r.name} (numpy)`);
      const norm = Math.hypot(...ref.slice(0, 4));
      assert.ok(Math.abs(r.norm - norm) <= 1e-9 * norm, `${r.name}: norm ${r.norm} vs ${norm}`);
    }
  });
});

test("real sd15-pokemon: diffusers → PEFT → kohya → diffusers keeps every ΔW (within float32 rounding)", { skip: skipReal }, async () => {
  const dir = tmp();
  try {
    const peft = join(dir, "peft"),
      kohya = join(dir, "k.safetensors"),
      back = join(dir, "pytorch_lora_weights.safetensors");
    await runConvert({ input: REAL, output: peft, to: "peft", force: false }, {});
    await runConvert({ input: peft, output: kohya, to: "kohya", force: false }, {});
    await runConvert({ input: kohya, output: back, to: "diffusers", force: false }, {});
    const cfg = JSON.parse(readFileSync(join(peft, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(cfg["r"], 4);
    assert.equal(cfg["lora_alpha"], 4);
    await withAdapter(REAL, (src) =>
      withAdapter(peft, (p) =>
        withAdapter(kohya, (k) =>
          withAdapter(back, async (d) => {
            assert.deepEqual([p.format, k.format, d.format], ["peft", "kohya", "diffusers"]);
            const stems = new Set(k.modules.map((m) => m.name));
            assert.ok(stems.has("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"));
            assert.ok(stems.has("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"));
            assert.ok(stems.has("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v"));
            assert.ok(k.file.has("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.alpha"));
            const maps = [p, k, d].map((x) => new Map(x.modules.map((m) => [m.matchKey, m])));
            let worst = 0;
            for (const m of src.modules) {
              const f0 = await readFactors(src, m, "f64");
              const dw0 = denseDW(f0.B.data, f0.A.data, m.out, m.rank, m.in, m.scale);
              let top = 0;
              for (const v of dw0) top = Math.max(top, Math.abs(v));
              for (const [i, x] of [p, k, d].entries()) {
                const n = maps[i]!.get(m.matchKey)!;
                assert.ok(n, `${x.format}: ${m.name} missing`);
                assert.deepEqual([n.out, n.in, n.rank], [m.out, m.in, m.rank]);
                const f = await readFactors(x, n, "f64");
                if (x !== d) {
                  // intermediate files: the same factors and scale (so the same ΔW)
                  assert.equal(n.scale, m.scale);
                  assert.deepEqual(f, f0);
                  continue;
                }
                const dw = denseDW(f.B.data, f.A.data, n.out, n.rank, n.in, n.scale);
                let diff = 0;
                for (let j = 0; j < dw.length; j++) diff = Math.max(diff, Math.abs(dw[j]! - dw0[j]!));
                worst = Math.max(worst, diff / top);
                assert.ok(diff <= 2 ** -23 * top, `${x.format} ${m.name}: max |ΔW − ΔW₀| = ${diff} (max |ΔW₀| ${top})`);
              }
            }
            assert.equal(d.modules.find((m) => m.name.endsWith("attn1.to_out.0"))!.name.startsWith("unet.down_blocks."), true);
            console.log(`diffusers.test: round trip worst max|ΔW−ΔW₀|/max|ΔW₀| = ${worst}`);
          }),
        ),
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Terms s·B·A of one module, float64. */
async function termOf(a: Adapter, m: LoraModule, w = 1): Promise<LowRankTerm> {
  const f = await readFactors(a, m, "f64");
  return { B: f.B, A: f.A, scale: w * m.scale };
}

test("real sd15-pokemon: a rank-2 truncation written through the generic writer is the optimal rank-2 ΔW", { skip: skipReal }, async () => {
  const dir = tmp();
  try {
    const o = join(dir, "r2.safetensors");
    await withAdapter(REAL, async (a) => {
      const mods: OutModule[] = a.modules.map((m) => ({
        path: m.path,
        kind: m.kind,
        rank: 2,
        alpha: 2,
        out: m.out,
        in: m.in,
        dtype: m.A.dtype,
        produce: async () => {
          const s = await lowRankSvd(jsBackend, await termOf(a, m));
          const f = splitFactors(s, 2, 1, "balanced");
          return { A: f.A.data, B: f.B.data };
        },
      }));
      await writeAdapter(
        o,
        { format: "diffusers", modules: mods, passthrough: [], baseConfig: a.config, metadata: a.metadata },
        { force: false, inputs: [REAL] },
      );
      await withAdapter(o, async (t) => {
        assert.equal(t.format, "diffusers");
        assert.equal(t.modules.length, 128);
        const tm = new Map(t.modules.map((m) => [m.matchKey, m]));
        for (const m of a.modules) {
          const n = tm.get(m.matchKey)!;
          assert.equal(n.rank, 2);
          const full = await lowRankSingularValues(jsBackend, await termOf(a, m));
          const got = await lowRankSingularValues(jsBackend, await termOf(t, n));
          closeSigma(got, full.slice(0, 2), 1e-6 * full[0]!, `${m.name} kept σ`);
          // Eckart–Young: ‖ΔW − ΔW₂‖_F² = σ₃² + σ₄².
          const err = await relativeError(jsBackend, [await termOf(a, m)], [await termOf(t, n)]);
          const opt = Math.hypot(full[2]!, full[3]!) / Math.hypot(...full);
          assert.ok(Math.abs(err - opt) <= 1e-6 * opt + 1e-7, `${m.name}: error ${err} vs optimal ${opt}`);
        }
      });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("real sd15-pokemon + generated second SD LoRA: modules pair across layouts; an exact merge round-trips through the writer", {
  skip: skipReal,
}, async () => {
  const dir = tmp();
  try {
    const o = join(dir, "merged.safetensors");
    await withAdapter(REAL, (a) =>
      withAdapter(fx("sd15-second.safetensors"), async (b) => {
        assert.equal(b.format, "diffusers");
        assert.ok(b.modules.every((m) => m.scale === 2 && m.rank === 4 && m.A.dtype === "F16"));
        const bm = new Map(b.modules.map((m) => [m.matchKey, m]));
        assert.equal(bm.size, 128);
        for (const m of a.modules) {
          const n = bm.get(m.matchKey);
          assert.ok(n, `second LoRA lacks ${m.name}`);
          assert.deepEqual([n.out, n.in], [m.out, m.in]);
        }
        // cat merge with weights ½, ½: ΔW = ½ΔW_a + ½ΔW_b exactly, rank 8, scale folded into B.
        const mods: OutModule[] = a.modules.map((m) => ({
          path: m.path,
          kind: m.kind,
          rank: 8,
          alpha: 8,
          out: m.out,
          in: m.in,
          dtype: "F32",
          produce: async () => {
            const c = concatTerms([await termOf(a, m, 0.5), await termOf(b, bm.get(m.matchKey)!, 0.5)]);
            return { A: c.A.data, B: c.B.data };
          },
        }));
        await writeAdapter(o, { format: "diffusers", modules: mods, passthrough: [], baseConfig: null, metadata: {} }, { force: false, inputs: [] });
        await withAdapter(o, async (t) => {
          assert.equal(t.modules.length, 128);
          const tm = new Map(t.modules.map((m) => [m.matchKey, m]));
          for (const m of a.modules) {
            const target = [await termOf(a, m, 0.5), await termOf(b, bm.get(m.matchKey)!, 0.5)];
            const err = await relativeError(jsBackend, target, [await termOf(t, tm.get(m.matchKey)!)]);
            assert.ok(err < 1e-6, `${m.name}: relative error ${err}`);
          }
        });
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
