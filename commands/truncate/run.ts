// lora truncate: shrink every module of an adapter, from the adapter file alone.
//
//   --method svd (default)  the Eckart–Young optimal rank-t ΔW per module (svd.ts), with t from
//                           --rank R (min(R, r)), --energy F or --budget K (allocate.ts, the very
//                           ranks `lora inspect` prints) or --dynamic (kohya-rules.ts, clean or
//                           --kohya-compat). The scale convention of each module is kept: s' = s,
//                           alpha' = s·t (s·√t with rsLoRA), as kohya's resize_lora.py does, so the
//                           factors keep their magnitude and PEFT/kohya load exactly U_t Σ_t V_tᵀ.
//   --method prefix         DyLoRA: first t components, alpha kept (prefix.ts); the default for
//                           files detected as kohya DyLoRA.
//
// Plan, then write (architecture.md): ranks are decided first (spectra only when the selection
// needs them), every output shape is then known, and each module's new factors are computed
// lazily while the writer streams the file, one module at a time. A rank of 0 removes the module.
import { existsSync } from "node:fs";
import { alphaForScale, hasTextEncoder2, isDora, kohyaStemInSet, loadAdapter, nonFiniteFactor, rawReadable, readFactors, readFactorsWithGrams, readRawFactors, scaleFor, type Adapter, type LoraModule, type ModuleFactors, type ModuleFactorsGrams, type RawFactors } from "../../formats/adapter/index.js";
import { writeAdapter, type AdapterOutput, type OutModule } from "../../formats/adapter/write.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import type { DType } from "../../formats/safetensors/index.js";
import type { FactorDType, LinalgBackend, Mat, ModuleGrams, TruncateFactorsResult } from "../../linalg/types.js";
import { BufferPool } from "../../surgery/buffer-pool.js";
import { withRawFactors } from "../../surgery/raw-factors.js";
import { moduleSpectra } from "../../surgery/spectra.js";
import { Lanes, ReadAhead } from "../../surgery/schedule.js";
import { totalsOf, type ModuleResult, type WriteReport } from "../../surgery/report.js";
import { allocate, type Score } from "../../surgery/truncate/allocate.js";
import { cleanDynamicRank, kohyaDynamicRank, type DynamicMethod } from "../../surgery/truncate/kohya-rules.js";
import { prefixAlpha, prefixFactors, splitPath, splitRanks, type AlphaMode } from "../../surgery/truncate/prefix.js";
import { errorReport, gramsFrom, gramsOf, relativeErrorFromFactors, retainedEnergy, roundForDtype, toF64, truncateModule, truncationError, type SplitMode } from "../../linalg/truncate.js";

export type OutDType = "F32" | "F16" | "BF16";
export type OutFormat = "peft" | "kohya" | "diffusers";

export interface TruncateOptions {
  input: string;
  output: string;
  rank?: number;
  energy?: number;
  budget?: number;
  /** undefined: svd, or prefix for a detected kohya DyLoRA file. */
  method?: "svd" | "prefix";
  score: Score;
  minRank: number;
  rho: number;
  /** undefined: balanced, or all-in-up with --kohya-compat (as resize_lora.py writes). */
  split?: SplitMode;
  alphaMode: AlphaMode;
  unit?: number;
  kohyaCompat: boolean;
  dynamic?: DynamicMethod;
  dynamicParam?: number;
  dtype?: OutDType;
  to?: OutFormat;
  force: boolean;
}

export interface TruncateDeps {
  backend: LinalgBackend;
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  onModule?: (done: number, total: number) => void;
}

/** `--unit` writes several files: one report per file. */
export interface SplitReport {
  command: "truncate";
  method: "prefix";
  unit: number;
  inputs: string[];
  outputs: WriteReport[];
}

export type TruncateResult = WriteReport | SplitReport;

export function isSplitReport(r: TruncateResult): r is SplitReport {
  return "outputs" in r;
}

