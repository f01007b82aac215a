// lora merge: N adapters → one, per module, by one of ten methods (one file each). Inputs may
// differ in rank, alpha, rsLoRA, rank/alpha patterns and target modules; PEFT and kohya inputs
// pair by matchKey (formats/adapter/names.ts). A module held by only some inputs is merged from
// those (the others' weights taken as 0). The target of every method is T = Σ wᵢ·ΔWᵢ with
// ΔWᵢ = sᵢ·Bᵢ·Aᵢ (cli.md; for lego the weights are k-means sample weights, and T is still what
// the error is measured against). Output: the first input's format (or --to), scale folded
// (alpha = rank), written by formats/adapter/write.ts; per module the output rank and
// ‖ΔW_out − T‖_F/‖T‖_F computed from the factors as written (after rounding to the output dtype).
//
// Two passes (architecture.md "plan, then write"): the plan loads every input, pairs modules,
// checks everything that can refuse the merge (DoRA, extras, shapes, passthrough conflicts, k >
// units, fair's equal ranks, ffa's shared A) so that a refusal writes nothing; the write pass
// computes one module at a time inside the writer's lazy `produce`.
import { createHash } from "node:crypto";
import { isDora, loadAdapter, readFactors, type Adapter, type LoraModule, type ModuleKind } from "../../formats/adapter/index.js";
import { writeAdapter, type AdapterOutput, type OutModule } from "../../formats/adapter/write.js";
import type { PeftConfig } from "../../formats/adapter/peft-config.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { decodeToFloat64, encodeFloats, type DType, type TensorInfo } from "../../formats/safetensors/index.js";
import { concatTerms, lowRankNorm, type LowRankTerm } from "../../linalg/lowrank.js";
import type { LinalgBackend, Mat } from "../../linalg/types.js";
import type { KmeansInit } from "../../linalg/kmeans.js";
import { totalsOf, type ModuleResult, type WriteReport } from "../support/report.js";
import { kernelOf } from "../convert/run.js";
import { catRank, mergeCat } from "../../surgery/merge/cat.js";
import { mergeFair } from "../../surgery/merge/fair.js";
import { mergeFfaProjected, mergeFfaShared, projectedRank, sharedADeviation } from "../../surgery/merge/ffa.js";
import { legoUnits, mergeLego } from "../../surgery/merge/lego.js";
import { linearRank, mergeLinear } from "../../surgery/merge/linear.js";
import { mergeSvd, svdRank } from "../../surgery/merge/svd.js";
import { denseRank, mergeTies, type DenseMethod } from "../../surgery/merge/ties.js";
import { MERGE_METHODS } from "./methods.js";
export { MERGE_DEFAULTS, MERGE_METHODS } from "./methods.js";

export type MergeMethod = (typeof MERGE_METHODS)[number];

/** One input's contribution to a module: ΔWᵢ = scale·B·A, weighted by `weight`. */
export interface MergeTerm {
  /** Index of the input (argument order). */
  input: number;
  /** out×rᵢ */
  B: Mat<Float64Array>;
  /** rᵢ×in */
  A: Mat<Float64Array>;
  /** sᵢ by the input format's rule (algorithms.md §0.2). */
  scale: number;
  weight: number;
}

/** What the rank rules look at: the factor shapes only. */
export interface TermShape {
  A: { rows: number; cols: number };
  B: { rows: number; cols: number };
}

/** A method's result: ΔW_out = B·A (scale 1), plus facts for the report. */
export interface MergedFactors {
  B: Mat<Float64Array>;
  A: Mat<Float64Array>;
  details?: Record<string, unknown>;
}

export interface MergeOptions {
  inputs: string[];
  output: string;
  method: MergeMethod;
  /** K: output rank (svd, dense methods, ffa --project) or cluster count (lego). Default: the largest input rank of the module. */
  rank?: number;
  /** One per input; default 1/N each. */
  weights?: number[];
  seed: number;
  passthrough: "error" | "first" | "drop";
  to?: "peft" | "kohya" | "diffusers";
  force: boolean;
  // ties / dare / dare_ties / magnitude_prune
  density: number;
  tiesMode: "peft" | "mergekit";
  majoritySign: "total" | "frequency";
  oversample: number;
  powerIters: number;
  // lego
  paramReweight: boolean;
  outputReweight: boolean;
  paramNorm: "inf" | "2";
  signCanonicalize: boolean;
  nInit: number;
  maxIter: number;
  tol: number;
  refRank?: number;
  /** Internal (tests, golden examples): k-means initialisation. */
  kmeansInit?: KmeansInit;
  // ffa
  project: boolean;
  ffaTol: number;
  // fair
  fairSolver: "ridge" | "cosine-sgd";
  fairLambda: number;
  fairSteps: number;
  fairLr: number;
}


