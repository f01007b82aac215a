// lora apply: a base model with adapters baked in, W' = W ± Σⱼ cⱼ·sⱼ·Bⱼ·Aⱼ (cⱼ the --scale, sⱼ the
// adapter's own scale; GPT-2 Conv1D weights take the transpose, as PEFT's merge does with
// fan_in_fan_out), written shard by shard in the base's layout and dtype: each merged weight is
// accumulated in float32 and rounded once to its dtype (nearest even), by the backend's mergeWeight
// (one native call per piece of ~8 MB on cpu: decode, add the product a block of rows at a time,
// never a whole dense ΔW, encode in place), pieces merged side by side while the previous one is written
// (docs/algorithms.md §13). Every adapter module is matched to a base weight of the same shape and
// a float dtype before anything is written (else exit 3).
import { join } from "node:path";
import { isDora, loadAdapter, readFactors, refuseBaseDependent, refuseExperts, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import { InvalidInputError, UsageError } from "../common/errors.js";
import { openModel, type BaseTensor, type Model } from "../formats/model/base-model.js";
import { MODEL_DTYPES, Scratch } from "../formats/model/stream.js";
import { MODEL_SIDE_FILES, modelBytes, writeModel, writeOrder, type ModelOutput } from "../formats/model/write.js";
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
  /** Bytes of a weight merged and written at a time (default PIECE_BYTES; tests make it small). */
  pieceBytes?: number;
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

/**
 * Rows of a weight merged and written at a time: about PIECE_BYTES of it, a multiple of the
 * backends' 64-row product blocks (linalg/streamed.ts), so that the bytes are those of one
 * whole-weight call. Small reused buffers stay in the cache between the merge and the write, and
 * are never touched fresh (docs/BENCHMARKS.md "extract and apply").
 */
const PIECE_BYTES = 8 << 20;
const BLOCK_ROWS = 64;

/** Rows [row0, row0 + rows) of one weight (the whole weight when stored transposed). */
interface Piece {
  name: string;
  row0: number;
  rows: number;
  bytes: number;
}

function piecesOf(name: string, t: BaseTensor, w: WeightTarget, pieceBytes: number): Piece[] {
  const whole = t.info.end - t.info.begin;
  if (w.transposed) return [{ name, row0: 0, rows: w.out, bytes: whole }];
  const rowBytes = whole / w.out;
  const per = Math.max(BLOCK_ROWS, Math.floor(pieceBytes / rowBytes / BLOCK_ROWS) * BLOCK_ROWS);
  const out: Piece[] = [];
  for (let row0 = 0; row0 < w.out; row0 += per) {
    const rows = Math.min(per, w.out - row0);
    out.push({ name, row0, rows, bytes: rows * rowBytes });
  }
  return out;
}

/** One piece's stored bytes, read into `buf`. */
function readPiece(t: BaseTensor, p: Piece, buf: Scratch): Promise<Uint8Array> {
  return t.file.readRawRangeInto(t.info, p.row0 * (p.bytes / p.rows), buf.bytes(p.bytes));
}

/** One piece merged in place: the backend's mergeWeight (decode, + Σ coef·B·A in float32, encode) on its rows. */
async function mergePiece(be: LinalgBackend, t: BaseTensor, w: WeightTarget, p: Piece, terms: MergeTerm[], data: Uint8Array): Promise<Uint8Array> {
  const rows = terms.map((x) => ({ ...x, B: x.B.subarray(p.row0 * x.r, (p.row0 + p.rows) * x.r) }));
  const r = await be.mergeWeight({ data, dtype: t.info.dtype as ModelDType, out: p.rows, in: w.in, transposed: w.transposed, terms: rows });
  const at = (i: number) => p.row0 * w.in + i;
  if (r.kind === "base-non-finite") throw new InvalidInputError(`BASE: tensor ${t.info.name} holds ${r.value} at index ${at(r.index)}`);
  if (r.kind === "overflow") throw new InvalidInputError(`${t.info.name}: the merged weight overflows float32 at element ${at(r.index)}`);
  return data;
}

/** The factors of a weight's adapter modules in float32, each with its coefficient. */
async function termsOf(terms: Term[]): Promise<MergeTerm[]> {
  const out: MergeTerm[] = [];
  for (const term of terms) {
    const f = await readFactors(term.adapter, term.module, "f32");
    out.push({ B: f.B.data as Float32Array, A: f.A.data as Float32Array, r: f.B.cols, coef: term.coef });
  }
  return out;
}

/**
 * The merged weights' pieces in the order the writer asks for them, `lanes` + 1 of them in flight:
 * while piece i is written from one buffer, the next `lanes` pieces (of this weight or the next
 * merged ones) are merged side by side, one BLAS thread each, and the one after them is read, each
 * into a buffer of its own. The writer writes each piece before it asks for the next, so a buffer
 * is never overwritten while in flight.
 */
class MergeAhead {
  private readonly bufs: Scratch[];
  private readonly pieces: Piece[];
  private readonly ahead: number;
  private next = 0;
  /** The pieces in flight, oldest first: [index, its bytes]. */
  private readonly inFlight: [number, Promise<Uint8Array>][] = [];
  /** The last merge of each lane: a lane's merges run one after another; reads overlap them. */
  private readonly lanes: Promise<unknown>[];
  constructor(
    order: readonly { name: string; pieces: Piece[] }[],
    lanes: number,
    private readonly read: (p: Piece, buf: Scratch) => Promise<Uint8Array>,
    private readonly merge: (p: Piece, data: Uint8Array) => Promise<Uint8Array>,
  ) {
    this.pieces = order.flatMap((w) => w.pieces);
    this.lanes = Array.from({ length: Math.max(1, lanes) }, () => Promise.resolve());
    this.ahead = this.lanes.length + 1;
    const capacity = Math.max(0, ...this.pieces.map((p) => p.bytes));
    this.bufs = Array.from({ length: this.ahead + 1 }, () => new Scratch(capacity));
  }
  private fill(): void {
    while (this.inFlight.length < this.ahead && this.next < this.pieces.length) {
      const i = this.next++;
      const piece = this.pieces[i]!;
      const lane = i % this.lanes.length;
      const read = this.read(piece, this.bufs[i % this.bufs.length]!);
      const p = Promise.all([read, this.lanes[lane]]).then(([data]) => this.merge(piece, data));
      p.catch(() => {}); // awaited by weight(); a failure ahead must not be an unhandled rejection meanwhile
      this.lanes[lane] = p.catch(() => {});
      this.inFlight.push([i, p]);
    }
  }
  /** Resolves once every piece in flight has settled (before the lanes end after a failed write). */
  async settled(): Promise<void> {
    await Promise.allSettled(this.inFlight.map(([, p]) => p));
  }
  /** The pieces of weight `name`, in order. */
  async *weight(name: string): AsyncIterable<Uint8Array> {
    this.fill();
    while (this.inFlight.length && this.pieces[this.inFlight[0]![0]]!.name === name) {
      const data = await this.inFlight.shift()![1];
      this.fill();
      yield data;
    }
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
    let ahead: MergeAhead | null = null;
    const out: ModelOutput = {
      specFor: (file, t): TensorSpec => {
        if (!plan.has(t.name)) return { name: t.name, dtype: t.dtype, shape: t.shape, copyFrom: { file, tensor: t } };
        return { name: t.name, dtype: t.dtype, shape: t.shape, pieces: () => ahead!.weight(t.name) };
      },
      // A base named as a directory brings all its files; one named as a weights or index file brings
      // only the model's own side files beside it (not whatever else shares that folder).
      copy: base.namedDir ? "all" : ["config.json", ...MODEL_SIDE_FILES],
    };
    const order = writeOrder(base, out)
      .filter((n) => plan.has(n))
      .map((name) => ({ name, pieces: piecesOf(name, base.tensors.get(name)!, plan.get(name)!.target, deps.pieceBytes ?? PIECE_BYTES) }));
    // Each weight's factors are read once, by its first piece merged, and dropped when its last piece is merged.
    const factors = new Map<string, { terms: Promise<MergeTerm[]>; left: number }>();
    const piecesLeft = new Map(order.map((w) => [w.name, w.pieces.length]));
    const merging = (lanes: number) =>
      new MergeAhead(
        order,
        lanes,
        (p, buf) => readPiece(base.tensors.get(p.name)!, p, buf),
        async (p, data) => {
          const e = plan.get(p.name)!;
          let f = factors.get(p.name);
          if (!f) factors.set(p.name, (f = { terms: termsOf(e.terms), left: piecesLeft.get(p.name)! }));
          try {
            return await mergePiece(deps.backend, base.tensors.get(p.name)!, e.target, p, await f.terms, data);
          } finally {
            if (--f.left === 0) factors.delete(p.name);
          }
        },
      );
    const total = modelBytes(base, out);
    let done = 0;
    out.onBytes = (n) => {
      done += n;
      deps.onBytes?.(done, total);
    };
    const inputs = [o.base, ...o.adapters, ...base.shards.map((s) => join(base.dir, s.name))];
    // BLAS on one thread per lane (cpu backend: one lane per core): pieces are merged side by side
    // while the previous one is written, and no idle BLAS thread spins between products.
    await deps.backend.withLanes(async (lanes) => {
      const pieces = merging(lanes);
      ahead = pieces;
      try {
        return await writeModel(o.output, base, out, { force: o.force, inputs });
      } finally {
        await pieces.settled(); // no merge in flight when the lanes end
      }
    });
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
