// The second pass of lora truncate: one output module per input module, each with a lazy
// `produce` that the writer calls in file order. A module keeps its factors byte for byte (same
// rank and dtype), is removed (rank 0), or gets new factors: svd by the backend's truncateFactors
// (linalg/types.ts) or truncate.ts's general route, prefix by prefix.ts. Each fills in its report
// row (relative error of the factors as written, retained energy).
import {
  alphaForScale,
  nonFiniteFactor,
  rawReadable,
  readFactors,
  scaleFor,
  type Adapter,
  type LoraModule,
  type ModuleFactors,
} from "../../formats/adapter/index.js";
import type { OutModule } from "../../formats/adapter/write.js";
import type { DType } from "../../formats/safetensors/index.js";
import type { SplitMode } from "../../linalg/lowrank.js";
import {
  errorReport,
  gramsFrom,
  gramsOf,
  relativeErrorFromFactors,
  retainedEnergy,
  roundForDtype,
  toF64,
  truncateModule,
  truncationError,
} from "../../linalg/truncate.js";
import type { FactorDType, LinalgBackend, Mat, ModuleGrams, TruncateFactorsResult } from "../../linalg/types.js";
import { BufferPool } from "../../common/buffer-pool.js";
import { readFactorsWithGrams, type ModuleFactorsGrams } from "../factors.js";
import { withRawFactors } from "../raw-factors.js";
import type { ModuleResult } from "../report.js";
import { Lanes, ReadAhead } from "../schedule.js";
import type { OutFormat, TruncateOptions } from "./options.js";
import { familyTruncation, hasFamilyTruncation } from "./family.js";
import { outFields } from "./out-fields.js";
import { prefixAlpha, prefixFactors } from "./prefix.js";

export interface ModuleOutcome {
  result: ModuleResult;
  route?: string;
}

export interface BuildContext {
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
  /** Fused calls to run side by side (LinalgBackend.withLanes). */
  lanes?: number;
}

/** Output dtypes the fused route writes. */
const FUSED_OUT: readonly DType[] = ["F32", "F16", "BF16"];

function m64(rows: number, cols: number, data: Float32Array | Float64Array): Mat<Float64Array> {
  return { rows, cols, data: toF64(data) };
}

/**
 * ‖s·B·A‖_F of a module kept whole or removed: from its spectrum when the plan has one (that pass
 * refused NaN/Inf factors), else from its factors, read once here to refuse NaN/Inf: by the
 * backend's factorSpectrum from the stored bytes where it can (decoded and multiplied off the main
 * thread), else decoded here.
 */
async function moduleNorm(c: BuildContext, m: LoraModule, S: Float64Array | undefined, pool: BufferPool): Promise<number> {
  if (S?.every(Number.isFinite)) return Math.hypot(...S);
  if (rawReadable(m)) {
    const r = await withRawFactors(c.a, m, pool, (B, A) => c.be.factorSpectrum({ B, A, scale: m.scale }));
    if (r.kind === "non-finite") throw nonFiniteFactor(c.a, m, r);
    if (r.kind === "done") return S ? Math.hypot(...S) : Math.sqrt(r.norm2);
  }
  const f = await readFactors(c.a, m, "f64");
  return S ? Math.hypot(...S) : Math.sqrt((await gramsOf(c.be, m64(f.B.rows, f.B.cols, f.B.data), m64(f.A.rows, f.A.cols, f.A.data), m.scale)).norm2);
}