/** Option combinations (usage errors, exit 2) that do not need the file. */
export function checkOptions(o: TruncateOptions): void {
  const sel = [o.rank !== undefined && "--rank", o.energy !== undefined && "--energy", o.budget !== undefined && "--budget"].filter(Boolean) as string[];
  if (o.energy !== undefined && o.budget !== undefined) throw new UsageError("--energy and --budget are mutually exclusive");
  if (o.rank !== undefined && (o.energy !== undefined || o.budget !== undefined)) throw new UsageError(`--rank cannot be combined with ${o.energy !== undefined ? "--energy" : "--budget"} (choose one way to pick ranks)`);
  if (o.dynamicParam !== undefined && o.dynamic === undefined) throw new UsageError("--dynamic-param needs --dynamic sv_ratio|sv_fro|sv_cumulative");
  if (o.dynamic !== undefined) {
    if (o.dynamicParam === undefined) throw new UsageError(`--dynamic ${o.dynamic} needs --dynamic-param X`);
    if (o.energy !== undefined || o.budget !== undefined) throw new UsageError("--dynamic cannot be combined with --energy or --budget");
    if (o.dynamic !== "sv_ratio" && !(o.dynamicParam > 0 && o.dynamicParam <= 1)) throw new UsageError(`--dynamic-param for ${o.dynamic} must be in (0, 1], got ${o.dynamicParam}`);
    if (o.dynamic === "sv_ratio" && !(o.dynamicParam > 0)) throw new UsageError(`--dynamic-param for sv_ratio must be > 0, got ${o.dynamicParam}`);
  }
  if (o.kohyaCompat && o.dynamic === undefined && o.rank === undefined) throw new UsageError("--kohya-compat needs --dynamic (and --dynamic-param) or --rank, as resize_lora.py does");
  if (o.kohyaCompat && (o.energy !== undefined || o.budget !== undefined)) throw new UsageError("--kohya-compat applies to --rank and --dynamic only (kohya has no --energy/--budget)");
  if (o.unit !== undefined) {
    if (sel.length || o.dynamic !== undefined) throw new UsageError(`--unit writes every multiple of the unit below the full rank; it cannot be combined with ${[...sel, ...(o.dynamic ? ["--dynamic"] : [])].join(", ")}`);
    if (o.method === "svd") throw new UsageError("--unit splits a DyLoRA adapter by prefix; it needs --method prefix");
    if (o.output === "-") throw new UsageError("--unit writes several files; -o - (standard output) cannot hold them");
  } else if (!sel.length && o.dynamic === undefined) {
    throw new UsageError("say how far to truncate: --rank R, --energy F, --budget K or --dynamic METHOD --dynamic-param X (or --unit U to split a DyLoRA adapter)");
  }
  if (o.method === "prefix") {
    if (o.energy !== undefined || o.budget !== undefined || o.dynamic !== undefined || o.kohyaCompat) {
      throw new UsageError("--method prefix keeps the first R components in index order; it takes --rank R (or --unit U), not --energy, --budget, --dynamic or --kohya-compat");
    }
    if (o.split !== undefined) throw new UsageError("--split applies to --method svd (prefix keeps the factors as they are)");
  }
  if (o.alphaMode !== "keep" && o.method === "svd") throw new UsageError("--alpha-mode applies to --method prefix (DyLoRA); svd keeps each module's scale");
  if (o.minRank > 0 && o.rank !== undefined && o.dynamic === undefined) throw new UsageError("--min-rank applies to --energy, --budget and --dynamic");
}

interface Plan {
  method: "svd" | "prefix";
  /** rank per module name (0 = removed) */
  ranks: Map<string, number>;
  /** σ per module, when the selection needed them (same computation as `lora inspect`). */
  spectra?: Map<string, Float64Array>;
  /** The native route's Grams from that same pass, per module. */
  grams?: Map<string, ModuleGrams>;
  notes: string[];
}

/** σ of every module exactly as `lora inspect` computes them (so --budget/--energy ranks agree). */
async function spectraOf(a: Adapter, be: LinalgBackend): Promise<{ spectra: Map<string, Float64Array>; grams: Map<string, ModuleGrams> }> {
  const spectra = new Map<string, Float64Array>(), grams = new Map<string, ModuleGrams>();
  // The Grams are kept for the fused route, which then skips its first pass (2r² floats a module).
  for (const [m, sp] of await moduleSpectra(a, be, { keepGrams: be.truncateFactors !== undefined })) {
    spectra.set(m.name, Float64Array.from(Array.from(sp.S).slice(0, m.rank)));
    if (sp.grams) grams.set(m.name, sp.grams);
  }
  return { spectra, grams };
}