export interface MergeDeps {
  backend: LinalgBackend;
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  onModule?: (done: number, total: number) => void;
}

export interface MergeReport extends WriteReport {
  weights: number[];
  seed: number;
  passthrough: { kept: number; dropped: string[]; conflicts: string[] };
}

/** A module as paired across the inputs. */
interface Group {
  key: string;
  name: string;
  path: string;
  kind: ModuleKind;
  out: number;
  in: number;
  kernel?: number[];
  stem?: string;
  members: { input: number; module: LoraModule }[];
  /** Inputs with a non-zero weight. */
  active: { input: number; module: LoraModule }[];
  dtype: DType;
  rank: number;
  ffaShared?: boolean;
  ffaDeviation?: number;
}

const METHOD_NOTES: Partial<Record<MergeMethod, (o: MergeOptions) => string>> = {
  linear: () => "linear is PEFT's factor-wise weighted average (B' = Σ√(w·s)B, A' = Σ√(w·s)A): an approximation with cross terms, reported error shows how far",
  ties: (o) => tiesNote(o),
  dare_ties: (o) => tiesNote(o),
  lego: (o) => `lego: k-means (k-means++, n_init ${o.nInit}, max_iter ${o.maxIter}, tol ${o.tol}, seed ${o.seed}) on rank units with √s folded in; weights are sample weights; parameter reweighting ${o.paramReweight ? `on (L${o.paramNorm === "inf" ? "∞" : "2"})` : "off"}, output reweighting ${o.outputReweight ? "on" : "off"}${o.signCanonicalize ? ", signs canonicalised" : ""}`,
};

function tiesNote(o: MergeOptions): string {
  return o.tiesMode === "peft"
    ? `--ties-mode peft: sign elected on the unweighted pruned ΔW (${o.majoritySign === "total" ? "sign of the sum" : "majority of signs"}), disjoint mean over the count of agreeing entries (PEFT merge_utils)`
    : `--ties-mode mergekit: sign elected on the weighted pruned ΔW (${o.majoritySign === "total" ? "sum" : "count"}), ${o.method === "ties" ? "normalised by Σ w over agreeing entries" : "not normalised"} (mergekit generalized task arithmetic)`;
}

function widestDtype(ds: DType[]): DType {
  const set = new Set(ds);
  if (set.size === 1) return ds[0]!;
  return set.has("F64") ? "F64" : "F32";
}

/** Round to what the file will hold, so the reported error is the error of the written factors. */
function roundTo(dtype: DType, x: Float64Array): Float64Array {
  if (dtype === "F64") return x;
  if (dtype === "F32") return Float64Array.from(Float32Array.from(x));
  return decodeToFloat64(dtype, encodeFloats(dtype, x));
}

async function sha256Of(a: Adapter, t: TensorInfo): Promise<string> {
  const h = createHash("sha256");
  await a.file.copyRaw(t, async (chunk) => { h.update(chunk); });
  return h.digest("hex");
}

function label(src: string): string {
  return src === "-" ? "<stdin>" : src;
}

/**
 * ‖T‖ and ‖P − T‖/‖T‖ from the factors. One stacked product [T, −P] = B_cat·A_cat and its Gram
 * matrices give both norms at once (‖Σ BᵢAᵢ‖² = Σ (B_catᵀB_cat) ⊙ (A_cat A_catᵀ), two R×R products,
 * algorithms.md §7.3). That route loses accuracy to cancellation when P ≈ T (or when T's terms
 * cancel), so there the norms are recomputed through the QR core (§7.1), which has no cancellation:
 * exact merges report ~1e-16, not the Gram route's ~1e-8 floor.
 */
