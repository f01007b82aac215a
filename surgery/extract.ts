// lora extract: the optimal rank-t LoRA of a full fine-tune, ΔW = tuned − base per weight
// (Eckart–Young: the best rank-t approximation in Frobenius norm is the truncated SVD), streamed
// weight by weight. Per weight: ΔW is folded chunk by chunk from both files into one float32
// array (the backend's weightDelta, the next chunk read meanwhile), its truncated SVD computed (linalg/truncated-svd.ts: randomized to 0.1% of the optimum,
// or exact), and the factors B = U√Σ, A = √Σ Vᵀ (alpha = t, so the scale is 1) encoded and spilled
// to a scratch file beside the output; the adapter is written from the spill at the end. Memory:
// one ΔW and one module's factors per lane (weights side by side on the cpu backend, laneCap),
// whatever the model's size; with --low-memory one weight at a time, and a large weight's ΔW is
// not held either, but re-read a panel of rows at a time for every product (deltaPanels;
// docs/algorithms.md §13).
import { existsSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { AdapterOutput, OutModule } from "../formats/adapter/write.js";
import { writeAdapter } from "../formats/adapter/write.js";
import { withScratchFile } from "../common/atomic.js";
import { mapInLanes } from "../common/map-in-lanes.js";
import { InvalidInputError, UsageError } from "../common/errors.js";
import { openModel, type BaseTensor, type Model } from "../formats/model/base-model.js";
import { MODEL_DTYPES, Scratch } from "../formats/model/stream.js";
import { dtypeBits, encodeFloats, type DType } from "../formats/safetensors/index.js";
import type { RowPanelSource } from "../linalg/row-panels.js";
import { truncatedSvd, type TruncatedSvd } from "../linalg/truncated-svd.js";
import type { LinalgBackend, Mat, ModelDType } from "../linalg/types.js";
import { allocate } from "./truncate/allocate.js";
import { kohyaStemOf, usesConv1D, weightTarget, type WeightTarget } from "./weights.js";

export interface ExtractOptions {
  base: string;
  tuned: string;
  output: string;
  rank?: number;
  energy?: number;
  budget?: number;
  exact: boolean;
  /** Stream large weights (deltaPanels) instead of holding their float32 ΔW: less memory, more time. */
  lowMemory?: boolean;
  /** Relative excess of the Frobenius error allowed over the optimum (randomized route). */
  tolerance: number;
  /** Regular expression a module path must match (search, not anchored). */
  modules?: string;
  baseName?: string;
  to?: "peft" | "kohya";
  dtype?: "F32" | "F16" | "BF16";
  seed: number;
  force: boolean;
}

export interface ExtractDeps {
  backend: LinalgBackend;
  /** Bytes of the two models read so far, of the total to read. */
  onBytes?: (done: number, total: number) => void;
  /** A full garbage collection (Ctx.collectGarbage), run after each large weight: keeps peak RSS near the working set. */
  releaseMemory?: () => Promise<void>;
  /** Stream weights of at least this many elements (default STREAM_FROM_ELEMENTS; tests set it lower). */
  streamFromElements?: number;
  /** Stored bytes of each tensor in one row panel of a streamed weight (default PANEL_BYTES; tests set it lower). */
  panelBytes?: number;
  /** Bytes the float32 ΔW of weights extracted side by side may take together (laneCap); without it, one weight at a time. */
  laneBytes?: number;
}

/** Weights of at least this many elements are followed by deps.releaseMemory (their float32 ΔW is ≥ 16 MiB). */
const RELEASE_AFTER_ELEMENTS = 1 << 22;

export interface ExtractModule {
  name: string;
  /** min(out, in): the rank of a dense ΔW. */
  rank_in: number;
  rank: number;
  /** ‖ΔW − B·A‖_F / ‖ΔW‖_F, of the factors before rounding to the output dtype. */
  relative_error: number;
  retained_energy: number;
  target_norm: number;
  route: "exact" | "randomized";
  power_iterations: number;
  /** Estimated relative excess of the error over the Eckart–Young optimum (0 for exact; null when the error is at float32 rounding level). */
  excess_estimate: number | null;
}

export interface ExtractReport {
  command: "extract";
  method: "exact" | "randomized";
  inputs: string[];
  output: string;
  format: "peft" | "kohya";
  modules: ExtractModule[];
  /** Weights that did not change. */
  unchanged: string[];
  /** Other tensors (biases, norms, embeddings) that changed: not in the adapter. */
  changed_other: string[];
  totals: { modules: number; rank: number; relative_error: number; params: number };
  notes: string[];
}

interface Pair {
  name: string;
  base: BaseTensor;
  tuned: BaseTensor;
  target: WeightTarget | null;
  /** A weight that --modules leaves out: neither extracted nor compared (the note is about biases, norms and embeddings). */
  deselected?: boolean;
}

/** Option combinations that do not need the files (usage errors, exit 2). */
export function checkExtractOptions(o: ExtractOptions): void {
  const n = [o.rank, o.energy, o.budget].filter((x) => x !== undefined).length;
  if (n !== 1)
    throw new UsageError(n === 0 ? "say how many ranks to keep: --rank R, --energy F or --budget K" : "--rank, --energy and --budget are mutually exclusive");
  if (o.modules !== undefined) {
    try {
      new RegExp(o.modules);
    } catch {
      throw new UsageError(`--modules ${JSON.stringify(o.modules)} is not a valid regular expression`);
    }
  }
  if (o.output === "-") throw new UsageError("extract writes a file or directory; -o - is not supported");
}

/** Pair every tensor of the two models; any name, shape or dtype mismatch is invalid input (exit 3). */
function pairModels(base: Model, tuned: Model, o: ExtractOptions): Pair[] {
  const onlyBase = [...base.tensors.keys()].filter((n) => !tuned.tensors.has(n));
  const onlyTuned = [...tuned.tensors.keys()].filter((n) => !base.tensors.has(n));
  if (onlyBase.length || onlyTuned.length) {
    const list = (v: string[]) => v.slice(0, 5).join(", ") + (v.length > 5 ? ` … (${v.length})` : "");
    throw new InvalidInputError(
      `the models do not have the same tensors${onlyBase.length ? `; only in BASE: ${list(onlyBase)}` : ""}${onlyTuned.length ? `; only in TUNED: ${list(onlyTuned)}` : ""}`,
    );
  }
  const conv1d = usesConv1D(base);
  const select = o.modules !== undefined ? new RegExp(o.modules) : null;
  const pairs: Pair[] = [];
  for (const [name, b] of base.tensors) {
    const t = tuned.tensors.get(name)!;
    if (b.info.shape.join("×") !== t.info.shape.join("×"))
      throw new InvalidInputError(`tensor ${name}: shape ${b.info.shape.join("×")} in BASE but ${t.info.shape.join("×")} in TUNED`);
    if (b.info.dtype !== t.info.dtype) throw new InvalidInputError(`tensor ${name}: dtype ${b.info.dtype} in BASE but ${t.info.dtype} in TUNED`);
    const target = MODEL_DTYPES.includes(b.info.dtype) ? weightTarget(name, b.info.shape, conv1d) : null;
    if (target && select && !select.test(target.path)) pairs.push({ name, base: b, tuned: t, target: null, deselected: true });
    else pairs.push({ name, base: b, tuned: t, target });
  }
  return pairs;
}

/** Stored bytes of each model's tensor read at a time: two chunks of each in flight (one read while the other is folded). */
const CHUNK_BYTES = 1 << 20;

/**
 * Weights of at least this many elements are streamed (deltaPanels): ΔW is re-read from both models
 * for every product instead of kept whole in float32 (which would take twice the stored bytes).
 */
const STREAM_FROM_ELEMENTS = 1 << 22;

/** Stored bytes of each model's tensor in one row panel of a streamed weight (its float32 panel is twice that of BF16/F16). */
const PANEL_BYTES = 4 << 20;

/** The run's reused buffers: ΔW in float32 (weights held whole), two (tuned, base) pairs of chunk buffers, and a streamed weight's panel buffers. */
interface Scratches {
  delta: Scratch;
  chunks: [[Uint8Array, Uint8Array], [Uint8Array, Uint8Array]];
  panels: { raw: [[Scratch, Scratch], [Scratch, Scratch]]; block: Scratch; bytes: number } | null;
}

function scratches(largestDense: number, largestRowBytes: number | null, panelBytes: number): Scratches {
  const pair = (): [Uint8Array, Uint8Array] => [new Uint8Array(CHUNK_BYTES), new Uint8Array(CHUNK_BYTES)];
  const rawBytes = largestRowBytes === null ? 0 : Math.max(panelBytes, largestRowBytes);
  const raw = (): [Scratch, Scratch] => [new Scratch(rawBytes), new Scratch(rawBytes)];
  return {
    delta: new Scratch(4 * largestDense),
    chunks: [pair(), pair()],
    panels: largestRowBytes === null ? null : { raw: [raw(), raw()], block: new Scratch(2 * rawBytes), bytes: panelBytes }, // float32 of ≥ 2-byte values
  };
}

/** Elements of the weight (of the stored tensor, conv kernels included). */
function elementsOf(p: Pair): number {
  return p.base.info.shape.reduce((x, y) => x * y, 1);
}

/** The weight's stored matrix (rows×cols as stored) and bytes per element. */
function storedShape(p: Pair): { rows: number; cols: number; es: number } {
  const w = p.target!;
  return { rows: w.transposed ? w.in : w.out, cols: w.transposed ? w.out : w.in, es: dtypeBits(p.base.info.dtype as ModelDType) / 8 };
}

/**
 * The largest ‖ΔW‖_F whose SVD the float32 products can carry. The sketch (linalg/truncated-svd.ts)
 * forms Y = ΔW·X in float32, and with --low-memory G = ΔWᵀ·Y too, whose entries reach ‖ΔW‖²·‖Ω‖₂
 * (Ω Gaussian, ‖Ω‖₂ ≈ √rows + √ℓ < 2¹² for any weight under 16M rows); float32 ends at 2¹²⁸.
 * ‖ΔW‖ ≤ 2⁵⁶ (7.2e16) keeps ‖ΔW‖²·‖Ω‖₂ below 2¹²⁴, and trained weights differ by a few units at most.
 * Past it, a product overflows to ±Inf and the eigensolver fails without naming the weight. The
 * exact route (--exact) takes the SVD of ΔW in float64 and needs no such bound.
 */
export const MAX_DELTA_NORM = 2 ** 56;

/** A ΔW too large for the float32 products (MAX_DELTA_NORM), by its float64 ‖ΔW‖² so far. */
function checkDeltaNorm(p: Pair, norm2: number): void {
  if (norm2 > MAX_DELTA_NORM ** 2)
    throw new InvalidInputError(
      `tensor ${p.name}: TUNED − BASE is too large for the float32 products of its SVD (‖ΔW‖ ≥ ${Math.sqrt(norm2).toExponential(2)}, at most 2^56 ≈ ${MAX_DELTA_NORM.toExponential(1)})`,
      {
        hint: "values this large are no trained weights: check that TUNED is a fine-tune of BASE and that neither holds corrupt values (--exact takes such a ΔW: its SVD is in float64)",
      },
    );
}

function nonFinite(p: Pair, r: { which: string | null; value: number }, i: number): InvalidInputError {
  if (r.which === "difference") return new InvalidInputError(`tensor ${p.name}: TUNED − BASE overflows float32 at index ${i}`);
  return new InvalidInputError(`${r.which === "tuned" ? "TUNED" : "BASE"}: tensor ${p.name} holds ${r.value} at index ${i}`);
}

/**
 * Byte ranges k = 0…n−1 of a weight in both models, handed to fold(k, tuned, base) in order, read
 * into two pairs of buffers in turn (pick(k, len) gives range k's pair): range k + 1 is read while
 * range k is folded, and memory holds four ranges whatever the tensor's size.
 */
async function foldRanges(
  p: Pair,
  n: number,
  range: (k: number) => { from: number; len: number },
  pick: (k: number, len: number) => [Uint8Array, Uint8Array],
  fold: (k: number, tuned: Uint8Array, base: Uint8Array) => Promise<void>,
): Promise<void> {
  const read = (k: number) => {
    const { from, len } = range(k);
    const [tb, bb] = pick(k, len);
    return Promise.all([p.tuned.file.readRawRangeInto(p.tuned.info, from, tb), p.base.file.readRawRangeInto(p.base.info, from, bb)]);
  };
  let next = n > 0 ? read(0) : null;
  for (let k = 0; k < n; k++) {
    const [t, b] = await next!;
    next = k + 1 < n ? read(k + 1) : null; // into the other pair: range k − 1 is folded already
    next?.catch(() => {}); // awaited next round; a failure meanwhile must not be an unhandled rejection
    await fold(k, t, b);
  }
}

/**
 * tuned − base of a streamed weight, a panel of rows at a time: each pass reads both tensors again
 * (foldRanges), folds the panel into float32 by the backend's weightDelta and hands it on. Memory:
 * two pairs of stored panels and one float32 panel. The model bytes are counted for progress on
 * the first pass only.
 */
function deltaPanels(be: LinalgBackend, p: Pair, work: Scratches, onBytes: (n: number) => void, release?: () => Promise<void>): RowPanelSource {
  const { rows, cols, es } = storedShape(p);
  const dtype = p.base.info.dtype as ModelDType;
  const bufs = work.panels!;
  const perPanel = Math.max(1, Math.floor(bufs.bytes / (cols * es)));
  const panels = Math.ceil(rows / perPanel);
  let passes = 0;
  const range = (k: number) => ({ from: k * perPanel * cols * es, len: Math.min(perPanel, rows - k * perPanel) * cols * es });
  const pick = (k: number, len: number): [Uint8Array, Uint8Array] => {
    const [tb, bb] = bufs.raw[k % 2]!;
    return [tb.bytes(len), bb.bytes(len)];
  };
  return {
    rows,
    cols,
    async each(fn) {
      const first = passes++ === 0;
      // The sketch's float32/float64 intermediates of the last pass (a few MB each) are garbage now:
      // collected here, they do not pile up across the passes before V8 would get to them.
      if (!first) await release?.();
      let norm2 = 0;
      await foldRanges(p, panels, range, pick, async (k, t, b) => {
        if (first) onBytes(t.byteLength + b.byteLength);
        const r0 = k * perPanel,
          n = t.byteLength / es / cols;
        const block = bufs.block.floats(n * cols);
        const r = await be.weightDelta(t, b, dtype, block, norm2);
        if (r.firstNonFinite >= 0) throw nonFinite(p, r, r0 * cols + r.firstNonFinite);
        norm2 = r.norm2;
        checkDeltaNorm(p, norm2);
        await fn(r0, { rows: n, cols, data: block });
      });
      return norm2;
    },
  };
}

/**
 * tuned − base in float32 (the stored difference, rows×cols as stored) and its ‖·‖² in float64, by
 * the backend's weightDelta a chunk at a time (foldRanges), so memory holds one float32 ΔW and four
 * chunks, never a whole stored tensor.
 */
async function difference(
  be: LinalgBackend,
  p: Pair,
  work: Scratches,
  onBytes: (n: number) => void,
  exact: boolean,
): Promise<{ data: Float32Array; norm2: number }> {
  const n = elementsOf(p);
  const data = work.delta.floats(n);
  const dtype = p.base.info.dtype as ModelDType; // pairModels keeps F32/F16/BF16 weights only
  const es = dtypeBits(dtype) / 8;
  const total = n * es;
  let norm2 = 0;
  await foldRanges(
    p,
    Math.ceil(total / CHUNK_BYTES),
    (k) => ({ from: k * CHUNK_BYTES, len: Math.min(CHUNK_BYTES, total - k * CHUNK_BYTES) }),
    (k, len) => {
      const [tb, bb] = work.chunks[k % 2]!;
      return [tb.subarray(0, len), bb.subarray(0, len)];
    },
    async (k, t, b) => {
      onBytes(t.byteLength + b.byteLength);
      const at = (k * CHUNK_BYTES) / es;
      const r = await be.weightDelta(t, b, dtype, data.subarray(at, at + t.byteLength / es), norm2);
      if (r.firstNonFinite >= 0) throw nonFinite(p, r, at + r.firstNonFinite);
      norm2 = r.norm2;
      if (!exact) checkDeltaNorm(p, norm2);
    },
  );
  return { data, norm2 };
}

/** Whether a weight is streamed (deltaPanels) rather than held whole: with --low-memory, large ones, by the randomized route, on the host. */
function streams(p: Pair, o: ExtractOptions, deps: ExtractDeps): boolean {
  // cuda keeps the one-call device sketch: ΔW uploaded once, every product on the device.
  return !!o.lowMemory && !o.exact && deps.backend.name !== "cuda" && elementsOf(p) >= (deps.streamFromElements ?? STREAM_FROM_ELEMENTS);
}

/**
 * ΔW of one weight as truncatedSvd takes it (whole, or row panels) and ‖ΔW‖²: for a streamed one
 * undefined, as its first pass yields it (truncatedSvd's norm2; 0 for a weight that did not change).
 */
async function deltaOf(
  deps: ExtractDeps,
  p: Pair,
  o: ExtractOptions,
  work: Scratches,
  onBytes: (n: number) => void,
): Promise<{ m: Mat | RowPanelSource; norm2?: number }> {
  const be = deps.backend;
  if (streams(p, o, deps)) return { m: deltaPanels(be, p, work, onBytes, deps.releaseMemory) };
  const { rows, cols } = storedShape(p);
  const { data, norm2 } = await difference(be, p, work, onBytes, !!o.exact);
  return { m: { rows, cols, data }, norm2 };
}

/** Whether two tensors hold the same bytes, compared chunk by chunk (the chunk buffers of `work`). */
async function sameBytes(p: Pair, work: Scratches, onBytes: (n: number) => void): Promise<boolean> {
  const total = p.base.info.end - p.base.info.begin;
  const [tb, bb] = work.chunks[0];
  for (let from = 0; from < total; from += CHUNK_BYTES) {
    const len = Math.min(CHUNK_BYTES, total - from);
    const [t, b] = await Promise.all([
      p.tuned.file.readRawRangeInto(p.tuned.info, from, tb.subarray(0, len)),
      p.base.file.readRawRangeInto(p.base.info, from, bb.subarray(0, len)),
    ]);
    onBytes(2 * len);
    if (Buffer.compare(t, b) !== 0) {
      onBytes(2 * (total - from - len)); // the rest is not read
      return false;
    }
  }
  return true;
}

/** One weight's outcome in the extraction pass: its factors spilled and its report row, unchanged, or left out by --budget (null). */
type Extracted = { spilled: Spilled; module: ExtractModule } | { unchanged: string } | null;

/**
 * How many weights may be extracted side by side: on the cpu backend, as many as fit
 * deps.laneBytes with their float32 ΔW (each then runs its products on one BLAS thread, a core
 * each: on 2 cores 0.6× the time of one weight at a time on two BLAS threads, which spend a
 * quarter of their time waiting on each other, while the reads and ΔW folds of one weight overlap
 * the products of the other; docs/BENCHMARKS.md). One at a time with --low-memory (memory is the
 * point), on cuda (one device) and js (one thread).
 */
function laneCap(o: ExtractOptions, deps: ExtractDeps, held: number, largestHeld: number): number {
  if (o.lowMemory || deps.backend.name !== "cpu" || held < 2 || !deps.laneBytes) return 1;
  return Math.max(1, Math.floor(deps.laneBytes / (4 * largestHeld)));
}

interface Spilled {
  target: WeightTarget;
  rank: number;
  dtype: DType;
  at: number;
  aBytes: number;
  bBytes: number;
}

/** Balanced factors of the SVD (in ΔW's out×in orientation), encoded: B = U√Σ (out×t), A = √Σ Vᵀ (t×in). */
function encodeFactors(svd: TruncatedSvd, target: WeightTarget, dtype: DType): { A: Uint8Array; B: Uint8Array } {
  const t = svd.S.length;
  // Stored in×out (Conv1D): the stored difference M = U Σ Vᵀ, so ΔW = Mᵀ = V Σ Uᵀ.
  const left = target.transposed ? null : svd.U; // out×t when not transposed
  const out = target.out,
    inn = target.in;
  const B = new Float32Array(out * t),
    A = new Float32Array(t * inn);
  const root = Float64Array.from(svd.S, Math.sqrt);
  // Row-major B (out×t) and A (t×in), each filled in its own order where the source allows.
  if (left) {
    for (let i = 0; i < out; i++) for (let c = 0; c < t; c++) B[i * t + c] = left.data[i * t + c]! * root[c]!;
    for (let c = 0; c < t; c++) for (let j = 0; j < inn; j++) A[c * inn + j] = svd.Vt.data[c * inn + j]! * root[c]!;
  } else {
    for (let c = 0; c < t; c++) for (let i = 0; i < out; i++) B[i * t + c] = svd.Vt.data[c * out + i]! * root[c]!;
    for (let j = 0; j < inn; j++) for (let c = 0; c < t; c++) A[c * inn + j] = svd.U.data[j * t + c]! * root[c]!;
  }
  return { A: encodeFloats(dtype, A), B: encodeFloats(dtype, B) };
}

async function readSpill(fh: FileHandle, at: number, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let done = 0;
  while (done < n) {
    const { bytesRead } = await fh.read(buf, done, n - done, at + done);
    if (bytesRead === 0) throw new Error("internal: scratch file shorter than written");
    done += bytesRead;
  }
  return buf;
}

async function writeSpill(fh: FileHandle, at: number, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += (await fh.write(data, done, data.length - done, at + done)).bytesWritten;
}

/** Run extract: open, pair (all checks before any output exists), compute, write. */
export async function runExtract(o: ExtractOptions, deps: ExtractDeps): Promise<ExtractReport> {
  checkExtractOptions(o);
  const be = deps.backend;
  const base = await openModel(o.base, { label: `BASE ${o.base}` });
  try {
    const tuned = await openModel(o.tuned, { label: `TUNED ${o.tuned}` });
    try {
      const pairs = pairModels(base, tuned, o);
      if (existsSync(o.output) && !o.force) throw new UsageError(`output exists: ${o.output} (use --force to overwrite)`);
      const targets = pairs.filter((p) => p.target !== null);
      if (!targets.length)
        throw new InvalidInputError(
          o.modules !== undefined ? `no 2-D or conv weight matches --modules ${o.modules}` : "the models have no 2-D or conv weights",
        );
      const format = o.to ?? (base.stem === "diffusion_pytorch_model" ? "kohya" : "peft");
      const conv1d = targets.some((p) => p.target!.transposed);
      if (format === "kohya" && conv1d) throw new UsageError("GPT-2 Conv1D weights need PEFT's fan_in_fan_out; use --to peft");
      const others = pairs.filter((p) => p.target === null && !p.deselected);
      const passes = o.budget !== undefined ? 2 : 1;
      const bytesOf = (ps: Pair[]) => ps.reduce((s, p) => s + 2 * (p.base.info.end - p.base.info.begin), 0);
      const total = passes * bytesOf(targets) + bytesOf(others);
      let read = 0;
      const onBytes = (n: number) => {
        read += n;
        deps.onBytes?.(read, total);
      };
      const notes: string[] = [];
      if (o.lowMemory && (o.exact || be.name === "cuda"))
        notes.push(`--low-memory has no effect ${o.exact ? "with --exact (a full SVD needs the whole ΔW)" : "on the cuda backend (ΔW is held on the device)"}`);
      const held = targets.filter((p) => !streams(p, o, deps)),
        streamed = targets.filter((p) => streams(p, o, deps));
      const largestHeld = Math.max(0, ...held.map(elementsOf)),
        largestRow = streamed.length ? Math.max(...streamed.map((p) => storedShape(p).cols * storedShape(p).es)) : null;
      const newScratches = () => scratches(largestHeld, largestRow, deps.panelBytes ?? PANEL_BYTES);
      const work = newScratches();

      // Every weight's pass runs in lanes (laneCap), weights side by side, each lane with its own ΔW
      // and chunk buffers; results in target order.
      const lanes = laneCap(o, deps, held.length, largestHeld);
      const laneWork: Scratches[] = [work];
      const workOf = (l: number) => (laneWork[l] ??= newScratches());
      const eachWeight = <R>(fn: (p: Pair, work: Scratches) => Promise<R>): Promise<R[]> => {
        const run = (count: number) => mapInLanes(targets, count, (p, l) => fn(p, workOf(l)));
        return lanes > 1 ? be.withLanes((count) => run(Math.min(lanes, count))) : run(1);
      };

      // --budget: a first pass for each weight's leading σ, then ranks as `truncate --budget` shares them.
      const ranks = new Map<string, number>();
      if (o.budget !== undefined) {
        const cap = Math.max(1, Math.min(o.budget, 4 * Math.ceil(o.budget / targets.length)));
        const spectra = await eachWeight(async (p, work) => {
          const { m, norm2 } = await deltaOf(deps, p, o, work, onBytes);
          const w = p.target!;
          const { rows, cols } = m;
          const svd =
            norm2 === 0 ? null : await truncatedSvd(be, m, { rank: Math.min(cap, rows, cols), exact: o.exact, tolerance: o.tolerance, seed: o.seed, norm2 });
          const sv = svd === null || svd.norm2 === 0 ? new Float64Array(0) : svd.sigma;
          if (rows * cols >= RELEASE_AFTER_ELEMENTS) await deps.releaseMemory?.();
          return { name: p.name, sigma: sv, in: w.in, out: w.out, rank: Math.min(cap, rows, cols) };
        });
        const alloc = allocate(spectra, { budget: o.budget, score: "energy", minRank: 0, rho: 2 });
        for (const [k, v] of alloc.ranks) ranks.set(k, v);
        const changed = spectra.filter((x) => x.sigma.length > 0).length; // identical weights take no share
        notes.push(`--budget ${o.budget}: each weight's leading ${cap} σ computed in a first pass, ranks shared by energy (${changed} weights that differ)`);
      }

      const dtypeFor = (p: Pair): DType => o.dtype ?? p.base.info.dtype;
      const changedOther: string[] = [];
      for (const p of others) if (!(await sameBytes(p, work, onBytes))) changedOther.push(p.name);
      if (changedOther.length)
        notes.push(
          `${changedOther.length} other tensor(s) changed (biases, norms, embeddings) and are not in the adapter: ${changedOther.slice(0, 6).join(", ")}${changedOther.length > 6 ? ", …" : ""}`,
        );

      return await withScratchFile(o.output, async (fh) => {
        let at = 0;
        const outcomes = await eachWeight(async (p, work): Promise<Extracted> => {
          const w = p.target!;
          const budgetRank = ranks.get(p.name);
          if (budgetRank === 0) {
            onBytes(2 * (p.base.info.end - p.base.info.begin));
            return null;
          }
          const { m, norm2: known } = await deltaOf(deps, p, o, work, onBytes);
          const { rows, cols } = m;
          const want = budgetRank !== undefined ? { rank: budgetRank } : o.rank !== undefined ? { rank: Math.min(o.rank, rows, cols) } : { energy: o.energy! };
          const svd = known === 0 ? null : await truncatedSvd(be, m, { ...want, exact: o.exact, tolerance: o.tolerance, seed: o.seed, norm2: known });
          if (svd === null || svd.norm2 === 0) return { unchanged: w.path };
          const norm2 = svd.norm2;
          const dtype = dtypeFor(p);
          const f = encodeFactors(svd, w, dtype);
          const mine = at;
          at += f.A.length + f.B.length; // this weight's place in the spill, taken before any other lane writes
          await writeSpill(fh, mine, f.A);
          await writeSpill(fh, mine + f.A.length, f.B);
          if (rows * cols >= RELEASE_AFTER_ELEMENTS) await deps.releaseMemory?.();
          const err = Math.sqrt(svd.err2 / norm2);
          const opt2 = svd.excess2 === null ? 0 : svd.err2 - svd.excess2;
          return {
            spilled: { target: w, rank: svd.S.length, dtype, at: mine, aBytes: f.A.length, bBytes: f.B.length },
            module: {
              name: w.path,
              rank_in: Math.min(rows, cols),
              rank: svd.S.length,
              relative_error: err,
              retained_energy: 1 - svd.err2 / norm2,
              target_norm: Math.sqrt(norm2),
              route: svd.exact ? "exact" : "randomized",
              power_iterations: svd.powerIters,
              excess_estimate: svd.exact ? 0 : svd.excess2 === null ? null : opt2 > 0 ? Math.sqrt(svd.err2 / opt2) - 1 : 0,
            },
          };
        });
        const spilled: Spilled[] = [];
        const modules: ExtractModule[] = [];
        const unchanged: string[] = [];
        for (const x of outcomes) {
          if (x === null) continue;
          if ("unchanged" in x) unchanged.push(x.unchanged);
          else {
            spilled.push(x.spilled);
            modules.push(x.module);
          }
        }
        if (unchanged.length) notes.push(`${unchanged.length} weight(s) identical in both models, left out`);
        if (!spilled.length) throw new InvalidInputError("the models are identical in every selected weight: there is nothing to extract");
        const outModules: OutModule[] = spilled.map((s) => ({
          path: s.target.path,
          ...(format === "kohya" ? { stem: kohyaStemOf(base, s.target.path) } : {}),
          kind: s.target.kind,
          rank: s.rank,
          alpha: s.rank,
          out: s.target.out,
          in: s.target.in,
          ...(s.target.kernel ? { kernel: s.target.kernel } : {}),
          dtype: s.dtype,
          produce: async () => ({ A: await readSpill(fh, s.at, s.aBytes), B: await readSpill(fh, s.at + s.aBytes, s.bBytes) }),
        }));
        const baseConfig: Record<string, unknown> = { base_model_name_or_path: o.baseName ?? null, ...(conv1d ? { fan_in_fan_out: true } : {}) };
        const out: AdapterOutput = { format, modules: outModules, passthrough: [], baseConfig, metadata: {} };
        const inputs = [o.base, o.tuned, ...base.shards.map((s) => join(base.dir, s.name)), ...tuned.shards.map((s) => join(tuned.dir, s.name))];
        await writeAdapter(o.output, out, { force: o.force, inputs });
        let num = 0,
          den = 0,
          params = 0;
        for (const m of modules) {
          num += (m.relative_error * m.target_norm) ** 2;
          den += m.target_norm ** 2;
        }
        for (const s of spilled) params += s.rank * (s.target.in + s.target.out);
        return {
          command: "extract",
          method: o.exact ? "exact" : "randomized",
          inputs: [o.base, o.tuned],
          output: o.output,
          format,
          modules,
          unchanged,
          changed_other: changedOther,
          totals: { modules: modules.length, rank: modules.reduce((s, m) => s + m.rank, 0), relative_error: den > 0 ? Math.sqrt(num / den) : 0, params },
          notes,
        };
      });
    } finally {
      await tuned.close();
    }
  } finally {
    await base.close();
  }
}