async function plan(o: TruncateOptions, a: Adapter, be: LinalgBackend): Promise<Plan> {
  const notes: string[] = [];
  let method = o.method;
  const wantsSpectrum = o.energy !== undefined || o.budget !== undefined || o.dynamic !== undefined || o.kohyaCompat;
  if (method === undefined) {
    if (o.unit !== undefined || o.alphaMode !== "keep") {
      method = "prefix";
    } else if (a.dylora && !wantsSpectrum && o.split === undefined) {
      method = "prefix";
      notes.push(`kohya DyLoRA file (ss_network_module networks.dylora, unit ${a.dylora.unit}): using --method prefix, the nested rank-R adapter it was trained to hold (--method svd gives the optimal rank-R ΔW instead)`);
    } else {
      method = "svd";
      if (a.dylora) notes.push("kohya DyLoRA file, but these options (--energy/--budget/--dynamic/--split) need --method svd; prefix is what DyLoRA trained for --rank R");
    }
  }
  const ranks = new Map<string, number>();
  if (method === "prefix") {
    for (const m of a.modules) ranks.set(m.name, Math.min(o.rank ?? m.rank, m.rank));
    const unit = o.unit ?? a.dylora?.unit;
    if (o.rank !== undefined && a.dylora && unit && a.modules.some((m) => ranks.get(m.name)! < m.rank && ranks.get(m.name)! % unit !== 0)) {
      notes.push(`rank ${o.rank} is not a multiple of the DyLoRA unit ${unit}; DyLoRA trained only multiples of it`);
    }
    return { method, ranks, notes };
  }
  if (!wantsSpectrum) {
    for (const m of a.modules) ranks.set(m.name, Math.min(o.rank!, m.rank));
    return { method, ranks, notes };
  }
  const { spectra, grams } = await spectraOf(a, be);
  if (o.energy !== undefined || o.budget !== undefined) {
    const alloc = allocate(
      a.modules.map((m) => ({ name: m.name, sigma: spectra.get(m.name)!, in: m.in, out: m.out, rank: m.rank })),
      { score: o.score, minRank: o.minRank, rho: o.rho, ...(o.budget !== undefined ? { budget: o.budget } : {}), ...(o.energy !== undefined ? { energy: o.energy } : {}) },
    );
    for (const [k, v] of alloc.ranks) ranks.set(k, v);
    return { method, ranks, spectra, grams, notes };
  }
  let padded = 0;
  for (const m of a.modules) {
    const S = spectra.get(m.name)!;
    let t: number;
    if (o.kohyaCompat) {
      t = kohyaDynamicRank(S, o.dynamic, o.dynamicParam ?? 0, { ...(o.rank !== undefined ? { cap: o.rank } : {}), scale: m.scale, length: Math.min(m.out, m.in) });
      if (t > m.rank) padded++;
    } else {
      t = cleanDynamicRank(S, o.dynamic!, o.dynamicParam!);
      t = Math.max(t, Math.min(o.minRank, m.rank));
      t = Math.min(t, m.rank, o.rank ?? Infinity);
    }
    ranks.set(m.name, t);
  }
  if (padded) notes.push(`${padded} module(s) get more ranks than they hold under kohya's rule (its +1 on a full spectrum); the extra components are written as zeros (ΔW unchanged; resize_lora.py's are zero singular values)`);
  return { method, ranks, spectra, grams, notes };
}

function outputFormat(o: TruncateOptions, a: Adapter, notes: string[]): OutFormat {
  if (o.to) return o.to;
  if (a.format === "kohya" || a.format === "peft" || a.format === "diffusers") return a.format;
  notes.push(`${a.format} input is written as PEFT (--to kohya|diffusers for another layout)`);
  return "peft";
}

/** Input metadata worth carrying: everything but content hashes, which no longer match. */
function carriedMetadata(meta: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(meta).filter(([k]) => !k.startsWith("sshs_")));
}

interface ModuleOutcome {
  result: ModuleResult;
  route?: string;
}

interface BuildContext {
  o: TruncateOptions;
  a: Adapter;
  be: LinalgBackend;
  method: "svd" | "prefix";
  ranks: Map<string, number>;
  spectra?: Map<string, Float64Array>;
  grams?: Map<string, ModuleGrams>;
  format: OutFormat;
  rsOut: boolean;
  /** SDXL's second text encoder present: kohya stems lora_te1_/lora_te2_. */
  te2: boolean;
  split: SplitMode;
  unit: number;
  onModule?: (done: number, total: number) => void;
  /** Native calls to run side by side (LinalgBackend.withLanes); 1 otherwise. */
  lanes?: number;
}