async function errorOf(be: LinalgBackend, target: LowRankTerm[], got: MergedFactors): Promise<{ norm: number; rel: number }> {
  if (target.length === 0) return { norm: 0, rel: 0 };
  const approx: LowRankTerm[] = got.A.rows > 0 ? [{ B: got.B, A: got.A, scale: -1 }] : [];
  const all = [...target, ...approx];
  const { B, A } = concatTerms(all);
  const gb = (await be.gemm(B, B, { transA: true })).data, ga = (await be.gemm(A, A, { transB: true })).data;
  const n = B.cols, R = target.reduce((s, t) => s + t.A.rows, 0);
  let t2 = 0, d2 = 0, blocks = 0;
  let off = 0;
  const starts: number[] = [];
  for (const t of all) { starts.push(off); off += t.A.rows; }
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const v = gb[i * n + j]! * ga[i * n + j]!;
    d2 += v;
    if (i < R && j < R) t2 += v;
  }
  target.forEach((t, q) => { const o = starts[q]!; for (let i = o; i < o + t.A.rows; i++) for (let j = o; j < o + t.A.rows; j++) blocks += gb[i * n + j]! * ga[i * n + j]!; });
  let tn = Math.sqrt(Math.max(t2, 0));
  if (!(t2 > 1e-8 * blocks)) tn = await lowRankNorm(be, target);
  let dn = Math.sqrt(Math.max(d2, 0));
  if (!(d2 > 1e-10 * Math.max(t2, 0))) dn = await lowRankNorm(be, all);
  return { norm: tn, rel: tn > 0 ? dn / tn : dn === 0 ? 0 : Infinity };
}

function checkOptions(o: MergeOptions): number[] {
  const n = o.inputs.length;
  if (n === 0) throw new UsageError("merge needs at least one adapter");
  if (o.inputs.filter((x) => x === "-").length > 1) throw new UsageError("standard input (-) can be named only once");
  const w = o.weights ?? Array.from({ length: n }, () => 1 / n);
  if (w.length !== n) throw new UsageError(`--weights has ${w.length} value(s) for ${n} adapter(s); give one weight per input`);
  if (o.method === "lego") {
    if (w.some((x) => x < 0)) throw new UsageError("--weights are k-means sample weights with --method lego and must be ≥ 0");
    if (!w.some((x) => x > 0)) throw new UsageError("--weights are all 0");
  }
  if (w.every((x) => x === 0)) throw new UsageError("--weights are all 0: nothing to merge");
  if (!(o.density > 0 && o.density <= 1)) throw new UsageError(`--density must be in (0, 1] (got ${o.density})`);
  return w;
}