/** Output modules (with lazy `produce`) and the outcomes they fill in as the writer runs them. */
export async function buildModules(
  c: BuildContext,
): Promise<{ modules: OutModule[]; outcomes: Map<string, ModuleOutcome>; dropped: string[]; settled: () => Promise<void> }> {
  const { o, a, be } = c;
  const outcomes = new Map<string, ModuleOutcome>();
  const modules: OutModule[] = [];
  const dropped: string[] = [];
  let done = 0;
  const total = a.modules.length;
  const tick = () => c.onModule?.(++done, total);
  // Read-ahead: while one module is written, the next modules' bytes are read and computed. Two
  // routes: the fused one (svd into F32/F16/BF16 from raw-readable factors: raw bytes in, output
  // bytes out, one backend call per module, `lanes` modules side by side), and the general one
  // (factors decoded, then truncate.ts; prefix; and a module the fused route's guards refused).
  const precisionOf = (m: LoraModule) => (m.A.dtype === "F64" || m.B.dtype === "F64" || c.method === "svd" ? "f64" : "f32");
  const fusedSpec = new Map<LoraModule, { t: number; scaleOut: number; dtype: DType }>();
  const lanes = new Lanes(c.lanes ?? 1);
  const pool = new BufferPool();
  type Ahead = { factors: Promise<ModuleFactors | ModuleFactorsGrams> } | { fused: Promise<TruncateFactorsResult> };
  // Work started and not yet settled (native calls among it), awaited by settled() before the lanes end.
  const running = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    running.add(p);
    const forget = () => running.delete(p);
    p.then(forget, forget);
    return p;
  };
  const start = (m: LoraModule): Promise<Ahead> => {
    const f = fusedSpec.get(m);
    if (f) {
      const fused = track(
        withRawFactors(a, m, pool, (B, A) =>
          lanes.run(() =>
            be.truncateFactors({
              B,
              A,
              scale: m.scale,
              rank: f.t,
              scaleOut: f.scaleOut,
              split: c.split,
              outDtype: f.dtype as FactorDType,
              ...(c.grams?.has(m.name) ? { grams: c.grams.get(m.name)! } : {}),
            }),
          ),
        ),
      );
      return Promise.resolve({ fused });
    }
    return Promise.resolve({ factors: track(c.method === "svd" ? readFactorsWithGrams(a, m, be) : readFactors(a, m, precisionOf(m))) });
  };
  const lazy: LoraModule[] = [];
  let ahead: ReadAhead<LoraModule, Ahead> | null = null;
  const aheadOf = (m: LoraModule): Promise<Ahead> => {
    ahead ??= new ReadAhead(lazy, start, c.lanes ?? 1);
    return ahead.take(m);
  };
  // A module's factors for the general route (what was read ahead, or read now after a fused refusal).
  const factorsOf = (m: LoraModule, got: Ahead): Promise<ModuleFactors | ModuleFactorsGrams> => ("fused" in got ? readFactorsWithGrams(a, m, be) : got.factors);
  for (const m of a.modules) {
    const t = c.ranks.get(m.name)!;
    const S = c.spectra?.get(m.name);
    if (c.method === "svd" && hasFamilyTruncation(m)) {
      // A family with its own optimal truncation (LoKr): its exact factors are never formed (family.ts).
      const out = await familyTruncation(c, m, t, outcomes, tick);
      if (out) modules.push(out);
      else dropped.push(m.name);
      continue;
    }
    if (t === 0) {
      dropped.push(m.name);
      const norm = await moduleNorm(c, m, S, pool); // NaN/Inf are refused even in dropped modules
      outcomes.set(m.name, {
        result: {
          name: m.name,
          rank_in: m.rank,
          rank: 0,
          relative_error: norm > 0 ? 1 : 0,
          target_norm: norm,
          ...(c.method === "svd" ? { retained_energy: S ? retainedEnergy(S, 0) : 0 } : {}),
        },
      });
      tick();
      continue;
    }
    // A derived module (its factors computed in F64 on read) is written in the dtype the file stores it in.
    const dtype: DType = o.dtype ?? m.family?.dtype ?? m.A.dtype;
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
    const base = outFields(c, m, t, alpha, dtype, extras);
    if (t === m.rank && dtype === m.A.dtype && m.B.dtype === m.A.dtype) {
      // Same rank, same dtype: the factors are copied byte for byte (ΔW exact).
      const norm = await moduleNorm(c, m, S, pool);
      const sameScale = Math.abs(scaleFor(alpha, t, c.rsOut) - m.scale) <= 1e-12 * Math.abs(m.scale);
      if (sameScale) {
        modules.push({ ...base, rawFactors: { A: { file: a.file, tensor: m.A }, B: { file: a.file, tensor: m.B } } });
        outcomes.set(m.name, {
          result: {
            name: m.name,
            rank_in: m.rank,
            rank: t,
            relative_error: 0,
            target_norm: norm,
            alpha,
            ...(c.method === "svd" ? { retained_energy: 1 } : {}),
          },
          route: "copy",
        });
        tick();
        continue;
      }
    }
    lazy.push(m);
    if (c.method === "svd" && rawReadable(m) && t <= m.rank && FUSED_OUT.includes(dtype)) fusedSpec.set(m, { t, scaleOut, dtype });
    const produce = async () => {
      const got = await aheadOf(m);
      if ("fused" in got) {
        const r = await got.fused;
        if (r.kind === "non-finite") throw nonFiniteFactor(a, m, r);
        if (r.kind === "done") {
          outcomes.set(m.name, {
            result: {
              name: m.name,
              rank_in: m.rank,
              rank: t,
              ...errorReport(r.norm2, Math.max(0, r.err2) + r.resid2),
              alpha,
              retained_energy: retainedEnergy(S ?? r.S, t),
            },
            route: "gram",
          });
          tick();
          return { A: r.A, B: r.B };
        }
        // refused by the Gram route's guards: the general route below, from the factors
      }
      const f = await factorsOf(m, got);
      const B = m64(f.B.rows, f.B.cols, f.B.data),
        A = m64(f.A.rows, f.A.cols, f.A.data);
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
        // The rounded factors' error from the spectrum and the rounding residual (linalg/truncate.ts): no third pass over B and A.
        err = await truncationError(be, r.B, r.A, m64(m.out, t, Bo), m64(t, m.in, Ao), scaleOut, r.err2, r.grams.norm2);
        route = r.route;
        energy = retainedEnergy(S ?? r.S, t);
      }
      outcomes.set(m.name, {
        result: {
          name: m.name,
          rank_in: m.rank,
          rank: t,
          relative_error: err.relative_error,
          target_norm: err.target_norm,
          alpha,
          ...(energy !== undefined ? { retained_energy: energy } : {}),
        },
        route,
      });
      tick();
      return { A: Ao, B: Bo };
    };
    modules.push({ ...base, produce });
  }
  const settled = async () => {
    await Promise.allSettled([...running]);
  };
  return { modules, outcomes, dropped, settled };
}
