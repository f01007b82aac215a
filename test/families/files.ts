// Small adapter files in each family's own layout (docs/formats.md "Adapter families") and their
// dense ΔW formed here, in float64, straight from the family's formula on the stored (float32)
// values: the independent references of the family tests. Key names and shapes as the methods'
// own code writes them (../shared/design/families.md §1–5).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import type { Rng } from "../../linalg/random.js";

export interface Ref {
  out: number;
  in: number;
  W: Float64Array;
}
export interface FamilyFile {
  /** What to pass to the CLI (a directory or a file). */
  input: string;
  refs: Map<string, Ref>;
}

const f32 = (x: Float64Array) => Float64Array.from(x, Math.fround);
const t = (name: string, shape: number[], data: Float64Array): TensorSpec => ({
  name,
  dtype: "F32",
  shape,
  data: encodeFloats("F32", Float32Array.from(data)),
});

/** Dense Σ_k B[:, k]·c_k·A[k, :] (c = 1 when absent): B out×r, A r×in. */
function bda(B: Float64Array, A: Float64Array, out: number, r: number, inn: number, c?: ArrayLike<number>): Float64Array {
  const W = new Float64Array(out * inn);
  for (let i = 0; i < out; i++) for (let k = 0; k < r; k++) for (let j = 0; j < inn; j++) W[i * inn + j]! += B[i * r + k]! * (c ? c[k]! : 1) * A[k * inn + j]!;
  return W;
}

async function save(path: string, specs: TensorSpec[], meta: Record<string, string> | null = null) {
  writeFileSync(path, await serializeSafetensors(specs, meta));
}

/** PEFT AdaLoRA: init_r 6, rank_pattern-resized modules (stored rank < init_r) and one with zero E left in. */
export async function adaloraFile(dir: string, rng: Rng): Promise<FamilyFile> {
  mkdirSync(dir, { recursive: true });
  const [initR, alpha] = [6, 10];
  const s = alpha / Math.fround(initR + 1e-5);
  const specs: TensorSpec[] = [];
  const refs = new Map<string, Ref>();
  const mods: [string, number, number, number[]][] = [
    ["model.layers.0.self_attn.q_proj", 16, 12, [1.5, -0.7, 0.3, 2.1]],
    ["model.layers.0.self_attn.v_proj", 10, 12, [0.9, 0, 0.4, 0, 1.2, 0.05]],
    ["model.layers.1.self_attn.q_proj", 16, 12, [3.0, 0.2]],
  ];
  for (const [p, out, inn, e] of mods) {
    const r = e.length;
    const A = f32(rng.normals(r * inn)),
      B = f32(rng.normals(out * r)),
      E = f32(Float64Array.from(e));
    specs.push(t(`base_model.model.${p}.lora_A`, [r, inn], A), t(`base_model.model.${p}.lora_E`, [r, 1], E), t(`base_model.model.${p}.lora_B`, [out, r], B));
    refs.set(p, {
      out,
      in: inn,
      W: bda(
        B,
        A,
        out,
        r,
        inn,
        Array.from(E, (x) => x * s),
      ),
    });
  }
  await save(join(dir, "adapter_model.safetensors"), specs);
  const cfg = {
    peft_type: "ADALORA",
    init_r: initR,
    target_r: 3,
    lora_alpha: alpha,
    total_step: 100,
    target_modules: ["q_proj", "v_proj"],
    rank_pattern: null,
    r: 8,
  };
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(cfg));
  return { input: dir, refs };
}

