// lora apply: a base model with adapters baked in, W' = W ± Σⱼ cⱼ·sⱼ·Bⱼ·Aⱼ (cⱼ the --scale, sⱼ the
// adapter's own scale; GPT-2 Conv1D weights take the transpose, as PEFT's merge does with
// fan_in_fan_out), written shard by shard in the base's layout and dtype: each merged weight is
// accumulated in float32 and rounded once to its dtype (nearest even). The product is formed a
// block of rows at a time, never as a whole dense ΔW. Every adapter module is matched to a base
// weight of the same shape and a float dtype before anything is written (else exit 3).
import { join } from "node:path";
import { isDora, loadAdapter, readFactors, refuseBaseDependent, refuseExperts, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import { InvalidInputError, UsageError } from "../common/errors.js";
import { openModel, type BaseTensor, type Model } from "../formats/model/base-model.js";
import { encodeInPlace, foldInto, MODEL_DTYPES, Scratch } from "../formats/model/stream.js";
import { modelBytes, writeModel, type ModelOutput } from "../formats/model/write.js";
import type { TensorSpec } from "../formats/safetensors/index.js";
import type { LinalgBackend, Mat } from "../linalg/types.js";
import { kohyaStemOf, usesConv1D, weightTarget, type WeightTarget } from "./weights.js";

export interface ApplyOptions {
  base: string;
  adapters: string[];
  output: string;
  /** One per adapter, or one for all (default 1). */
  scales: number[];
  subtract: boolean;
  force: boolean;
}

export interface ApplyDeps {
  backend: LinalgBackend;
  onBytes?: (done: number, total: number) => void;
}

export interface ApplyReport {
  command: "apply";
  inputs: string[];
  output: string;
  /** Weights changed, each with the adapter modules added to it. */
  weights: { name: string; dtype: string; modules: { adapter: string; module: string; scale: number }[] }[];
  totals: { weights: number; modules: number; tensors: number; bytes: number };
  notes: string[];
}

interface Term {
  adapter: Adapter;
  module: LoraModule;
  /** The coefficient of B·A: ±c·s. */
  coef: number;
}

/** Rows of B multiplied at a time: bounds the dense block to ROWS×in floats. */
const ROWS = 1024;

/** Which base weight an adapter module stands for: its path + .weight, the path without a pipeline component, or its kohya stem. */
function matchModule(base: Model, byStem: Map<string, string>, m: LoraModule): string | null {
  const cands = [m.path, m.path.replace(/^(unet|transformer|text_encoder(_\d)?)\./, ""), m.path.replace(/^model\./, "")];
  for (const c of cands) if (base.tensors.has(c + ".weight")) return c + ".weight";
  return byStem.get(m.name) ?? byStem.get(m.kohyaStem !== undefined ? m.name : kohyaStemOf(base, m.path)) ?? null;
}

/** W (float32, stored layout) += coef·B·A, a block of rows of B at a time; transposed: W is in×out. */
async function addProduct(be: LinalgBackend, W: Float32Array, w: WeightTarget, B: Mat<Float32Array>, A: Mat<Float32Array>, coef: number): Promise<void> {
  const r = B.cols,
    out = w.out,
    inn = w.in;
  for (let i0 = 0; i0 < out; i0 += ROWS) {
    const n = Math.min(ROWS, out - i0);
    const Bb: Mat<Float32Array> = { rows: n, cols: r, data: B.data.subarray(i0 * r, (i0 + n) * r) };
    const D = (await be.gemm(Bb, A, { alpha: coef })).data; // n×in
    if (!w.transposed) {
      const off = i0 * inn;
      for (let k = 0; k < n * inn; k++) W[off + k] = W[off + k]! + D[k]!;
    } else {
      for (let i = 0; i < n; i++) for (let j = 0; j < inn; j++) W[j * out + i0 + i] = W[j * out + i0 + i]! + D[i * inn + j]!;
    }
  }
}

async function merged(be: LinalgBackend, t: BaseTensor, w: WeightTarget, terms: Term[], work: { W: Scratch; raw: Scratch }): Promise<Uint8Array> {
  const W = work.W.floats(t.info.shape.reduce((x, y) => x * y, 1));
  await foldInto(t, "BASE", W, "set", work.raw);
  for (const term of terms) {
    const f = await readFactors(term.adapter, term.module, "f32");
    await addProduct(be, W, w, f.B as Mat<Float32Array>, f.A as Mat<Float32Array>, term.coef);
  }
  for (let i = 0; i < W.length; i++) {
    if (!Number.isFinite(W[i]!)) throw new InvalidInputError(`${t.info.name}: the merged weight overflows float32 at element ${i}`);
  }
  return encodeInPlace(t.info.dtype, W); // written before the next weight takes the scratch
}

export function checkApplyOptions(o: ApplyOptions): void {
  if (!o.adapters.length) throw new UsageError("name at least one adapter");
  if (o.scales.length !== 1 && o.scales.length !== o.adapters.length)
    throw new UsageError(`--scale takes one value or one per adapter (${o.adapters.length}), got ${o.scales.length}`);
  if (o.output === "-") throw new UsageError("apply writes a model directory or .safetensors file; -o - is not supported");
  if (o.adapters.includes("-")) throw new UsageError("apply reads adapters from files (standard input is not supported)");
}

export async function runApply(o: ApplyOptions, deps: ApplyDeps): Promise<ApplyReport> {
  checkApplyOptions(o);
  const base = await openModel(o.base, { label: `BASE ${o.base}` });
  const adapters: Adapter[] = [];
  try {
    for (const p of o.adapters) adapters.push(await loadAdapter(p));
    for (const a of adapters) {
      refuseBaseDependent(a, "apply");
      refuseExperts(a, "apply");
    }
    const conv1d = usesConv1D(base) || adapters.some((a) => a.config?.["fan_in_fan_out"] === true);
    const byStem = new Map<string, string>();
    for (const [name, t] of base.tensors) {
      const w = weightTarget(name, t.info.shape, conv1d);
      if (w) byStem.set(kohyaStemOf(base, w.path), name);
    }
    const plan = new Map<string, { target: WeightTarget; terms: Term[] }>();
    const problems: string[] = [];
    adapters.forEach((a, j) => {
      if (isDora(a)) problems.push(`${a.source}: DoRA adapters are not a plain ΔW = s·B·A; apply cannot bake them in`);
      const c = (o.scales.length === 1 ? o.scales[0]! : o.scales[j]!) * (o.subtract ? -1 : 1);
      for (const m of a.modules) {
        const name = matchModule(base, byStem, m);
        if (name === null) {
          problems.push(`${a.source}: module ${m.name} has no weight in BASE (looked for ${m.path}.weight)`);
          continue;
        }
        const t = base.tensors.get(name)!;
        const w = weightTarget(name, t.info.shape, conv1d);
        if (m.kind === "embedding" || w === null) {
          problems.push(`${a.source}: module ${m.name} → ${name} (${t.info.shape.join("×")}) is not a linear or conv weight apply can change`);
          continue;
        }
        if (w.out !== m.out || w.in !== m.in) {
          problems.push(`${a.source}: module ${m.name} is ${m.out}×${m.in} but ${name} is ${t.info.shape.join("×")}${w.transposed ? " (Conv1D, in×out)" : ""}`);
          continue;
        }
        if (!MODEL_DTYPES.includes(t.info.dtype)) {
          problems.push(`${name} is ${t.info.dtype}; apply writes F32, F16 and BF16 weights only`);
          continue;
        }
        const e = plan.get(name) ?? { target: w, terms: [] };
        e.terms.push({ adapter: a, module: m, coef: c * m.scale });
        plan.set(name, e);
      }
    });
    if (problems.length) throw new InvalidInputError(problems.slice(0, 8).join("; ") + (problems.length > 8 ? `; … (${problems.length} problems)` : ""));

    const notes: string[] = [];
    if (base.stem === "diffusion_pytorch_model" && base.dir !== o.base && !o.base.endsWith(".safetensors"))
      notes.push(`BASE is a diffusers pipeline: the output is its ${base.dir.slice(o.base.length).replace(/^\//, "")} folder`);
    const changed = [...plan.keys()].map((n) => base.tensors.get(n)!.info);
    const work = {
      W: new Scratch(4 * Math.max(0, ...changed.map((t) => t.shape.reduce((x, y) => x * y, 1)))),
      raw: new Scratch(Math.max(0, ...changed.map((t) => t.end - t.begin))),
    };
    const out: ModelOutput = {
      specFor: (file, t): TensorSpec => {
        const e = plan.get(t.name);
        if (!e) return { name: t.name, dtype: t.dtype, shape: t.shape, copyFrom: { file, tensor: t } };
        return { name: t.name, dtype: t.dtype, shape: t.shape, produce: () => merged(deps.backend, base.tensors.get(t.name)!, e.target, e.terms, work) };
      },
      copy: "all",
    };
    const total = modelBytes(base, out);
    let done = 0;
    out.onBytes = (n) => {
      done += n;
      deps.onBytes?.(done, total);
    };
    const inputs = [o.base, ...o.adapters, ...base.shards.map((s) => join(base.dir, s.name))];
    await writeModel(o.output, base, out, { force: o.force, inputs });
    const weights = [...plan].map(([name, e]) => ({
      name,
      dtype: base.tensors.get(name)!.info.dtype,
      modules: e.terms.map((t) => ({ adapter: t.adapter.source, module: t.module.name, scale: t.coef })),
    }));
    return {
      command: "apply",
      inputs: [o.base, ...o.adapters],
      output: o.output,
      weights,
      totals: { weights: weights.length, modules: weights.reduce((s, w) => s + w.modules.length, 0), tensors: base.tensors.size, bytes: total },
      notes,
    };
  } finally {
    for (const a of adapters) await a.file.close().catch(() => {});
    await base.close();
  }
}
