// prune --method loraprune (docs/algorithms.md §4.3): structured pruning of a LLaMA-style base model and
// its LoRA adapter together.
//
// Importance (docs/algorithms.md §4.3, importance.ts), per weight element:
//   LoRA-guided (with --grads):  I = |(G_B·A + B·G_A − G_B·G_A) ⊙ (W + s·B·A)|   (no s in Ĝ, as the code)
//   magnitude (without):         I = |W + s·B·A|
// summed per output channel (q, k, v, gate, up) or input channel (o, down), then per structured
// group (groups.ts: key/value head with its query heads; MLP channel), each projection's group
// vector L2-normalised (s / (‖s‖ + 1e-8)) and summed over the projections of the layer part.
// Under GQA the group is a key/value head, so q_proj rows and o_proj columns are first summed over
// the n_rep query heads of each group, then normalised (MHA: LoRAPrune's per-head vectors).
// Per layer and part, floor(total·P) lowest groups are pruned (plus groups a lora_mask has zeroed).
//
// Memory stays bounded: W + s·B·A is formed one row block at a time while the weight streams from
// disk (importance.ts), and the pruned base is written tensor by tensor (pruned-base.ts). This file
// plans the pruning; loraprune-cut.ts cuts the adapter's factors to it.
import { isDora, readFactors, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { SafetensorsFile, type TensorInfo } from "../../formats/safetensors/index.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { BaseModel } from "../../formats/model/base-model.js";
import {
  ATTN_PROJS,
  baseLayout,
  defaultSkipLayers,
  groupCount,
  l2Normalise,
  llamaArch,
  MLP_PROJS,
  parseModulePath,
  partOf,
  pruneCount,
  ROW_PRUNED,
  selectGroups,
  sumIntoGroups,
  type BaseLayout,
  type LlamaArch,
  type Part,
  type Proj,
} from "./groups.js";
import { projectionImportance, type LoraTerms } from "./importance.js";

// ---------------------------------------------------------------------------------------------
// Options and plan

export interface LoraPruneOptions {
  base: string;
  ratio: number;
  grads?: string;
  baseOut?: string;
  /** Layers never pruned; undefined = LoRAPrune's default (first 10% and the last). */
  skipLayers?: number[];
  /** Which projections score the groups: those with a LoRA (LoRAPrune) or all of them. */
  scoreModules: "lora" | "all";
}

export interface PartPlan {
  /** Groups before (key/value heads or channels). */
  total: number;
  /** Kept group indices, ascending. */
  kept: number[];
  /** Whether any projection scored this part (else it is kept whole). */
  scored: boolean;
  /** Groups forced out by lora_mask. */
  masked: number[];
}

export interface LayerPlan {
  layer: number;
  skipped: boolean;
  attn: PartPlan;
  mlp: PartPlan;
}

export interface LoraPrunePlan {
  arch: LlamaArch;
  layout: BaseLayout;
  criterion: "magnitude" | "lora-guided";
  skip: number[];
  layers: LayerPlan[];
  notes: string[];
}

export interface MappedModule {
  m: LoraModule;
  layer: number;
  proj: Proj;
}

type Grads = Map<string, { file: SafetensorsFile; info: TensorInfo }>;

/** Gradient tensors by normalised key "<module path>.lora_A" / ".lora_B". */
async function openGrads(path: string): Promise<{ file: SafetensorsFile; map: Grads }> {
  const file = await SafetensorsFile.open(path);
  const map: Grads = new Map();
  for (const t of file.tensors) {
    let k = t.name;
    if (k.startsWith("base_model.model.")) k = k.slice("base_model.model.".length);
    if (k.endsWith(".grad")) k = k.slice(0, -".grad".length);
    if (k.endsWith(".weight")) k = k.slice(0, -".weight".length);
    k = k.replace(/\.lora_down$/, ".lora_A").replace(/\.lora_up$/, ".lora_B");
    if (map.has(k)) throw new InvalidInputError(`${path}: two gradient tensors map to ${k} (one is ${t.name})`);
    map.set(k, { file, info: t });
  }
  return { file, map };
}

async function readGrad(g: Grads, key: string, shape: number[], where: string): Promise<Float64Array> {
  const t = g.get(key);
  if (!t) throw new InvalidInputError(`${where}: no gradient for ${key} (expected ${key}.grad, ${key}.weight.grad or ${key}.weight)`);
  if (t.info.shape.length !== 2 || t.info.shape[0] !== shape[0] || t.info.shape[1] !== shape[1]) {
    throw new InvalidInputError(`${where}: gradient ${t.info.name} has shape [${t.info.shape.join(", ")}], the factor is [${shape.join(", ")}]`);
  }
  const v = await t.file.readFloat64(t.info);
  for (let i = 0; i < v.length; i++)
    if (!Number.isFinite(v[i]!)) throw new InvalidInputError(`${where}: gradient ${t.info.name} holds ${v[i]} at element ${i}`);
  return v;
}

/** Every prune method refuses DoRA (exit 3): changing the factors invalidates the magnitude vector. */
export function refuseDora(a: Adapter): void {
  if (isDora(a)) {
    throw new InvalidInputError(`${a.source}: DoRA adapter; lora prune refuses DoRA (the magnitude vector cannot be kept right without the base weights)`, {
      hint: "merge the DoRA adapter into the base model with PEFT first",
    });
  }
}

/** Adapters loraprune cannot prune: DoRA, and GPT-2 Conv1D (fan_in_fan_out) layouts. */
export function checkAdapter(a: Adapter): void {
  refuseDora(a);
  if (a.config?.["fan_in_fan_out"] === true)
    throw new InvalidInputError(`${a.source}: fan_in_fan_out adapters (GPT-2 Conv1D) are not LLaMA-style; loraprune cannot map them`);
}

/** Adapter modules that are LLaMA projections, checked against the base weights' shapes. */
function mapModules(a: Adapter, arch: LlamaArch, layout: BaseLayout, base: BaseModel): { mapped: MappedModule[]; other: LoraModule[] } {
  const mapped: MappedModule[] = [],
    other: LoraModule[] = [];
  const seen = new Map<string, string>();
  const norm = (p: string) => p.replace(/\./g, "_");
  const basePrefix = norm(layout.prefix);
  for (const m of a.modules) {
    const hit = [m.path, m.name].map((p) => ({ p, id: parseModulePath(p) })).find((x) => x.id);
    if (!hit) {
      other.push(m);
      continue;
    }
    const id = hit.id!;
    // The module's own prefix (before "layers") must name the same decoder stack as the base's
    // (either may carry extra leading components, e.g. base_model.model.); a vision tower's
    // layers are other modules, left as they are.
    const mp = norm(hit.p.slice(0, hit.p.length - `layers.${id.layer}.${id.part}.${id.proj}`.length));
    if (!(mp.endsWith(basePrefix) || basePrefix.endsWith(mp))) {
      other.push(m);
      continue;
    }
    if (id.layer >= arch.layers)
      throw new InvalidInputError(`${a.source}: module "${m.name}" is in layer ${id.layer}, but the base model has ${arch.layers} layers`);
    const key = `${id.layer}.${id.proj}`;
    if (seen.has(key)) throw new InvalidInputError(`${a.source}: modules "${seen.get(key)}" and "${m.name}" both adapt layer ${id.layer} ${id.proj}`);
    seen.set(key, m.name);
    const w = base.tensors.get(layout.layers[id.layer]!.weight[id.proj])!;
    if (m.kind !== "linear" || m.out !== w.info.shape[0] || m.in !== w.info.shape[1]) {
      throw new InvalidInputError(
        `${a.source}: module "${m.name}" is ${m.out}×${m.in} (${m.kind}), but the base weight ${w.info.name} is [${w.info.shape.join(", ")}]; is this adapter for this model?`,
      );
    }
    mapped.push({ m, layer: id.layer, proj: id.proj });
  }
  return { mapped, other };
}

async function loraTerms(a: Adapter, m: LoraModule, grads: Grads | null): Promise<LoraTerms> {
  const f = await readFactors(a, m, "f64");
  const t: LoraTerms = { r: m.rank, scale: m.scale, B: f.B.data as Float64Array, A: f.A.data as Float64Array };
  if (grads) {
    t.GA = await readGrad(grads, `${m.path}.lora_A`, [m.rank, m.in], "--grads");
    t.GB = await readGrad(grads, `${m.path}.lora_B`, [m.out, m.rank], "--grads");
  }
  return t;
}

/** Groups a lora_mask zeroes entirely (LoRAPrune's masks are cumulative: those groups are gone). */
async function maskedGroups(a: Adapter, mm: MappedModule, arch: LlamaArch): Promise<{ masked: number[]; partial: boolean }> {
  const t = mm.m.extras["lora_mask"];
  if (!t || !ROW_PRUNED.has(mm.proj)) return { masked: [], partial: false };
  const mask = await a.file.readFloat64(t);
  if (mask.length !== mm.m.out)
    throw new InvalidInputError(`${a.source}: ${t.name} has ${mask.length} elements; module "${mm.m.name}" has ${mm.m.out} output channels`);
  const G = groupCount(arch, mm.layer, partOf(mm.proj));
  const width = mask.length / G;
  const masked: number[] = [];
  let partial = false;
  for (let g = 0; g < G; g++) {
    let zeros = 0;
    for (let j = g * width; j < (g + 1) * width; j++) if (mask[j] === 0) zeros++;
    if (zeros === width) masked.push(g);
    else if (zeros > 0) partial = true;
  }
  return { masked, partial };
}

/** Score every layer part and choose the kept groups. */
export async function planLoraPrune(
  a: Adapter,
  base: BaseModel,
  o: LoraPruneOptions,
  be: LinalgBackend | null,
  onStep?: (done: number, total: number) => void,
): Promise<LoraPrunePlan & { mapped: MappedModule[]; other: LoraModule[] }> {
  checkAdapter(a);
  const arch = llamaArch(base.config, base.configPath);
  const layout = baseLayout(base.tensors, arch, `--base ${base.source}`);
  const { mapped, other } = mapModules(a, arch, layout, base);
  const notes: string[] = [];
  if (mapped.length === 0) {
    throw new InvalidInputError(`${a.source}: no module adapts a LLaMA projection (layers.N.self_attn.{q,k,v,o}_proj, layers.N.mlp.{gate,up,down}_proj)`);
  }
  if (o.ratio < 0 || o.ratio >= 1) throw new UsageError(`--ratio must be in [0, 1), got ${o.ratio}`);
  const skip = o.skipLayers ?? defaultSkipLayers(arch.layers);
  for (const l of skip) if (l < 0 || l >= arch.layers) throw new UsageError(`--skip-layers: layer ${l} does not exist (the model has ${arch.layers} layers)`);
  const skipSet = new Set(skip);
  if (o.grads && o.scoreModules === "all")
    throw new UsageError("--score-modules all cannot be combined with --grads: projections without a LoRA have no LoRA gradients");
  for (const l of layout.layers)
    for (const n of Object.values(l.weight)) {
      const d = base.tensors.get(n)!.info.dtype;
      if (!["F64", "F32", "F16", "BF16"].includes(d))
        throw new InvalidInputError(
          `--base ${base.source}: ${n} is ${d}; only F64/F32/F16/BF16 weights can be pruned (quantized checkpoints are not supported)`,
        );
    }
  for (const mm of mapped) {
    if (ROW_PRUNED.has(mm.proj) && mm.m.extras["lora_B.bias"] && !skipSet.has(mm.layer)) {
      throw new InvalidInputError(`${a.source}: module "${mm.m.name}" has a lora_B.bias; pruning its output channels is not supported`);
    }
  }

  let grads: { file: SafetensorsFile; map: Grads } | null = null;
  if (o.grads) grads = await openGrads(o.grads);
  try {
    const byKey = new Map(mapped.map((mm) => [`${mm.layer}.${mm.proj}`, mm]));
    const work: { layer: number; part: Part; proj: Proj }[] = [];
    for (let l = 0; l < arch.layers; l++) {
      if (skipSet.has(l)) continue;
      for (const part of ["self_attn", "mlp"] as const) {
        const projs = part === "self_attn" ? ATTN_PROJS : MLP_PROJS;
        for (const p of projs) if (o.scoreModules === "all" || byKey.has(`${l}.${p}`)) work.push({ layer: l, part, proj: p });
      }
    }
    const scores = new Map<string, Float64Array>();
    let done = 0;
    for (const w of work) {
      const mm = byKey.get(`${w.layer}.${w.proj}`);
      const lora = mm ? await loraTerms(a, mm.m, grads?.map ?? null) : null;
      const t = base.tensors.get(layout.layers[w.layer]!.weight[w.proj])!;
      const rowWise = ROW_PRUNED.has(w.proj);
      const imp = await projectionImportance(t, lora, { rows: rowWise, cols: !rowWise }, be);
      const vec = l2Normalise(sumIntoGroups((rowWise ? imp.rows : imp.cols)!, w.proj, arch, w.layer));
      const key = `${w.layer}.${w.part}`;
      const acc = scores.get(key);
      if (acc) for (let g = 0; g < vec.length; g++) acc[g] += vec[g]!;
      else scores.set(key, vec);
      onStep?.(++done, work.length);
    }
    const layers: LayerPlan[] = [];
    const unscored: Record<Part, number[]> = { self_attn: [], mlp: [] };
    let partialMasks = 0;
    for (let l = 0; l < arch.layers; l++) {
      const mk = async (part: Part): Promise<PartPlan> => {
        const total = groupCount(arch, l, part);
        const all = Array.from({ length: total }, (_, i) => i);
        if (skipSet.has(l)) return { total, kept: all, scored: false, masked: [] };
        const sc = scores.get(`${l}.${part}`);
        if (!sc) {
          unscored[part].push(l);
          return { total, kept: all, scored: false, masked: [] };
        }
        const forced = new Set<number>();
        for (const mm of mapped) {
          if (mm.layer !== l || partOf(mm.proj) !== part) continue;
          const r = await maskedGroups(a, mm, arch);
          for (const g of r.masked) forced.add(g);
          if (r.partial) partialMasks++;
        }
        const kept = selectGroups(sc, pruneCount(total, o.ratio), forced);
        return { total, kept, scored: true, masked: [...forced].sort((x, y) => x - y) };
      };
      layers.push({ layer: l, skipped: skipSet.has(l), attn: await mk("self_attn"), mlp: await mk("mlp") });
    }
    for (const part of ["self_attn", "mlp"] as const) {
      if (unscored[part].length) {
        notes.push(
          `layer(s) ${unscored[part].join(", ")}: no LoRA module in ${part}, so its ${part === "mlp" ? "channels" : "heads"} are kept (--score-modules all scores them by |W|)`,
        );
      }
    }
    if (partialMasks) notes.push(`${partialMasks} lora_mask tensor(s) zero only part of a group; those partial masks are ignored`);
    const masked = layers.reduce((s, L) => s + L.attn.masked.length + L.mlp.masked.length, 0);
    if (masked) notes.push(`${masked} group(s) zeroed by the adapter's lora_mask tensors are pruned`);
    return { arch, layout, criterion: grads ? "lora-guided" : "magnitude", skip: [...skipSet].sort((x, y) => x - y), layers, notes, mapped, other };
  } finally {
    await grads?.file.close();
  }
}