export async function runMerge(o: MergeOptions, deps: MergeDeps): Promise<MergeReport> {
  const weights = checkOptions(o);
  const be = deps.backend;
  const adapters: Adapter[] = [];
  try {
    for (const input of o.inputs) adapters.push(await loadAdapter(input, deps.stdin ? { stdin: deps.stdin } : {}));
    for (const a of adapters) {
      if (isDora(a)) {
        throw new InvalidInputError(`${label(a.source)}: DoRA adapter; merging changes the factors and the magnitude vector cannot be kept right without the base weights`, { hint: "merge DoRA adapters into the base model with PEFT instead" });
      }
    }
    const notes: string[] = [];
    const groups = pairModules(adapters, weights);
    const passthrough = await resolvePassthrough(adapters, o.passthrough);
    if (passthrough.conflicts.length) {
      notes.push(`${passthrough.conflicts.length} passthrough tensor(s) differ between inputs: ${o.passthrough === "first" ? "kept the first input's" : "dropped"} (${passthrough.conflicts.slice(0, 3).join(", ")}${passthrough.conflicts.length > 3 ? ", …" : ""})`);
    }
    const partial = groups.filter((g) => g.members.length < adapters.length).length;
    if (partial) notes.push(`${partial} module(s) are held by only some inputs: merged from those (weights of the others taken as 0)`);
    const dropped = groups.filter((g) => g.active.length === 0).map((g) => g.name);
    if (dropped.length) notes.push(`${dropped.length} module(s) held only by inputs of weight 0 were left out`);
    const live = groups.filter((g) => g.active.length > 0);
    await planRanks(live, adapters, o);
    const methodNote = METHOD_NOTES[o.method]?.(o);
    if (methodNote) notes.push(methodNote);

    const firstFormat = adapters[0]!.format;
    const format: "peft" | "kohya" | "diffusers" = o.to ?? (firstFormat === "kohya" || firstFormat === "diffusers" ? firstFormat : "peft");
    const results = new Map<string, ModuleResult>();
    let done = 0;
    const modules: OutModule[] = live.map((g) => ({
      path: g.path,
      ...(format === "kohya" && g.stem !== undefined ? { stem: g.stem } : {}),
      kind: g.kind, rank: g.rank, alpha: g.rank, out: g.out, in: g.in, dtype: g.dtype,
      ...(g.kernel ? { kernel: g.kernel } : {}),
      produce: async () => {
        const terms = await readTerms(adapters, g, weights);
        const res = await mergeModule(be, terms, g, o);
        if (res.A.rows !== g.rank || res.B.cols !== g.rank) throw new Error(`internal: ${o.method} produced rank ${res.A.rows} for module ${g.name}, planned ${g.rank}`);
        const A = roundTo(g.dtype, res.A.data), B = roundTo(g.dtype, res.B.data);
        const target = terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale }));
        const err = await errorOf(be, target, { A: { ...res.A, data: A }, B: { ...res.B, data: B } });
        const rankIn = adapters.map((_, i) => g.members.find((m) => m.input === i)?.module.rank ?? 0);
        const mr: ModuleResult = { name: g.name, rank_in: rankIn, rank: g.rank, relative_error: err.rel, target_norm: err.norm };
        const det = { ...(res.details ?? {}) };
        delete det["labels"];
        if (typeof det["retained_energy"] === "number") { mr.retained_energy = det["retained_energy"]; delete det["retained_energy"]; }
        if (g.ffaDeviation !== undefined) Object.assign(det, { shared_a_deviation: g.ffaDeviation, projected: !g.ffaShared });
        Object.assign(mr, det);
        results.set(g.key, mr);
        deps.onModule?.(++done, live.length);
        return { A, B };
      },
    }));
    const first = adapters[0]!;
    const out: AdapterOutput = {
      format,
      modules,
      passthrough: passthrough.kept.map(({ input, tensor }) => ({ file: adapters[input]!.file, tensor })),
      baseConfig: baseConfigOf(first),
      metadata: first.metadata,
      extraMetadata: { lora_merge: provenance(o, weights) },
    };
    await writeAdapter(o.output, out, { force: o.force, inputs: o.inputs.filter((x) => x !== "-"), ...(deps.stdout ? { stdout: deps.stdout } : {}) });
    const mods = live.map((g) => results.get(g.key)!);
    const report: MergeReport = {
      command: "merge", method: o.method, inputs: o.inputs, output: o.output, format,
      modules: mods, dropped, totals: totalsOf(mods), notes, weights, seed: o.seed,
      passthrough: { kept: passthrough.kept.length, dropped: passthrough.dropped, conflicts: passthrough.conflicts },
    };
    return report;
  } finally {
    for (const a of adapters) await a.file.close();
  }
}

/** The config the PEFT output starts from: the first input's, with rsLoRA/DoRA off (scale is folded: alpha = rank) and no layer filters. */
function baseConfigOf(a: Adapter): PeftConfig | null {
  if (!a.config) return null;
  // target_modules is rewritten to the merged modules' full names; layer filters of one input
  // must not hide modules that came from another.
  const c: PeftConfig = { ...a.config, use_rslora: false, use_dora: false, layers_to_transform: null, layers_pattern: null, exclude_modules: null };
  delete c["rank_pattern"];
  delete c["alpha_pattern"];
  return c;
}

/** What produced the file (no paths, no dates: the same inputs and options give the same bytes). */
function provenance(o: MergeOptions, weights: number[]): string {
  const p: Record<string, unknown> = { method: o.method, inputs: o.inputs.length, weights, seed: o.seed };
  if (o.rank !== undefined) p["rank"] = o.rank;
  if (o.method === "lego") Object.assign(p, { param_reweight: o.paramReweight, output_reweight: o.outputReweight, param_norm: o.paramNorm, sign_canonicalize: o.signCanonicalize, n_init: o.nInit, max_iter: o.maxIter, tol: o.tol, ...(o.refRank !== undefined ? { ref_rank: o.refRank } : {}) });
  if (["ties", "dare", "dare_ties", "magnitude_prune"].includes(o.method)) Object.assign(p, { density: o.density, ties_mode: o.tiesMode, majority_sign: o.majoritySign, oversample: o.oversample, power_iters: o.powerIters });
  if (o.method === "ffa") Object.assign(p, { project: o.project });
  if (o.method === "fair") Object.assign(p, { solver: o.fairSolver, lambda: o.fairLambda, ...(o.fairSolver === "cosine-sgd" ? { steps: o.fairSteps, lr: o.fairLr } : {}) });
  return JSON.stringify(p);
}