/** Output dtypes the fused native route writes. */
const FUSED_OUT: readonly DType[] = ["F32", "F16", "BF16"];

function m64(rows: number, cols: number, data: Float32Array | Float64Array): Mat<Float64Array> {
  return { rows, cols, data: toF64(data) };
}

/** Output modules (with lazy `produce`) and the outcomes they fill in as the writer runs them. */
async function buildModules(c: BuildContext): Promise<{ modules: OutModule[]; outcomes: Map<string, ModuleOutcome>; dropped: string[] }> {
  const { o, a, be } = c;
  const outcomes = new Map<string, ModuleOutcome>();
  const modules: OutModule[] = [];
  const dropped: string[] = [];
  let done = 0;
  const total = a.modules.length;
  const tick = () => c.onModule?.(++done, total);
  // Read-ahead: while one module is written, the next modules' bytes are read and (fused route)
  // computed. Routes, fastest first:
  //  - fused (a backend with truncateFactors, svd): raw bytes in, output bytes out, one native call
  //    per module on one thread, `lanes` modules side by side; falls back below when its guards refuse;
  //  - factorStats (svd): only the bytes are read ahead; decode, the NaN/Inf check and the Grams run
  //    natively when the module's turn comes, so that two BLAS calls never compete for the cores;
  //  - otherwise the factors are read and decoded ahead in TS.
  const precisionOf = (m: LoraModule) => (m.A.dtype === "F64" || m.B.dtype === "F64" || c.method === "svd" ? "f64" : "f32");
  const rawAhead = (m: LoraModule) => c.method === "svd" && be.factorStats !== undefined && rawReadable(m);
  const fusedSpec = new Map<LoraModule, { t: number; scaleOut: number; dtype: DType }>();
  const lanes = new Lanes(c.lanes ?? 1);
  const pool = new BufferPool();
  type Ahead = { raw: Promise<RawFactors> } | { factors: Promise<ModuleFactors> } | { fused: Promise<TruncateFactorsResult> };
  const start = (m: LoraModule): Promise<Ahead> => {
    const f = fusedSpec.get(m);
    if (f) {
      const fused = withRawFactors(a, m, pool, (B, A) => lanes.run(() => be.truncateFactors!({
        B, A, scale: m.scale, rank: f.t, scaleOut: f.scaleOut, split: c.split, outDtype: f.dtype as FactorDType,
        ...(c.grams?.has(m.name) ? { grams: c.grams.get(m.name)! } : {}),
      })));
      return Promise.resolve({ fused });
    }
    return Promise.resolve(rawAhead(m) ? { raw: readRawFactors(a, m) } : { factors: c.method === "svd" ? readFactorsWithGrams(a, m, be) : readFactors(a, m, precisionOf(m)) });
  };
  const lazy: LoraModule[] = [];
  let ahead: ReadAhead<LoraModule, Ahead> | null = null;
  const aheadOf = (m: LoraModule): Promise<Ahead> => {
    ahead ??= new ReadAhead(lazy, start, c.lanes ?? 1);
    return ahead.take(m);
  };
  // A module's factors for the general route (what was read ahead, or read now after a fused refusal).
  const factorsOf = (m: LoraModule, got: Ahead): Promise<ModuleFactors | ModuleFactorsGrams> =>
    "fused" in got ? readFactorsWithGrams(a, m, be) : "raw" in got ? readFactorsWithGrams(a, m, be, got.raw) : got.factors;
  for (const m of a.modules) {
    const t = c.ranks.get(m.name)!;
    const S = c.spectra?.get(m.name);
    if (t === 0) {
      dropped.push(m.name);
      const f = await readFactors(a, m, "f64"); // NaN/Inf are refused even in dropped modules
      const norm = S ? Math.hypot(...S) : Math.sqrt((await gramsOf(be, m64(f.B.rows, f.B.cols, f.B.data), m64(f.A.rows, f.A.cols, f.A.data), m.scale)).norm2);
      outcomes.set(m.name, { result: { name: m.name, rank_in: m.rank, rank: 0, relative_error: norm > 0 ? 1 : 0, target_norm: norm, ...(c.method === "svd" ? { retained_energy: S ? retainedEnergy(S, 0) : 0 } : {}) } });
      tick();
      continue;
    }
    const dtype: DType = o.dtype ?? m.A.dtype;
    const kernel = m.A.shape.length > 2 ? m.A.shape.slice(2) : undefined;
    const extras: NonNullable<OutModule["extras"]> = {};
    for (const [role, tensor] of Object.entries(m.extras)) extras[role] = { file: a.file, tensor };
    // Target scale and alpha of the output module.
    let scaleOut: number, alpha: number;
    if (c.method === "prefix") {
      // The input's own rule at rank t (alpha/t, or alpha/√t for rsLoRA), in the output's convention.
      const alphaK = prefixAlpha(m.alpha, m.rank, t, o.alphaMode, c.unit);
      scaleOut = scaleFor(alphaK, t, m.rslora);
      alpha = m.rslora === c.rsOut ? alphaK : alphaForScale(scaleOut, t, c.rsOut);
    } else {
      scaleOut = m.scale !== 0 ? m.scale : 1;
      alpha = alphaForScale(scaleOut, t, c.rsOut);
    }
    const base: Omit<OutModule, "produce" | "rawFactors"> = {
      path: m.path,
      ...(c.format === "kohya" ? { stem: a.format === "kohya" ? m.name : kohyaStemInSet(m.path, c.te2) } : {}),
      kind: m.kind, rank: t, alpha, out: m.out, in: m.in, dtype,
      ...(kernel ? { kernel } : {}),
      extras,
    };
    if (t === m.rank && dtype === m.A.dtype && m.B.dtype === m.A.dtype) {
      // Same rank, same dtype: the factors are copied byte for byte (ΔW exact). Read once for NaN/Inf.
      const f = await readFactors(a, m, "f64");
      const norm = S ? Math.hypot(...S) : Math.sqrt((await gramsOf(be, m64(f.B.rows, f.B.cols, f.B.data), m64(f.A.rows, f.A.cols, f.A.data), m.scale)).norm2);
      const sameScale = Math.abs(scaleFor(alpha, t, c.rsOut) - m.scale) <= 1e-12 * Math.abs(m.scale);
      if (sameScale) {
        modules.push({ ...base, rawFactors: { A: { file: a.file, tensor: m.A }, B: { file: a.file, tensor: m.B } } });
        outcomes.set(m.name, { result: { name: m.name, rank_in: m.rank, rank: t, relative_error: 0, target_norm: norm, alpha, ...(c.method === "svd" ? { retained_energy: 1 } : {}) }, route: "copy" });
        tick();
        continue;
      }
    }
    lazy.push(m);
    if (c.method === "svd" && be.truncateFactors && rawReadable(m) && t <= m.rank && FUSED_OUT.includes(dtype)) fusedSpec.set(m, { t, scaleOut, dtype });
    const produce = async () => {
      const got = await aheadOf(m);
      if ("fused" in got) {
        const r = await got.fused;
        if (r.kind === "non-finite") throw nonFiniteFactor(a, m, r);
        if (r.kind === "done") {
          outcomes.set(m.name, {
            result: { name: m.name, rank_in: m.rank, rank: t, ...errorReport(r.norm2, Math.max(0, r.err2) + r.resid2), alpha, retained_energy: retainedEnergy(S ?? r.S, t) },
            route: "gram",
          });
          tick();
          return { A: r.A, B: r.B };
        }
        // refused by the Gram route's guards: the general route below, from the factors
      }
      const f = await factorsOf(m, got);
      const B = m64(f.B.rows, f.B.cols, f.B.data), A = m64(f.A.rows, f.A.cols, f.A.data);
      let Bo: Float32Array | Float64Array, Ao: Float32Array | Float64Array, route: string, energy: number | undefined;
      let err: { relative_error: number; target_norm: number };
      if (c.method === "prefix") {
        const p = prefixFactors(f.B, f.A, t);
        Bo = roundForDtype(dtype, p.B.data);
        Ao = roundForDtype(dtype, p.A.data);
        const grams = await gramsOf(be, B, A, m.scale);
        err = await relativeErrorFromFactors(be, B, A, m.scale, grams, m64(m.out, t, Bo), m64(t, m.in, Ao), scaleFor(alpha, t, c.rsOut));
        route = "prefix";
      } else {
        const grams = "GB" in f ? gramsFrom(f.GB, f.GA, m.rank, m.scale) : undefined;
        const r = await truncateModule(be, B, A, m.scale, t, scaleOut, c.split, grams);
        Bo = roundForDtype(dtype, r.B.data);
        Ao = roundForDtype(dtype, r.A.data);
        // The rounded factors' error from the spectrum and the rounding residual (svd.ts): no third pass over B and A.
        err = await truncationError(be, r.B, r.A, m64(m.out, t, Bo), m64(t, m.in, Ao), scaleOut, r.err2, r.grams.norm2);
        route = r.route;
        energy = retainedEnergy(S ?? r.S, t);
      }
      outcomes.set(m.name, {
        result: { name: m.name, rank_in: m.rank, rank: t, relative_error: err.relative_error, target_norm: err.target_norm, alpha, ...(energy !== undefined ? { retained_energy: energy } : {}) },
        route,
      });
      tick();
      return { A: Ao, B: Bo };
    };
    modules.push({ ...base, produce });
  }
  return { modules, outcomes, dropped };
}

