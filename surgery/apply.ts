// lora apply: a base model with adapters baked in, W' = W ± Σⱼ cⱼ·sⱼ·Bⱼ·Aⱼ (cⱼ the --scale, sⱼ the
// adapter's own scale; GPT-2 Conv1D weights take the transpose, as PEFT's merge does with
// fan_in_fan_out), written shard by shard in the base's layout and dtype: each merged weight is
// accumulated in float32 and rounded once to its dtype (nearest even), by the backend's mergeWeight
// (one native call per weight on cpu: decode, add the product a block of rows at a time, never a
// whole dense ΔW, encode in place), the next weight merged while the previous one is written. Every adapter module is matched to a base
// weight of the same shape and a float dtype before anything is written (else exit 3).
import { join } from "node:path";
import { isDora, loadAdapter, readFactors, refuseBaseDependent, refuseExperts, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import { InvalidInputError, UsageError } from "../common/errors.js";
import { openModel, type BaseTensor, type Model } from "../formats/model/base-model.js";
import { MODEL_DTYPES, Scratch } from "../formats/model/stream.js";
import { modelBytes, writeModel, writeOrder, type ModelOutput } from "../formats/model/write.js";
import type { TensorSpec } from "../formats/safetensors/index.js";
import type { LinalgBackend, MergeTerm, ModelDType } from "../linalg/types.js";
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

/** Which base weight an adapter module stands for: its path + .weight, the path without a pipeline component, or its kohya stem. */
function matchModule(base: Model, byStem: Map<string, string>, m: LoraModule): string | null {
  const cands = [m.path, m.path.replace(/^(unet|transformer|text_encoder(_\d)?)\./, ""), m.path.replace(/^model\./, "")];
  for (const c of cands) if (base.tensors.has(c + ".weight")) return c + ".weight";
  return byStem.get(m.name) ?? byStem.get(m.kohyaStem !== undefined ? m.name : kohyaStemOf(base, m.path)) ?? null;
}

/** One weight merged in place in `buf`: read, then the backend's mergeWeight (decode, + Σ coef·B·A in float32, encode). */
async function merged(be: LinalgBackend, t: BaseTensor, w: WeightTarget, terms: Term[], buf: Scratch): Promise<Uint8Array> {
  const data = await t.file.readRawInto(t.info, buf.bytes(t.info.end - t.info.begin));
  const products: MergeTerm[] = [];
  for (const term of terms) {
    const f = await readFactors(term.adapter, term.module, "f32");
    products.push({ B: f.B.data as Float32Array, A: f.A.data as Float32Array, r: f.B.cols, coef: term.coef });
  }
  const r = await be.mergeWeight({ data, dtype: t.info.dtype as ModelDType, out: w.out, in: w.in, transposed: w.transposed, terms: products });
  if (r.kind === "base-non-finite") throw new InvalidInputError(`BASE: tensor ${t.info.name} holds ${r.value} at index ${r.index}`);
  if (r.kind === "overflow") throw new InvalidInputError(`${t.info.name}: the merged weight overflows float32 at element ${r.index}`);
  return data;
}

/**
 * The merged weights in the order the writer asks for them, one ahead: while weight i is written
 * from one buffer, weight i + 1 is read and merged into the other (the writer awaits each write
 * before it asks for the next weight, so a buffer is never overwritten while in flight).
 */
class MergeAhead {
  private readonly bufs: [Scratch, Scratch];
  private readonly pending = new Map<string, Promise<Uint8Array>>();
  private next = 0;
  constructor(
    private readonly order: readonly string[],
    private readonly compute: (name: string, buf: Scratch) => Promise<Uint8Array>,
    capacity: number,
  ) {
    this.bufs = [new Scratch(capacity), new Scratch(capacity)];
  }
  private start(): void {
    if (this.next >= this.order.length) return;
    const name = this.order[this.next]!;
    const p = this.compute(name, this.bufs[this.next % 2]!);
    p.catch(() => {}); // awaited by produce; a failure ahead must not be an unhandled rejection meanwhile
    this.pending.set(name, p);
    this.next++;
  }
  produce(name: string): Promise<Uint8Array> {
    if (!this.pending.has(name)) {
      if (this.order[this.next] !== name) throw new Error(`internal: apply asked for ${name} out of order`);
      this.start();
    }
    const p = this.pending.get(name)!;
    this.pending.delete(name);
    this.start();
    return p;
  }
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
    let ahead: MergeAhead | null = null;
    const out: ModelOutput = {
      specFor: (file, t): TensorSpec => {
        if (!plan.has(t.name)) return { name: t.name, dtype: t.dtype, shape: t.shape, copyFrom: { file, tensor: t } };
        return { name: t.name, dtype: t.dtype, shape: t.shape, produce: () => ahead!.produce(t.name) };
      },
      copy: "all",
    };
    ahead = new MergeAhead(
      writeOrder(base, out).filter((n) => plan.has(n)),
      (name, buf) => {
        const e = plan.get(name)!;
        return merged(deps.backend, base.tensors.get(name)!, e.target, e.terms, buf);
      },
      Math.max(0, ...changed.map((t) => t.end - t.begin)),
    );
    const total = modelBytes(base, out);
    let done = 0;
    out.onBytes = (n) => {
      done += n;
      deps.onBytes?.(done, total);
    };
    const inputs = [o.base, ...o.adapters, ...base.shards.map((s) => join(base.dir, s.name))];
    // BLAS on one thread (cpu backend): the merge of the next weight takes one core while the
    // previous one is written from the other, and no idle BLAS thread spins between products.
    await deps.backend.withLanes(() => writeModel(o.output, base, out, { force: o.force, inputs }));
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