function pairModules(adapters: Adapter[], weights: number[]): Group[] {
  const groups = new Map<string, Group>();
  adapters.forEach((a, i) => {
    const seen = new Set<string>();
    for (const m of a.modules) {
      if (seen.has(m.matchKey)) throw new InvalidInputError(`${label(a.source)}: two modules map to the same name "${m.matchKey}"`);
      seen.add(m.matchKey);
      const extras = Object.keys(m.extras);
      if (extras.length) {
        throw new InvalidInputError(`${label(a.source)}: module "${m.name}" has ${extras.join(", ")}; merging those is not supported`, { hint: "prune or strip them first (lora prune), or merge with PEFT on the base model" });
      }
      const kernel = kernelOf(m.A.shape);
      const g = groups.get(m.matchKey);
      if (!g) {
        groups.set(m.matchKey, {
          key: m.matchKey, name: m.name, path: m.path, kind: m.kind, out: m.out, in: m.in,
          ...(kernel ? { kernel } : {}),
          ...(a.format === "kohya" ? { stem: m.name } : {}),
          members: [{ input: i, module: m }], active: [], dtype: m.A.dtype, rank: 0,
        });
        continue;
      }
      const first = g.members[0]!;
      const kernelSame = JSON.stringify(kernel ?? null) === JSON.stringify(g.kernel ?? null);
      if (m.kind !== g.kind || m.out !== g.out || m.in !== g.in || !kernelSame) {
        throw new InvalidInputError(
          `module "${g.name}" cannot be merged: ${label(adapters[first.input]!.source)} has a ${g.kind} ΔW of ${g.out}×${g.in}${g.kernel ? ` (kernel ${g.kernel.join("×")})` : ""}, ${label(a.source)} a ${m.kind} ΔW of ${m.out}×${m.in}${kernel ? ` (kernel ${kernel.join("×")})` : ""}`,
          { hint: "adapters for different base models (or layers) cannot be merged" },
        );
      }
      g.members.push({ input: i, module: m });
    }
  });
  for (const g of groups.values()) {
    g.active = g.members.filter((m) => weights[m.input] !== 0);
    g.dtype = widestDtype(g.members.map((m) => m.module.A.dtype));
  }
  return [...groups.values()];
}

async function resolvePassthrough(adapters: Adapter[], policy: MergeOptions["passthrough"]): Promise<{ kept: { input: number; tensor: TensorInfo }[]; dropped: string[]; conflicts: string[] }> {
  const byName = new Map<string, { input: number; tensor: TensorInfo; hash?: string; conflict: boolean }>();
  for (let i = 0; i < adapters.length; i++) {
    for (const t of adapters[i]!.passthrough) {
      const prev = byName.get(t.name);
      if (!prev) { byName.set(t.name, { input: i, tensor: t, conflict: false }); continue; }
      if (prev.conflict) continue;
      let same = prev.tensor.dtype === t.dtype && JSON.stringify(prev.tensor.shape) === JSON.stringify(t.shape);
      if (same) {
        prev.hash ??= await sha256Of(adapters[prev.input]!, prev.tensor);
        same = prev.hash === (await sha256Of(adapters[i]!, t));
      }
      if (!same) prev.conflict = true;
    }
  }
  const conflicts = [...byName.entries()].filter(([, v]) => v.conflict).map(([k]) => k);
  if (conflicts.length && policy === "error") {
    throw new InvalidInputError(
      `${conflicts.length} passthrough tensor(s) differ between the inputs (${conflicts.slice(0, 4).join(", ")}${conflicts.length > 4 ? ", …" : ""}); a merged adapter can carry only one of each`,
      { hint: "--passthrough first keeps the first input's, --passthrough drop leaves them out" },
    );
  }
  const kept: { input: number; tensor: TensorInfo }[] = [];
  const dropped: string[] = [];
  for (const [name, v] of byName) {
    if (v.conflict && policy === "drop") { dropped.push(name); continue; }
    kept.push({ input: v.input, tensor: v.tensor });
  }
  return { kept, dropped, conflicts };
}