function kohyaComment(o: TruncateOptions, a: Adapter, method: "svd" | "prefix", maxRank: number, rank: number): string {
  const prev = a.metadata["ss_training_comment"] ?? "";
  const from = a.metadata["ss_network_dim"] ?? String(maxRank);
  if (method === "prefix") return a.dylora ? `split from DyLoRA, rank ${maxRank} to ${rank}; ${prev}` : `prefix-truncated from rank ${maxRank} to ${rank}; ${prev}`;
  if (o.dynamic) return `Dynamic resize with ${o.dynamic}: ${o.dynamicParam} from ${from}; ${prev}`;
  if (o.rank !== undefined) return `dimension is resized from ${from} to ${o.rank}; ${prev}`;
  return `resized by lora truncate (${o.energy !== undefined ? `--energy ${o.energy}` : `--budget ${o.budget} --score ${o.score}`}) from ${from}; ${prev}`;
}

async function writeOne(c: BuildContext, output: string, notes: string[], deps: TruncateDeps, kohyaRank: number): Promise<WriteReport> {
  // The fused route runs modules side by side, each on one BLAS thread (linalg/types.ts withLanes).
  if (c.method === "svd" && c.be.truncateFactors && c.be.withLanes) return c.be.withLanes((lanes) => writeOneWith({ ...c, lanes }, output, notes, deps, kohyaRank));
  return writeOneWith(c, output, notes, deps, kohyaRank);
}