/** IncreLoRA: a whole-model checkpoint with grown chunks, ranknum, a base weight and config.json (lora_alpha). */
export async function increloraFile(dir: string, rng: Rng): Promise<FamilyFile> {
  mkdirSync(dir, { recursive: true });
  const alpha = 16;
  const specs: TensorSpec[] = [];
  const refs = new Map<string, Ref>();
  const mods: [string, number, number, number[][], number][] = [
    ["deberta.encoder.layer.0.attention.self.query_proj", 12, 10, [[0.5, -1.1], [0.8], [0]], 3],
    ["deberta.encoder.layer.1.attention.self.value_proj", 12, 10, [[1.2, 0.1], [0.6], [2.0], [0]], 4],
  ];
  for (const [p, out, inn, chunks, ranknum] of mods) {
    const As: Float64Array[] = [],
      Bs: Float64Array[] = [],
      Es: number[] = [];
    chunks.forEach((e, j) => {
      const r = e.length;
      const A = f32(rng.normals(r * inn)),
        B = f32(rng.normals(out * r));
      specs.push(t(`${p}.lora_A.${j}`, [r, inn], A), t(`${p}.lora_E.${j}`, [r, 1], Float64Array.from(e)), t(`${p}.lora_B.${j}`, [out, r], B));
      As.push(A);
      Bs.push(B);
      Es.push(...e.map(Math.fround));
    });
    specs.push(t(`${p}.ranknum`, [1], Float64Array.of(ranknum)), t(`${p}.weight`, [out, inn], rng.normals(out * inn)));
    const s = alpha / Math.fround(ranknum + 1e-5);
    const W = new Float64Array(out * inn);
    let at = 0;
    chunks.forEach((e, j) => {
      const part = bda(
        Bs[j]!,
        As[j]!,
        out,
        e.length,
        inn,
        Es.slice(at, at + e.length).map((x) => x * s),
      );
      for (let i = 0; i < W.length; i++) W[i]! += part[i]!;
      at += e.length;
    });
    refs.set(p, { out, in: inn, W });
  }
  specs.push(t("classifier.weight", [2, 10], rng.normals(20)));
  await save(join(dir, "model.safetensors"), specs);
  writeFileSync(join(dir, "config.json"), JSON.stringify({ apply_lora: true, lora_type: "svd", lora_alpha: alpha, lora_r: 2 }));
  return { input: join(dir, "model.safetensors"), refs };
}

/** LoRA-XS/SB (`<m>_lora_latent_mapping.weight`) or NLoRA (`<m>.lora_N.weight`): ΔW = s·B·R·A, PEFT LoRA config. */
export async function threeMatrixFile(dir: string, rng: Rng, kind: "xs" | "nlora", rslora = false): Promise<FamilyFile> {
  mkdirSync(dir, { recursive: true });
  const [r, alpha] = [4, 8];
  const s = rslora ? alpha / Math.sqrt(r) : alpha / r;
  const specs: TensorSpec[] = [];
  const refs = new Map<string, Ref>();
  for (const [p, out, inn] of [
    ["model.layers.0.self_attn.q_proj", 14, 11],
    ["model.layers.0.mlp.down_proj", 9, 13],
  ] as const) {
    const A = f32(rng.normals(r * inn)),
      B = f32(rng.normals(out * r)),
      R = f32(rng.normals(r * r));
    const base = `base_model.model.${p}`;
    specs.push(t(`${base}.lora_A.weight`, [r, inn], A), t(`${base}.lora_B.weight`, [out, r], B));
    specs.push(t(kind === "xs" ? `${base}_lora_latent_mapping.weight` : `${base}.lora_N.weight`, [r, r], R));
    const BR = bda(B, R, out, r, r);
    refs.set(p, { out, in: inn, W: bda(BR, A, out, r, inn).map((x) => x * s) });
  }
  await save(join(dir, "adapter_model.safetensors"), specs);
  const cfg: Record<string, unknown> = { peft_type: "LORA", r, lora_alpha: alpha, use_rslora: rslora, target_modules: ["q_proj", "down_proj"] };
  if (kind === "nlora") cfg["init_lora_weights"] = "n_lora";
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(cfg));
  return { input: dir, refs };
}

