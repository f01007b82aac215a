// Generated full models with real naming, for the extract/apply tests and bench/extract.ts: a
// Llama (HF layout, single file or sharded with model.safetensors.index.json), a GPT-2 (Conv1D
// weights stored in×out, model_type gpt2) and an SD UNet (diffusers layout,
// unet/diffusion_pytorch_model.safetensors, conv kernels). A pair is a base and a "fine-tune" whose
// 2-D/conv weights moved by ΔW = B·A (a known rank-k change) plus, optionally, full-rank noise, and
// whose norms/biases moved a little. Tensors are produced one at a time (bench sizes stream).
import { mkdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../common/atomic.js";
import { encodeFloats, writeSafetensors, type DType, type TensorSpec } from "../formats/safetensors/index.js";
import { Rng } from "../linalg/random.js";
import type { LinalgBackend } from "../linalg/types.js";

export type Family = "llama" | "gpt2" | "unet";

export interface GenTensor {
  name: string;
  shape: number[];
  /** A weight LoRA targets: its ΔW is out×in (Conv1D: the stored in×out transposed). */
  target?: { out: number; in: number; transposed: boolean };
}

export interface FamilySize {
  layers: number;
  hidden: number;
  inter: number;
  vocab: number;
  /** Llama: key/value width (GQA); default hidden. */
  kv?: number;
}

export function familyTensors(f: Family, s: FamilySize): GenTensor[] {
  const t: GenTensor[] = [];
  const lin = (name: string, out: number, inn: number) => t.push({ name, shape: [out, inn], target: { out, in: inn, transposed: false } });
  const vec = (name: string, n: number) => t.push({ name, shape: [n] });
  if (f === "llama") {
    const kv = s.kv ?? s.hidden;
    t.push({ name: "model.embed_tokens.weight", shape: [s.vocab, s.hidden] });
    for (let l = 0; l < s.layers; l++) {
      const p = `model.layers.${l}.`;
      vec(p + "input_layernorm.weight", s.hidden);
      lin(p + "self_attn.q_proj.weight", s.hidden, s.hidden);
      lin(p + "self_attn.k_proj.weight", kv, s.hidden);
      lin(p + "self_attn.v_proj.weight", kv, s.hidden);
      lin(p + "self_attn.o_proj.weight", s.hidden, s.hidden);
      vec(p + "post_attention_layernorm.weight", s.hidden);
      lin(p + "mlp.gate_proj.weight", s.inter, s.hidden);
      lin(p + "mlp.up_proj.weight", s.inter, s.hidden);
      lin(p + "mlp.down_proj.weight", s.hidden, s.inter);
    }
    vec("model.norm.weight", s.hidden);
    lin("lm_head.weight", s.vocab, s.hidden);
  } else if (f === "gpt2") {
    const c1d = (name: string, inn: number, out: number) => t.push({ name, shape: [inn, out], target: { out, in: inn, transposed: true } });
    t.push({ name: "transformer.wte.weight", shape: [s.vocab, s.hidden] }, { name: "transformer.wpe.weight", shape: [32, s.hidden] });
    for (let l = 0; l < s.layers; l++) {
      const p = `transformer.h.${l}.`;
      vec(p + "ln_1.weight", s.hidden);
      vec(p + "ln_1.bias", s.hidden);
      c1d(p + "attn.c_attn.weight", s.hidden, 3 * s.hidden);
      vec(p + "attn.c_attn.bias", 3 * s.hidden);
      c1d(p + "attn.c_proj.weight", s.hidden, s.hidden);
      vec(p + "attn.c_proj.bias", s.hidden);
      vec(p + "ln_2.weight", s.hidden);
      vec(p + "ln_2.bias", s.hidden);
      c1d(p + "mlp.c_fc.weight", s.hidden, s.inter);
      vec(p + "mlp.c_fc.bias", s.inter);
      c1d(p + "mlp.c_proj.weight", s.inter, s.hidden);
      vec(p + "mlp.c_proj.bias", s.hidden);
    }
    vec("transformer.ln_f.weight", s.hidden);
    vec("transformer.ln_f.bias", s.hidden);
  } else {
    const C = s.hidden;
    const conv = (name: string, out: number, inn: number, k: number) =>
      t.push({ name, shape: [out, inn, k, k], target: { out, in: inn * k * k, transposed: false } });
    conv("conv_in.weight", C, 4, 3);
    vec("conv_in.bias", C);
    for (let l = 0; l < s.layers; l++) {
      const p = `down_blocks.${l}.`;
      vec(p + "resnets.0.norm1.weight", C);
      conv(p + "resnets.0.conv1.weight", C, C, 3);
      vec(p + "resnets.0.conv1.bias", C);
      conv(p + "attentions.0.proj_in.weight", C, C, 1);
      const a = p + "attentions.0.transformer_blocks.0.";
      for (const q of ["attn1.to_q", "attn1.to_k", "attn1.to_v"]) lin(a + q + ".weight", C, C);
      lin(a + "attn1.to_out.0.weight", C, C);
      vec(a + "attn1.to_out.0.bias", C);
      lin(a + "attn2.to_k.weight", C, s.inter); // cross-attention from the text encoder's width
      lin(a + "ff.net.2.weight", C, 4 * C);
      conv(p + "attentions.0.proj_out.weight", C, C, 1);
    }
  }
  return t;
}

export function familyConfig(f: Family, s: FamilySize): Record<string, unknown> {
  if (f === "llama")
    return {
      model_type: "llama",
      architectures: ["LlamaForCausalLM"],
      hidden_size: s.hidden,
      intermediate_size: s.inter,
      num_hidden_layers: s.layers,
      vocab_size: s.vocab,
      num_attention_heads: 4,
      num_key_value_heads: (4 * (s.kv ?? s.hidden)) / s.hidden,
    };
  if (f === "gpt2") return { model_type: "gpt2", n_embd: s.hidden, n_layer: s.layers, vocab_size: s.vocab };
  return { _class_name: "UNet2DConditionModel", block_out_channels: [s.hidden], cross_attention_dim: s.inter };
}

export interface PairSpec {
  family: Family;
  size: FamilySize;
  dtype: DType;
  /** Rank of the change B·A in every target weight (0: none). */
  rank: number;
  /** Standard deviation of full-rank noise added to every target's ΔW (0: none). */
  noise: number;
  seed: number;
  /** Which targets change (default all). */
  changes?: (name: string) => boolean;
  /** σ of the rank-k change decay as decay^c (default 0.8). */
  decay?: number;
}

/** ΔW (out×in) = B·A, B ~ N(0, 0.05²)·decay^c, A ~ N(0, 1/in), plus noise; float64 (B·A on `be` when given). */
export async function deltaFor(spec: PairSpec, index: number, out: number, inn: number, be?: LinalgBackend): Promise<Float64Array> {
  const rng = new Rng(spec.seed * 7919 + index * 104729 + 1);
  const k = spec.rank,
    decay = spec.decay ?? 0.8;
  const B = rng.normals(out * k, 0.05),
    A = rng.normals(k * inn, 1 / Math.sqrt(inn));
  for (let i = 0; i < out; i++) for (let c = 0; c < k; c++) B[i * k + c] *= decay ** c;
  let D: Float64Array;
  if (be && k > 0) D = (await be.gemm({ rows: out, cols: k, data: B }, { rows: k, cols: inn, data: A })).data;
  else {
    D = new Float64Array(out * inn);
    for (let i = 0; i < out; i++) {
      for (let c = 0; c < k; c++) {
        const b = B[i * k + c]!,
          row = i * inn,
          a0 = c * inn;
        for (let j = 0; j < inn; j++) D[row + j] += b * A[a0 + j]!;
      }
    }
  }
  if (spec.noise > 0) for (let i = 0; i < D.length; i++) D[i] += spec.noise * rng.normal();
  return D;
}

/** The values of tensor `index` in the base (tuned = false) or the fine-tune, rounded to the dtype. */
export async function tensorValues(spec: PairSpec, t: GenTensor, index: number, tuned: boolean, be?: LinalgBackend): Promise<Uint8Array> {
  const n = t.shape.reduce((x, y) => x * y, 1);
  const rng = new Rng(spec.seed * 31 + index);
  const v = new Float64Array(n);
  if (t.shape.length === 1) for (let i = 0; i < n; i++) v[i] = 1 + 0.1 * rng.normal();
  else {
    const fan = n / t.shape[0]!;
    const sd = 1 / Math.sqrt(t.shape.length === 2 && t.target?.transposed ? t.shape[0]! : fan);
    for (let i = 0; i < n; i++) v[i] = sd * rng.normal();
  }
  if (tuned && (spec.changes?.(t.name) ?? true)) {
    if (t.target && (spec.rank > 0 || spec.noise > 0)) {
      const D = await deltaFor(spec, index, t.target.out, t.target.in, be);
      const { out, in: inn } = t.target;
      if (t.target.transposed) {
        for (let i = 0; i < out; i++) for (let j = 0; j < inn; j++) v[j * out + i] += D[i * inn + j]!;
      } else for (let i = 0; i < n; i++) v[i] += D[i]!;
    } else if (t.shape.length === 1) for (let i = 0; i < n; i++) v[i] += 0.01;
  }
  return encodeFloats(spec.dtype, v);
}

/**
 * Write one model of the pair to `dir`: single file, or `shards` files with an index; the diffusers
 * layout puts it in dir/unet/. Returns the directory holding the weights.
 */
export async function writeGeneratedModel(dir: string, spec: PairSpec, tuned: boolean, shards = 1, be?: LinalgBackend): Promise<string> {
  const tensors = familyTensors(spec.family, spec.size);
  const diffusers = spec.family === "unet";
  const wdir = diffusers ? join(dir, "unet") : dir;
  mkdirSync(wdir, { recursive: true });
  const stem = diffusers ? "diffusion_pytorch_model" : "model";
  const groups: { name: string; specs: TensorSpec[] }[] = [];
  for (let s = 0; s < shards; s++) {
    const name = shards === 1 ? `${stem}.safetensors` : `${stem}-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    groups.push({ name, specs: [] });
  }
  tensors.forEach((t, i) => {
    const g = groups[Math.min(shards - 1, Math.floor((i * shards) / tensors.length))]!;
    g.specs.push({ name: t.name, dtype: spec.dtype, shape: t.shape, produce: () => tensorValues(spec, t, i, tuned, be) });
  });
  const weightMap: Record<string, string> = {};
  for (const g of groups) {
    await writeFileAtomic(join(wdir, g.name), (sink) => writeSafetensors(sink, g.specs, { format: "pt" }), { force: true, inputs: [] });
    for (const s of g.specs) weightMap[s.name] = g.name;
  }
  if (shards > 1)
    await writeFile(join(wdir, `${stem}.safetensors.index.json`), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
  await writeFile(join(wdir, "config.json"), JSON.stringify(familyConfig(spec.family, spec.size), null, 2));
  if (!diffusers) await writeFile(join(wdir, "tokenizer_config.json"), JSON.stringify({ model_max_length: 128 }));
  return wdir;
}