async function writeOneWith(c: BuildContext, output: string, notes: string[], deps: TruncateDeps, kohyaRank: number): Promise<WriteReport> {
  const { o, a } = c;
  const { modules, outcomes, dropped } = await buildModules(c);
  if (modules.length === 0) throw new UsageError("these options remove every module; nothing would be left to write");
  const maxRank = Math.max(...a.modules.map((m) => m.rank));
  const out: AdapterOutput = {
    format: c.format,
    modules,
    passthrough: a.passthrough.map((t) => ({ file: a.file, tensor: t })),
    baseConfig: a.config,
    metadata: carriedMetadata(a.metadata),
    keepTargetModules: a.format === c.format && c.format !== "kohya" && dropped.length === 0,
    ...(c.format === "kohya" ? { extraMetadata: { ss_training_comment: kohyaComment(o, a, c.method, maxRank, kohyaRank) } } : {}),
  };
  await writeAdapter(output, out, { force: o.force, inputs: o.input === "-" ? [] : [o.input], ...(deps.stdout ? { stdout: deps.stdout } : {}) });
  const results = a.modules.map((m) => outcomes.get(m.name)!.result);
  const totals = totalsOf(results);
  const params = (pick: (m: LoraModule, r: ModuleResult) => number) => a.modules.reduce((s, m, i) => s + pick(m, results[i]!) * (m.in + m.out), 0);
  const routes = [...outcomes.values()].map((x) => x.route);
  const house = routes.filter((r) => r === "householder").length;
  const allNotes = [...notes];
  if (house) allNotes.push(`${house} module(s) were too ill-conditioned for the Gram route and were computed by Householder QR`);
  let retained: number | undefined;
  if (c.spectra) {
    let kept = 0, tot = 0;
    for (const m of a.modules) {
      const S = c.spectra.get(m.name)!;
      const t = c.ranks.get(m.name)!;
      S.forEach((x, i) => { tot += x * x; if (i < t) kept += x * x; });
    }
    retained = tot > 0 ? kept / tot : 1;
  }
  return {
    command: "truncate",
    method: c.method,
    inputs: [o.input],
    output,
    format: c.format,
    selection: {
      ...(o.unit !== undefined ? { unit: o.unit } : {}),
      ...(o.rank !== undefined || o.unit !== undefined ? { rank: o.rank ?? kohyaRank } : {}),
      ...(o.energy !== undefined ? { energy: o.energy } : {}),
      ...(o.budget !== undefined ? { budget: o.budget, score: o.score, min_rank: o.minRank, ...(o.score === "ratio" ? { rho: o.rho } : {}) } : {}),
      ...(o.dynamic !== undefined ? { dynamic: o.dynamic, dynamic_param: o.dynamicParam, kohya_compat: o.kohyaCompat } : {}),
      ...(c.method === "svd" ? { split: c.split } : { alpha_mode: o.alphaMode }),
    },
    ...(retained !== undefined ? { retained_energy: retained } : {}),
    modules: results,
    dropped,
    totals: { ...totals, params_in: params((m) => m.rank), params: params((_m, r) => r.rank) },
    notes: allNotes,
  };
}

