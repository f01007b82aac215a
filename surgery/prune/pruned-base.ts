// What loraprune writes beside the adapter: the pruned base model (each pruned tensor assembled
// from row blocks into one buffer the size of its output, every other tensor copied through in
// chunks), its config.json with the per-layer counts, and pruning_plan.json.
import { dirname, join, resolve } from "node:path";
import { InvalidInputError } from "../../common/errors.js";
import { dtypeBits, type SafetensorsFile, type TensorInfo, type TensorSpec } from "../../formats/safetensors/index.js";
import type { BaseModel } from "../../formats/model/base-model.js";
import { MODEL_SIDE_FILES, writeModel } from "../../formats/model/write.js";
import { ATTN_PROJS, keptQueryHeads, MLP_PROJS } from "./groups.js";
import type { LoraPruneOptions, LoraPrunePlan } from "./loraprune.js";
import { cutFor, type Cut } from "./loraprune-cut.js";

/** Per tensor of the base model: its cut, when pruned. */
export function baseCuts(plan: LoraPrunePlan): Map<string, Cut> {
  const cuts = new Map<string, Cut>();
  for (let l = 0; l < plan.arch.layers; l++) {
    const T = plan.layout.layers[l]!;
    for (const p of [...ATTN_PROJS, ...MLP_PROJS]) {
      const c = cutFor(plan, l, p);
      if (!c) continue;
      cuts.set(T.weight[p], c);
      const b = T.bias[p];
      if (b && c.axis === "rows") cuts.set(b, c);
    }
  }
  return cuts;
}

function cutShape(shape: number[], c: Cut): number[] {
  return c.axis === "rows" ? [c.kept.length, ...shape.slice(1)] : [shape[0]!, c.kept.length];
}

/** The bytes of W restricted to the kept rows or columns, assembled from row blocks (bit-exact). */
export async function cutBytes(file: SafetensorsFile, info: TensorInfo, c: Cut): Promise<Uint8Array> {
  const eb = dtypeBits(info.dtype) / 8;
  if (!Number.isInteger(eb)) throw new InvalidInputError(`${info.name}: dtype ${info.dtype} is not byte-addressable; cannot prune it`);
  const rows = info.shape[0]!,
    cols = info.shape.length > 1 ? info.shape.slice(1).reduce((x, y) => x * y, 1) : 1;
  const rowBytes = cols * eb;
  const rowsPerChunk = Math.max(1, Math.floor((4 << 20) / rowBytes));
  if (c.axis === "rows") {
    const out = new Uint8Array(c.kept.length * rowBytes);
    let row = 0,
      k = 0;
    await file.copyRaw(
      info,
      async (chunk) => {
        const n = chunk.byteLength / rowBytes;
        while (k < c.kept.length && c.kept[k]! < row + n) {
          const r = c.kept[k]! - row;
          out.set(chunk.subarray(r * rowBytes, (r + 1) * rowBytes), k * rowBytes);
          k++;
        }
        row += n;
      },
      rowsPerChunk * rowBytes,
    );
    return out;
  }
  const n = c.kept.length;
  const out = new Uint8Array(rows * n * eb);
  let row = 0;
  const copyEl = eb === 2 || eb === 4 || eb === 8;
  const outView = copyEl ? viewOf(out, eb) : null;
  await file.copyRaw(
    info,
    async (chunk) => {
      const m = chunk.byteLength / rowBytes;
      if (outView) {
        const inView = viewOf(chunk, eb);
        for (let i = 0; i < m; i++) {
          const src = i * cols,
            dst = (row + i) * n;
          for (let k = 0; k < n; k++) outView[dst + k] = inView[src + c.kept[k]!]!;
        }
      } else {
        for (let i = 0; i < m; i++)
          for (let k = 0; k < n; k++) {
            const s = i * rowBytes + c.kept[k]! * eb,
              d = ((row + i) * n + k) * eb;
            for (let b = 0; b < eb; b++) out[d + b] = chunk[s + b]!;
          }
      }
      row += m;
    },
    rowsPerChunk * rowBytes,
  );
  return out;
}

function viewOf(u: Uint8Array, eb: number): Uint16Array | Uint32Array | Float64Array {
  if (u.byteOffset % eb !== 0) {
    const c = new Uint8Array(u.byteLength);
    c.set(u);
    u = c;
  }
  const n = u.byteLength / eb;
  return eb === 2
    ? new Uint16Array(u.buffer, u.byteOffset, n)
    : eb === 4
      ? new Uint32Array(u.buffer, u.byteOffset, n)
      : new Float64Array(u.buffer, u.byteOffset, n);
}

function specFor(file: SafetensorsFile, t: TensorInfo, cuts: Map<string, Cut>): TensorSpec {
  const c = cuts.get(t.name);
  if (!c) return { name: t.name, dtype: t.dtype, shape: t.shape, copyFrom: { file, tensor: t } };
  return { name: t.name, dtype: t.dtype, shape: cutShape(t.shape, c), produce: () => cutBytes(file, t, c) };
}