/** Decide each module's output rank and refuse what cannot be merged, before anything is written. */
async function planRanks(groups: Group[], adapters: Adapter[], o: MergeOptions): Promise<void> {
  for (const g of groups) {
    const ranks = g.active.map((m) => m.module.rank);
    const maxR = Math.max(...ranks);
    const K = o.rank ?? maxR;
    const shape = { out: g.out, in: g.in };
    const fake: TermShape[] = g.active.map((m) => ({ A: { rows: m.module.rank, cols: g.in }, B: { rows: g.out, cols: m.module.rank } }));
    switch (o.method) {
      case "cat": g.rank = catRank(fake); break;
      case "svd": g.rank = svdRank(K, fake); break;
      case "linear": g.rank = linearRank(fake); break;
      case "ties": case "dare": case "dare_ties": case "magnitude_prune": g.rank = denseRank(K, shape.out, shape.in); break;
      case "lego": {
        const units = legoUnits(fake);
        if (K > units) {
          throw new InvalidInputError(`module "${g.name}": k = ${K} clusters but only ${units} rank units among the inputs (Σ rᵢ); k must be ≤ the total number of units`, { hint: `use --rank ${units} or less` });
        }
        g.rank = K;
        break;
      }
      case "fair": {
        if (new Set(ranks).size > 1) {
          throw new InvalidInputError(`module "${g.name}": fair averages A, so every input needs the same rank (found ${ranks.join(", ")})`, { hint: "use --method svd or cat for inputs of different ranks" });
        }
        g.rank = ranks[0]!;
        break;
      }
      case "ffa": {
        const terms = await readTerms(adapters, g, g.active.map(() => 1), true);
        const dev = sharedADeviation(terms);
        g.ffaDeviation = dev;
        g.ffaShared = dev <= o.ffaTol;
        if (!g.ffaShared && !o.project) {
          const why = Number.isFinite(dev) ? `their A factors differ (max|Aₖ − A₁| = ${dev.toExponential(3)} × max|A₁| > ${o.ffaTol})` : `their ranks differ (${ranks.join(", ")})`;
          throw new InvalidInputError(`module "${g.name}": ffa needs every input to share A (FFA-LoRA freezes a common A), but ${why}`, { hint: "--project fits each ΔW onto a shared row space (approximate), or use --method svd" });
        }
        g.rank = g.ffaShared ? ranks[0]! : projectedRank(K, fake);
        break;
      }
    }
  }
}

/** Every active input's factors for a module, in float64; `weights` by input index, or aligned with g.active when `positional`. */
async function readTerms(adapters: Adapter[], g: Group, weights: number[], positional = false): Promise<MergeTerm[]> {
  const terms: MergeTerm[] = [];
  for (let j = 0; j < g.active.length; j++) {
    const { input, module } = g.active[j]!;
    const f = await readFactors(adapters[input]!, module, "f64");
    terms.push({ input, B: f.B as Mat<Float64Array>, A: f.A as Mat<Float64Array>, scale: module.scale, weight: positional ? weights[j]! : weights[input]! });
  }
  return terms;
}

async function mergeModule(be: LinalgBackend, terms: MergeTerm[], g: Group, o: MergeOptions): Promise<MergedFactors> {
  const K = o.rank ?? Math.max(...terms.map((t) => t.A.rows));
  switch (o.method) {
    case "cat": return mergeCat(terms);
    case "svd": return mergeSvd(be, terms, K);
    case "linear": return mergeLinear(terms);
    case "ties": case "dare": case "dare_ties": case "magnitude_prune":
      return mergeTies(be, terms, { method: o.method as DenseMethod, density: o.density, mode: o.tiesMode, majoritySign: o.majoritySign, rank: g.rank, seed: o.seed, moduleKey: g.key, oversample: o.oversample, powerIters: o.powerIters });
    case "lego":
      return mergeLego(be, terms, {
        k: g.rank, paramReweight: o.paramReweight, outputReweight: o.outputReweight, paramNorm: o.paramNorm, signCanonicalize: o.signCanonicalize,
        nInit: o.nInit, maxIter: o.maxIter, tol: o.tol, seed: o.seed,
        ...(o.refRank !== undefined ? { refRank: o.refRank } : {}),
        ...(o.kmeansInit ? { init: o.kmeansInit } : {}),
      });
    case "ffa": return g.ffaShared ? mergeFfaShared(terms) : mergeFfaProjected(be, terms, g.rank);
    case "fair": return mergeFair(be, terms, { solver: o.fairSolver, lambda: o.fairLambda, steps: o.fairSteps, lr: o.fairLr });
  }
}