export async function runTruncate(o: TruncateOptions, deps: TruncateDeps): Promise<TruncateResult> {
  checkOptions(o);
  const a = await loadAdapter(o.input, deps.stdin ? { stdin: deps.stdin } : {});
  try {
    if (isDora(a)) {
      throw new InvalidInputError(`${o.input}: DoRA adapter (lora_magnitude_vector / use_dora): truncating its factors would leave the magnitude vector normalising a different direction, and the base weights needed to recompute it are not in the file`, {
        hint: "merge the DoRA adapter into the base model with PEFT (merge_and_unload) instead",
      });
    }
    const gated = a.modules.find((m) => "gate" in m.extras);
    if (gated) {
      throw new InvalidInputError(`${o.input}: module "${gated.name}" has a SoRA gate; truncating the factors would detach it`, { hint: "fold the gate first with lora prune --method sora" });
    }
    const p = await plan(o, a, deps.backend);
    const notes = [...a.notes.filter((n) => !(p.notes.length && n.startsWith("kohya DyLoRA"))), ...p.notes];
    const format = outputFormat(o, a, notes);
    const rsOut = format !== "kohya" && a.config?.["use_rslora"] === true;
    const split: SplitMode = o.split ?? (o.kohyaCompat ? "all-in-up" : "balanced");
    const unit = o.unit ?? a.dylora?.unit ?? (o.alphaMode === "lycoris" ? 4 : 1);
    if (o.alphaMode === "lycoris" && o.unit === undefined && !a.dylora) notes.push("--alpha-mode lycoris: block_size 4 assumed (LyCORIS's default; --unit sets it)");
    const te2 = hasTextEncoder2(a.modules.map((m) => m.path));
    const ctx: BuildContext = { o, a, be: deps.backend, method: p.method, ranks: p.ranks, format, rsOut, te2, split, unit, ...(p.spectra ? { spectra: p.spectra } : {}), ...(p.grams ? { grams: p.grams } : {}), ...(deps.onModule ? { onModule: deps.onModule } : {}) };
    if (o.unit === undefined) return await writeOne(ctx, o.output, notes, deps, o.rank ?? 0);
    // --unit: every multiple of the unit below the full rank, one file each (kohya's naming).
    const maxRank = Math.max(...a.modules.map((m) => m.rank));
    const ranks = splitRanks(maxRank, o.unit);
    if (ranks.length === 0) throw new UsageError(`--unit ${o.unit} leaves no rank below the full rank ${maxRank}; nothing to split`);
    const targets = ranks.map((r) => splitPath(o.output, r));
    if (!o.force) {
      const there = targets.filter((t) => existsSync(t));
      if (there.length) throw new UsageError(`${there[0]} already exists (of ${targets.length} split outputs); pass --force to overwrite`);
    }
    const outputs: WriteReport[] = [];
    for (let i = 0; i < ranks.length; i++) {
      const R = ranks[i]!;
      const sub: BuildContext = { ...ctx, ranks: new Map(a.modules.map((m) => [m.name, Math.min(R, m.rank)])) };
      outputs.push(await writeOne(sub, targets[i]!, notes, deps, R));
    }
    return { command: "truncate", method: "prefix", unit: o.unit, inputs: [o.input], outputs };
  } finally {
    await a.file.close();
  }
}