/** Per-layer counts after pruning. */
export function prunedCounts(plan: LoraPrunePlan): { heads: number[]; kvHeads: number[]; inter: number[] } {
  const heads: number[] = [],
    kvHeads: number[] = [],
    inter: number[] = [];
  for (const L of plan.layers) {
    const rep = plan.arch.heads[L.layer]! / plan.arch.kvHeads[L.layer]!;
    kvHeads.push(L.attn.kept.length);
    heads.push(L.attn.kept.length * rep);
    inter.push(L.mlp.kept.length);
  }
  return { heads, kvHeads, inter };
}

const PER_LAYER_KEYS = ["layer_num_attention_heads", "layer_num_key_value_heads", "layer_intermediate_size"] as const;

/**
 * config.json of the pruned model: num_attention_heads / num_key_value_heads / intermediate_size
 * (and head_dim, which no longer follows from hidden_size / heads) when every layer ends up equal;
 * otherwise the standard fields as they were plus per-layer lists matching the tensor shapes.
 */
export function prunedConfig(cfg: Record<string, unknown>, plan: LoraPrunePlan): Record<string, unknown> {
  const { heads, kvHeads, inter } = prunedCounts(plan);
  const same = (v: number[]) => v.every((x) => x === v[0]);
  const out: Record<string, unknown> = { ...cfg };
  if (same(heads) && same(kvHeads) && same(inter)) {
    for (const k of PER_LAYER_KEYS) delete out[k];
    out["num_attention_heads"] = heads[0];
    out["num_key_value_heads"] = kvHeads[0];
    out["intermediate_size"] = inter[0];
    if (plan.arch.headDimExplicit || heads[0] !== cfg["num_attention_heads"]) out["head_dim"] = plan.arch.headDim;
  } else {
    out["layer_num_attention_heads"] = heads;
    out["layer_num_key_value_heads"] = kvHeads;
    out["layer_intermediate_size"] = inter;
  }
  return out;
}

/** JSON with 2-space indentation but arrays of numbers on one line. */
export function prettyJson(v: unknown): string {
  return (
    JSON.stringify(v, null, 2).replace(/\[([\s\d.,eE+-]*)\]/g, (_, inner: string) => {
      const parts = inner
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
      return "[" + parts.join(", ") + "]";
    }) + "\n"
  );
}

export function planDocument(plan: LoraPrunePlan, o: LoraPruneOptions): Record<string, unknown> {
  const { heads, kvHeads, inter } = prunedCounts(plan);
  const arch = plan.arch;
  const sum = (v: number[]) => v.reduce((s, x) => s + x, 0);
  return {
    method: "loraprune",
    criterion: plan.criterion,
    ratio: o.ratio,
    score_modules: o.scoreModules,
    model_type: arch.modelType,
    num_hidden_layers: arch.layers,
    hidden_size: arch.hidden,
    head_dim: arch.headDim,
    skip_layers: plan.skip,
    layers: plan.layers.map((L, i) => ({
      layer: L.layer,
      skipped: L.skipped,
      num_attention_heads: heads[i],
      num_key_value_heads: kvHeads[i],
      intermediate_size: inter[i],
      kept_heads: keptQueryHeads(L.attn.kept, arch, L.layer),
      kept_kv_heads: L.attn.kept,
      kept_channels: L.mlp.kept,
      ...(L.attn.masked.length || L.mlp.masked.length ? { masked_kv_heads: L.attn.masked, masked_channels: L.mlp.masked } : {}),
    })),
    totals: {
      attention_heads: [sum(arch.heads), sum(heads)],
      key_value_heads: [sum(arch.kvHeads), sum(kvHeads)],
      intermediate_channels: [sum(arch.inter), sum(inter)],
    },
  };
}

/**
 * Write the pruned base model: a directory (the input's shard layout, its index when sharded,
 * config.json, tokenizer files) or one .safetensors file. Tensors are produced one at a time.
 */
export async function writeBaseOut(
  target: string,
  base: BaseModel,
  plan: LoraPrunePlan,
  config: Record<string, unknown>,
  opts: { force: boolean; inputs: string[] },
): Promise<void> {
  const cuts = baseCuts(plan);
  await writeModel(
    target,
    base,
    { specFor: (file, t) => specFor(file, t, cuts), replace: { "config.json": prettyJson(config) }, copy: MODEL_SIDE_FILES },
    opts,
  );
}

/** Where the side files go: pruning_plan.json beside the adapter output; config.json with the weights. */
export function sidePaths(output: string, baseOut: string | undefined): { plan: string; config: string | null } {
  const besideAdapter = output === "-" ? resolve(".") : dirname(resolve(output));
  const plan = join(besideAdapter, "pruning_plan.json");
  if (baseOut === undefined) return { plan, config: join(besideAdapter, "config.json") };
  if (baseOut.endsWith(".safetensors")) return { plan, config: join(dirname(resolve(baseOut)), "config.json") };
  return { plan, config: null }; // inside the base-out directory
}
