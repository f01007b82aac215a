// prune --method sora (docs/algorithms.md §4.1): a SoRA module computes ΔW = s·B·diag(g)·A with
// s = lora_alpha / r_max. Ranks whose gate is |g_i| ≤ T (default 0: exactly-zero gates) are
// removed, the gate is folded into B (default), A, or split evenly (B·√|g|, sign(g)·√|g|·A), and
// the module is written as a standard LoRA of rank r' = #kept with alpha' = s·r' (s·√r' under
// rsLoRA), so ΔW is unchanged at T = 0. Modules with no rank left are dropped.
import { alphaForScale, readFactors, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import type { OutModule } from "../../formats/adapter/write.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { decodeToFloat64, encodeFloats, type DType } from "../../formats/safetensors/index.js";
import { lowRankNorm, relativeError, type LowRankTerm } from "../../linalg/lowrank.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { ModuleResult } from "../report.js";
import { kernelOf } from "../kernels.js";

export type FoldSide = "B" | "A" | "balanced";

export interface SoraOptions {
  threshold: number;
  /** lora_alpha to use where no config says (default 16), or to override the config. */
  loraAlpha?: number;
  fold: FoldSide;
  /** The output format's rsLoRA flag (PEFT with use_rslora), which decides alpha'. */
  rsloraOut: boolean;
}

/** Indices i with |g_i| > threshold (threshold 0: the non-zero gates). */
export function keptRanks(g: ArrayLike<number>, threshold: number): number[] {
  const keep: number[] = [];
  for (let i = 0; i < g.length; i++) if (Math.abs(g[i]!) > threshold) keep.push(i);
  return keep;
}

/**
 * Fold the gate into the kept factors. B is out×r, A is r×in (row-major); returns B' out×r',
 * A' r'×in with B'·A' = B[:, keep]·diag(g[keep])·A[keep, :].
 */
export function foldGate(
  B: ArrayLike<number>,
  A: ArrayLike<number>,
  out: number,
  inF: number,
  r: number,
  g: ArrayLike<number>,
  keep: readonly number[],
  side: FoldSide,
): { B: Float64Array; A: Float64Array } {
  const k = keep.length;
  const Bp = new Float64Array(out * k),
    Ap = new Float64Array(k * inF);
  for (let c = 0; c < k; c++) {
    const i = keep[c]!,
      gi = g[i]!;
    const bf = side === "B" ? gi : side === "A" ? 1 : Math.sqrt(Math.abs(gi));
    const af = side === "A" ? gi : side === "B" ? 1 : Math.sign(gi) * Math.sqrt(Math.abs(gi));
    for (let row = 0; row < out; row++) Bp[row * k + c] = B[row * r + i]! * bf;
    for (let j = 0; j < inF; j++) Ap[c * inF + j] = A[i * inF + j]! * af;
  }
  return { B: Bp, A: Ap };
}

/** The values a dtype actually stores (what PEFT will load), for the error report. */
function stored(dtype: DType, v: Float64Array): Float64Array {
  return decodeToFloat64(dtype, encodeFloats(dtype, v));
}

export interface SoraPlanned {
  out: OutModule[];
  results: ModuleResult[];
  dropped: string[];
  notes: string[];
  /** Per module gate statistics for the report. */
  gates: { name: string; total: number; kept: number; zero: number }[];
}

/** Whether the adapter's config fixes lora_alpha (else SoRA's default or --lora-alpha applies). */
export function configHasAlpha(a: Adapter): boolean {
  return !!a.config && (a.config["lora_alpha"] !== undefined || a.config["alpha_pattern"] !== undefined);
}

async function gateOf(a: Adapter, m: LoraModule): Promise<Float64Array> {
  const t = m.extras["gate"];
  if (!t) return new Float64Array(m.rank).fill(1);
  const g = await a.file.readFloat64(t);
  for (let i = 0; i < g.length; i++) {
    if (!Number.isFinite(g[i]!)) throw new InvalidInputError(`${a.source}: SoRA gate ${t.name} holds ${g[i]} at element ${i}; gates must be finite`);
  }
  return g;
}

/**
 * Plan pass: read every module's gate and factors (checking them), decide the kept ranks, and
 * compute the relative error of the result against the input ΔW. The write pass recomputes the
 * folded factors in `produce`, one module at a time.
 */
export async function planSora(a: Adapter, o: SoraOptions, be: LinalgBackend, onModule?: (i: number, n: number) => void): Promise<SoraPlanned> {
  const notes: string[] = [];
  if (!a.modules.some((m) => m.extras["gate"])) {
    throw new InvalidInputError(
      `${a.source}: no SoRA gate tensors (<module>.lora.gate, or <module>.lora_gate beside PEFT factors); --method sora needs a SoRA checkpoint`,
      { hint: "for a plain adapter use --method modules, or lora truncate" },
    );
  }
  const fromConfig = configHasAlpha(a);
  if (fromConfig && o.loraAlpha !== undefined) notes.push(`--lora-alpha ${o.loraAlpha} overrides the config's lora_alpha`);
  const res: SoraPlanned = { out: [], results: [], dropped: [], notes, gates: [] };
  let i = 0;
  for (const m of a.modules) {
    const g = await gateOf(a, m);
    const f = await readFactors(a, m, "f64");
    const useConfig = fromConfig && o.loraAlpha === undefined;
    const alphaIn = useConfig ? m.alpha : (o.loraAlpha ?? m.alpha);
    const rsIn = useConfig && m.rslora;
    const s = useConfig ? m.scale : alphaIn / m.rank;
    const keep = keptRanks(g, o.threshold);
    const r = m.rank;
    // target ΔW = s·(B·diag(g))·A
    const Bg = new Float64Array(m.out * r);
    for (let row = 0; row < m.out; row++) for (let c = 0; c < r; c++) Bg[row * r + c] = f.B.data[row * r + c]! * g[c]!;
    const target = [{ B: { rows: m.out, cols: r, data: Bg }, A: f.A as { rows: number; cols: number; data: Float64Array }, scale: s }];
    const zero = g.reduce((n, x) => n + (x === 0 ? 1 : 0), 0);
    res.gates.push({ name: m.name, total: r, kept: keep.length, zero });
    if (keep.length === 0) {
      const err = await relativeError(be, target, []);
      res.results.push({
        name: m.name,
        rank_in: r,
        rank: 0,
        relative_error: Number.isFinite(err) ? err : 1,
        target_norm: await normOf(be, target),
        gates_kept: 0,
        gates_total: r,
      });
      res.dropped.push(m.name);
      onModule?.(++i, a.modules.length);
      continue;
    }
    const dtype = m.A.dtype;
    const folded = foldGate(f.B.data, f.A.data, m.out, m.in, r, g, keep, o.fold);
    const k = keep.length;
    // alpha' with s' = s: alpha·k/r_max (exact when r_max divides alpha·k), or s·√k under rsLoRA
    const alpha = o.rsloraOut || rsIn ? alphaForScale(s, k, o.rsloraOut) : (alphaIn * k) / r;
    const sOut = o.rsloraOut ? alpha / Math.sqrt(k) : alpha / k;
    const approx = [{ B: { rows: m.out, cols: k, data: stored(dtype, folded.B) }, A: { rows: k, cols: m.in, data: stored(dtype, folded.A) }, scale: sOut }];
    const err = await relativeError(be, target, approx);
    res.results.push({
      name: m.name,
      rank_in: r,
      rank: k,
      relative_error: Number.isFinite(err) ? err : 1,
      target_norm: await normOf(be, target),
      gates_kept: k,
      gates_total: r,
      alpha,
      scale: sOut,
    });
    const kernel = kernelOf(m.A.shape);
    const extras: NonNullable<OutModule["extras"]> = {};
    for (const [role, t] of Object.entries(m.extras)) if (role !== "gate") extras[role] = { file: a.file, tensor: t };
    res.out.push({
      path: m.path,
      kind: m.kind,
      rank: k,
      alpha,
      out: m.out,
      in: m.in,
      dtype,
      ...(kernel ? { kernel } : {}),
      ...(a.format === "kohya" ? { stem: m.name } : {}),
      extras,
      produce: async () => {
        const ff = await readFactors(a, m, "f64");
        const gg = await gateOf(a, m);
        return foldGate(ff.B.data, ff.A.data, m.out, m.in, r, gg, keep, o.fold);
      },
    });
    onModule?.(++i, a.modules.length);
  }
  if (res.out.length === 0) {
    // Nothing left (docs/cli.md "Exit codes"): the input's fault when every gate is zero (exit 3),
    // the options' when --threshold drops gates that are not (exit 2, as truncate and prune modules).
    if (res.gates.every((g) => g.zero === g.total)) throw new InvalidInputError(`${a.source}: every gate is zero; no rank is left to write`);
    throw new UsageError(
      `--threshold ${o.threshold} drops every rank of ${a.source} (every gate is at most ${o.threshold} in magnitude); nothing would be left to write`,
      {
        hint: "lower --threshold",
      },
    );
  }
  return res;
}

async function normOf(be: LinalgBackend, terms: LowRankTerm[]): Promise<number> {
  return terms[0]!.A.rows > 0 ? lowRankNorm(be, terms) : 0;
}
