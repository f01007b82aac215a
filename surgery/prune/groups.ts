// LLaMA-style structure for structured pruning (docs/algorithms.md §4.3, LLM-Pruner groups):
//  - attention group g of layer i = key/value head g with its n_rep = H/KV query heads:
//    rows [g·hd, (g+1)·hd) of k_proj and v_proj, rows [g·n_rep·hd, (g+1)·n_rep·hd) of q_proj and
//    the same columns of o_proj (MHA: n_rep = 1, one group per head);
//  - MLP channel c of layer i = row c of gate_proj and up_proj and column c of down_proj.
// Everything is read from config.json (hidden_size, num_attention_heads, num_key_value_heads,
// intermediate_size, num_hidden_layers, optional head_dim and per-layer lists) and checked against
// the tensors of the base model.
import { InvalidInputError } from "../../common/errors.js";
import type { TensorInfo } from "../../formats/safetensors/index.js";

export const ATTN_PROJS = ["q_proj", "k_proj", "v_proj", "o_proj"] as const;
export const MLP_PROJS = ["gate_proj", "up_proj", "down_proj"] as const;
export type Proj = (typeof ATTN_PROJS)[number] | (typeof MLP_PROJS)[number];
export type Part = "self_attn" | "mlp";

/** Output-channel (row) pruned projections; the others (o_proj, down_proj) lose input columns. */
export const ROW_PRUNED: ReadonlySet<Proj> = new Set<Proj>(["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]);

export const partOf = (p: Proj): Part => ((ATTN_PROJS as readonly string[]).includes(p) ? "self_attn" : "mlp");

export const REQUIRED_FIELDS = ["hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"] as const;
const FIELDS_SENTENCE =
  "config.json fields hidden_size, num_attention_heads, num_hidden_layers and intermediate_size (num_key_value_heads and head_dim optional), and weights named <prefix>.layers.N.self_attn.{q,k,v,o}_proj.weight and <prefix>.layers.N.mlp.{gate,up,down}_proj.weight";

export interface LlamaArch {
  modelType: string;
  hidden: number;
  layers: number;
  headDim: number;
  /** Per layer: query heads, key/value heads, MLP channels. */
  heads: number[];
  kvHeads: number[];
  inter: number[];
  /** Whether head_dim was written in the config (else hidden/heads). */
  headDimExplicit: boolean;
}

function posInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0;
}

function perLayer(cfg: Record<string, unknown>, key: string, layers: number, dflt: number, where: string): number[] {
  const v = cfg[key];
  if (v === undefined || v === null) return Array.from({ length: layers }, () => dflt);
  if (!Array.isArray(v) || v.length !== layers || !v.every(posInt)) {
    throw new InvalidInputError(`${where}: "${key}" must be a list of ${layers} positive integers (one per layer)`);
  }
  return v as number[];
}

/** Read and check the LLaMA-style fields of config.json; refuse anything else, naming what is needed. */
export function llamaArch(cfg: Record<string, unknown>, where: string): LlamaArch {
  const modelType = typeof cfg["model_type"] === "string" ? (cfg["model_type"] as string) : "unknown";
  const archs = Array.isArray(cfg["architectures"]) ? (cfg["architectures"] as unknown[]).join(", ") : "";
  const missing = REQUIRED_FIELDS.filter((f) => !posInt(cfg[f]));
  if (missing.length) {
    throw new InvalidInputError(`${where}: unsupported architecture "${modelType}"${archs ? ` (${archs})` : ""}: missing or invalid ${missing.join(", ")}`, {
      hint: `loraprune handles LLaMA-style decoders (MHA or GQA); it needs ${FIELDS_SENTENCE}`,
    });
  }
  const hidden = cfg["hidden_size"] as number;
  const layers = cfg["num_hidden_layers"] as number;
  const H = cfg["num_attention_heads"] as number;
  const kv = cfg["num_key_value_heads"] ?? H;
  if (!posInt(kv)) throw new InvalidInputError(`${where}: num_key_value_heads must be a positive integer`);
  const hdRaw = cfg["head_dim"];
  if (hdRaw !== undefined && hdRaw !== null && !posInt(hdRaw)) throw new InvalidInputError(`${where}: head_dim must be a positive integer`);
  const headDimExplicit = posInt(hdRaw);
  if (!headDimExplicit && hidden % H !== 0)
    throw new InvalidInputError(`${where}: hidden_size ${hidden} is not a multiple of num_attention_heads ${H} and no head_dim is given`);
  const headDim = headDimExplicit ? (hdRaw as number) : hidden / H;
  const heads = perLayer(cfg, "layer_num_attention_heads", layers, H, where);
  const kvHeads = perLayer(cfg, "layer_num_key_value_heads", layers, kv as number, where);
  const inter = perLayer(cfg, "layer_intermediate_size", layers, cfg["intermediate_size"] as number, where);
  for (let i = 0; i < layers; i++) {
    if (heads[i]! % kvHeads[i]! !== 0) {
      throw new InvalidInputError(
        `${where}: layer ${i} has ${heads[i]} attention heads and ${kvHeads[i]} key/value heads; the heads must be a multiple of the key/value heads`,
      );
    }
  }
  return { modelType, hidden, layers, headDim, heads, kvHeads, inter, headDimExplicit };
}

export interface ModuleId {
  layer: number;
  part: Part;
  proj: Proj;
}

const MODULE_RE = /(?:^|[._])layers[._](\d+)[._](self_attn|mlp)[._](q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$/;

/** Layer and projection of an adapter module path (dots, or kohya underscores), or null. */
export function parseModulePath(path: string): ModuleId | null {
  const m = MODULE_RE.exec(path);
  if (!m) return null;
  return { layer: Number(m[1]), part: m[2] as Part, proj: m[3] as Proj };
}

export interface LayerTensors {
  weight: Record<Proj, string>;
  /** Bias tensor names, where present. */
  bias: Partial<Record<Proj, string>>;
}

export interface BaseLayout {
  /** Tensor name prefix before "layers." (e.g. "model."). */
  prefix: string;
  layers: LayerTensors[];
}

const Q_WEIGHT_RE = /^(.*?)layers\.(\d+)\.self_attn\.q_proj\.weight$/;

/**
 * Locate the decoder layers in the base model's tensors and check every projection's shape against
 * the config (q [H·hd, hidden], k/v [KV·hd, hidden], o [hidden, H·hd], gate/up [I, hidden],
 * down [hidden, I]).
 */
export function baseLayout(names: Map<string, { info: TensorInfo }>, arch: LlamaArch, where: string): BaseLayout {
  const prefixes = new Map<string, number>();
  for (const n of names.keys()) {
    const m = Q_WEIGHT_RE.exec(n);
    if (m) prefixes.set(m[1]!, (prefixes.get(m[1]!) ?? 0) + 1);
  }
  if (prefixes.size === 0) {
    const fused = [...names.keys()].find((n) => /\.(qkv_proj|gate_up_proj|query_key_value|c_attn|Wqkv)\.weight$/.test(n));
    throw new InvalidInputError(
      `${where}: unsupported architecture "${arch.modelType}": no <prefix>.layers.N.self_attn.q_proj.weight tensor${fused ? ` (found fused ${fused})` : ""}`,
      { hint: `loraprune handles LLaMA-style decoders (MHA or GQA); it needs ${FIELDS_SENTENCE}` },
    );
  }
  let prefix: string;
  if (prefixes.size === 1) prefix = [...prefixes.keys()][0]!;
  else {
    const fits = [...prefixes].filter(([, n]) => n === arch.layers);
    if (fits.length !== 1)
      throw new InvalidInputError(
        `${where}: several decoder stacks (${[...prefixes.keys()].map((p) => p + "layers").join(", ")}); cannot tell which one config.json describes`,
      );
    prefix = fits[0]![0];
  }
  const layers: LayerTensors[] = [];
  for (let i = 0; i < arch.layers; i++) {
    const weight = {} as Record<Proj, string>;
    const bias: Partial<Record<Proj, string>> = {};
    const qOut = arch.heads[i]! * arch.headDim,
      kvOut = arch.kvHeads[i]! * arch.headDim,
      I = arch.inter[i]!,
      h = arch.hidden;
    const want: Record<Proj, [number, number]> = {
      q_proj: [qOut, h],
      k_proj: [kvOut, h],
      v_proj: [kvOut, h],
      o_proj: [h, qOut],
      gate_proj: [I, h],
      up_proj: [I, h],
      down_proj: [h, I],
    };
    for (const p of [...ATTN_PROJS, ...MLP_PROJS]) {
      const name = `${prefix}layers.${i}.${partOf(p)}.${p}.weight`;
      const t = names.get(name);
      if (!t) {
        throw new InvalidInputError(`${where}: layer ${i} has no ${name}`, { hint: `loraprune handles LLaMA-style decoders; it needs ${FIELDS_SENTENCE}` });
      }
      const [o, n] = want[p];
      if (t.info.shape.length !== 2 || t.info.shape[0] !== o || t.info.shape[1] !== n) {
        throw new InvalidInputError(
          `${where}: ${name} has shape [${t.info.shape.join(", ")}], but config.json implies [${o}, ${n}] (heads ${arch.heads[i]}, kv heads ${arch.kvHeads[i]}, head_dim ${arch.headDim}, intermediate ${I})`,
        );
      }
      weight[p] = name;
      const b = `${prefix}layers.${i}.${partOf(p)}.${p}.bias`;
      const bt = names.get(b);
      if (bt) {
        if (bt.info.shape.length !== 1 || bt.info.shape[0] !== o)
          throw new InvalidInputError(`${where}: ${b} has shape [${bt.info.shape.join(", ")}], expected [${o}]`);
        bias[p] = b;
      }
    }
    layers.push({ weight, bias });
  }
  // Any other tensor of a pruned part whose shape carries a pruned dimension would be left inconsistent.
  const known = new Set<string>();
  for (const l of layers) {
    for (const n of Object.values(l.weight)) known.add(n);
    for (const n of Object.values(l.bias)) known.add(n!);
  }
  const partRe = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}layers\\.(\\d+)\\.(self_attn|mlp)\\.`);
  for (const [n, t] of names) {
    if (known.has(n)) continue;
    const m = partRe.exec(n);
    if (!m) continue;
    const i = Number(m[1]);
    if (i >= arch.layers) continue;
    const dims = m[2] === "mlp" ? [arch.inter[i]!] : [arch.heads[i]! * arch.headDim, arch.kvHeads[i]! * arch.headDim];
    if (t.info.shape.some((d) => dims.includes(d) && d !== arch.hidden && d !== arch.headDim)) {
      throw new InvalidInputError(
        `${where}: ${n} [${t.info.shape.join(", ")}] depends on the pruned dimensions and is not a known LLaMA tensor; cannot prune this model consistently`,
      );
    }
  }
  return { prefix, layers };
}

/** Number of structured groups of a layer part: key/value heads (attention) or channels (MLP). */
export function groupCount(arch: LlamaArch, layer: number, part: Part): number {
  return part === "self_attn" ? arch.kvHeads[layer]! : arch.inter[layer]!;
}

/**
 * Sum a per-channel vector of one projection (rows of q/k/v/gate/up, columns of o/down) into the
 * layer part's groups.
 */
export function sumIntoGroups(v: Float64Array, proj: Proj, arch: LlamaArch, layer: number): Float64Array {
  const part = partOf(proj);
  const G = groupCount(arch, layer, part);
  if (part === "mlp") return Float64Array.from(v);
  const hd = arch.headDim,
    rep = arch.heads[layer]! / arch.kvHeads[layer]!;
  const width = proj === "k_proj" || proj === "v_proj" ? hd : rep * hd;
  if (v.length !== G * width) throw new Error(`internal: ${proj} vector of ${v.length} for ${G} groups of ${width}`);
  const out = new Float64Array(G);
  for (let g = 0; g < G; g++) {
    let s = 0;
    for (let j = g * width; j < (g + 1) * width; j++) s += v[j]!;
    out[g] = s;
  }
  return out;
}

/** LoRAPrune's normalisation: s / (‖s‖₂ + 1e-8). */
export function l2Normalise(v: Float64Array): Float64Array {
  let n = 0;
  for (let i = 0; i < v.length; i++) n += v[i]! * v[i]!;
  const d = Math.sqrt(n) + 1e-8;
  return Float64Array.from(v, (x) => x / d);
}

/** The channel indices of a projection that survive when `keptGroups` (sorted) of its part are kept. */
export function keptChannels(proj: Proj, keptGroups: readonly number[], arch: LlamaArch, layer: number): Int32Array {
  if (partOf(proj) === "mlp") return Int32Array.from(keptGroups);
  const hd = arch.headDim,
    rep = arch.heads[layer]! / arch.kvHeads[layer]!;
  const width = proj === "k_proj" || proj === "v_proj" ? hd : rep * hd;
  const out = new Int32Array(keptGroups.length * width);
  let k = 0;
  for (const g of keptGroups) for (let j = g * width; j < (g + 1) * width; j++) out[k++] = j;
  return out;
}

/** Query heads belonging to the kept key/value groups. */
export function keptQueryHeads(keptKv: readonly number[], arch: LlamaArch, layer: number): number[] {
  const rep = arch.heads[layer]! / arch.kvHeads[layer]!;
  const out: number[] = [];
  for (const g of keptKv) for (let h = g * rep; h < (g + 1) * rep; h++) out.push(h);
  return out;
}

/** LoRAPrune's default frozen layers (freeze()): index < int(0.1·L) and the last layer. */
export function defaultSkipLayers(layers: number): number[] {
  const s = new Set<number>();
  for (let i = 0; i < Math.floor(0.1 * layers); i++) s.add(i);
  s.add(layers - 1);
  return [...s].sort((a, b) => a - b);
}

/**
 * How many of `total` groups to prune at ratio P: floor(total·P) (LoRAPrune's int(total·ratio), with
 * a 1e-9 guard against 0.29·100 = 28.999…), never all of them.
 */
export function pruneCount(total: number, ratio: number): number {
  return Math.min(total - 1, Math.max(0, Math.floor(total * ratio + 1e-9)));
}

/**
 * Keep the highest-scoring groups: prune `nPrune` lowest (ties: the higher index goes first), plus
 * every forced (masked) group. Returns kept indices, ascending.
 */
export function selectGroups(scores: Float64Array, nPrune: number, forced: ReadonlySet<number> = new Set()): number[] {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => {
    const fa = forced.has(a) ? 1 : 0,
      fb = forced.has(b) ? 1 : 0;
    if (fa !== fb) return fb - fa; // forced first (pruned first)
    return scores[a]! - scores[b]! || b - a;
  });
  const k = Math.min(n - 1, Math.max(nPrune, forced.size));
  const pruned = new Set(order.slice(0, k));
  const kept: number[] = [];
  for (let i = 0; i < n; i++) if (!pruned.has(i)) kept.push(i);
  return kept;
}