/** MeteoRA: N experts of rank r packed per module, a gate, a base weight; the experts' adapter_config.json beside it. */
export async function meteoraFile(dir: string, rng: Rng, n = 3): Promise<FamilyFile & { experts: number }> {
  mkdirSync(dir, { recursive: true });
  const [r, alpha] = [2, 6];
  const specs: TensorSpec[] = [];
  const refs = new Map<string, Ref>();
  for (const [p, out, inn] of [
    ["model.layers.0.self_attn.q_proj", 10, 8],
    ["model.layers.0.mlp.up_proj", 12, 8],
  ] as const) {
    const A = f32(rng.normals(n * r * inn)),
      B = f32(rng.normals(out * n * r));
    const base = `base_model.model.${p}`;
    specs.push(t(`${base}.lora_A.weight`, [n * r, inn], A), t(`${base}.lora_B.weight`, [out, n * r], B));
    specs.push(t(`${base}.moe_gate.weight`, [n, inn], rng.normals(n * inn)), t(`${base}.base_layer.weight`, [out, inn], rng.normals(out * inn)));
    for (let i = 0; i < n; i++) {
      const c = Array.from({ length: n * r }, (_, k) => (Math.floor(k / r) === i ? alpha / r : 0));
      refs.set(`${p}.experts.${i}`, { out, in: inn, W: bda(B, A, out, n * r, inn, c) });
    }
  }
  await save(join(dir, "model.safetensors"), specs);
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r, lora_alpha: alpha, target_modules: ["q_proj", "up_proj"] }));
  return { input: join(dir, "model.safetensors"), refs, experts: n };
}

/** MiSS (default: block [r, out], in % r ≠ 0 in one module; mini: [r, mini_r]; bat: [out/r, r, r]) or Bone (`bone_block`), and the base model it needs. */
export async function missFile(dir: string, rng: Rng, variant: "default" | "bat" | "mini", bone = false): Promise<FamilyFile & { base: string }> {
  const key = bone ? "bone_block" : "miss_block";
  const miniR = 2;
  mkdirSync(join(dir, "adapter"), { recursive: true });
  mkdirSync(join(dir, "base"), { recursive: true });
  const r = 4;
  const specs: TensorSpec[] = [],
    baseSpecs: TensorSpec[] = [];
  const refs = new Map<string, Ref>();
  const mods: [string, number, number][] =
    variant === "bat"
      ? [["model.layers.0.self_attn.q_proj", 8, 12]]
      : [
          ["model.layers.0.self_attn.q_proj", 8, 12],
          ["model.layers.0.self_attn.o_proj", 6, 10],
        ];
  for (const [p, out, inn] of mods) {
    const Wb = f32(rng.normals(out * inn));
    baseSpecs.push(t(`${p}.weight`, [out, inn], Wb));
    const D = new Float64Array(out * inn);
    if (variant === "default") {
      const M = f32(rng.normals(r * out));
      specs.push(t(`base_model.model.${p}.${key}`, [r, out], M));
      for (let o = 0; o < out; o++) for (let c = 0; c < inn; c++) D[o * inn + c] = M[(c % r) * out + o]!;
    } else if (variant === "mini") {
      const M = f32(rng.normals(r * miniR));
      specs.push(t(`base_model.model.${p}.${key}`, [r, miniR], M));
      for (let o = 0; o < out; o++) for (let c = 0; c < inn; c++) D[o * inn + c] = M[(c % r) * miniR + (o % miniR)]!;
    } else {
      const M = f32(rng.normals((out / r) * r * r).map((x) => 0.3 * x));
      specs.push(t(`base_model.model.${p}.${key}`, [out / r, r, r], M));
      for (let o = 0; o < out; o++)
        for (let c = 0; c < inn; c++) {
          const [i, a, j, b] = [Math.floor(o / r), o % r, Math.floor(c / r), c % r];
          let v = M[i * r * r + a * r + b]!;
          for (let k = 0; k < r; k++) v += Wb[o * inn + j * r + k]! * M[i * r * r + k * r + b]!;
          D[o * inn + c] = v;
        }
    }
    refs.set(p, { out, in: inn, W: D });
  }
  await save(join(dir, "adapter", "adapter_model.safetensors"), specs);
  writeFileSync(
    join(dir, "adapter", "adapter_config.json"),
    JSON.stringify({
      peft_type: bone ? "BONE" : "MISS",
      r,
      mini_r: miniR,
      init_weights: variant === "default" ? true : variant,
      target_modules: ["q_proj", "o_proj"],
    }),
  );
  await save(join(dir, "base", "model.safetensors"), baseSpecs);
  writeFileSync(join(dir, "base", "config.json"), JSON.stringify({ model_type: "llama" }));
  return { input: join(dir, "adapter"), refs, base: join(dir, "base") };
}
