// lora merge: N adapters → one, per module, by one of ten methods (one file each). Inputs may
// differ in rank, alpha, rsLoRA, rank/alpha patterns and target modules; PEFT and kohya inputs
// pair by matchKey (formats/adapter/names.ts). A module held by only some inputs is merged from
// those (the others' weights taken as 0). The target of every method is T = Σ wᵢ·ΔWᵢ with
// ΔWᵢ = sᵢ·Bᵢ·Aᵢ (docs/cli.md "merge"; for lego the weights are k-means sample weights, and T is still what
// the error is measured against). Output: the first input's format (or --to), scale folded
// (alpha = rank), written by formats/adapter/write.ts; per module the output rank and
// ‖ΔW_out − T‖_F/‖T‖_F computed from the factors as written (after rounding to the output dtype).
//
// Two passes (plan, then write): the plan loads every input, pairs modules,
// checks everything that can refuse the merge (DoRA, extras, shapes, passthrough conflicts, k >
// units, fair's equal ranks, ffa's shared A) so that a refusal writes nothing; the write pass
// computes one module at a time inside the writer's lazy `produce`.
import { isDora, loadAdapter, refuseBaseDependent, refuseExperts, type Adapter } from "../../formats/adapter/index.js";
import { writeAdapter, type AdapterOutput, type OutModule } from "../../formats/adapter/write.js";
import type { PeftConfig } from "../../formats/adapter/peft-config.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { encodeFloatsWithResidual } from "../../formats/safetensors/index.js";
import { firstNonFinite } from "../../common/dtype.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { totalsOf, type ModuleResult, type WriteReport } from "../../surgery/report.js";
import { errorOf, mergeModule, rounded, roundingErrorOf, type ErrorReport } from "../../surgery/merge/module.js";
import { label, pairModules, planRanks, readTerms, resolvePassthrough } from "../../surgery/merge/plan.js";
import type { MergeMethod, MergeOptions } from "../../surgery/merge/types.js";
import { ReadAhead } from "../../surgery/schedule.js";
export { MERGE_DEFAULTS } from "./methods.js";
export type { MergeMethod, MergeOptions };

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

const METHOD_NOTES: Partial<Record<MergeMethod, (o: MergeOptions) => string>> = {
  linear: () => "linear is PEFT's factor-wise weighted average (B' = Σ√(w·s)B, A' = Σ√(w·s)A): an approximation with cross terms, reported error shows how far",
  ties: (o) => tiesNote(o),
  dare_ties: (o) => tiesNote(o),
  lego: (o) =>
    `lego: k-means (k-means++, n_init ${o.nInit}, max_iter ${o.maxIter}, tol ${o.tol}, seed ${o.seed}) on rank units with √s folded in; weights are sample weights; parameter reweighting ${o.paramReweight ? `on (L${o.paramNorm === "inf" ? "∞" : "2"})` : "off"}, output reweighting ${o.outputReweight ? "on" : "off"}${o.signCanonicalize ? ", signs canonicalised" : ""}`,
};

function tiesNote(o: MergeOptions): string {
  return o.tiesMode === "peft"
    ? `--ties-mode peft: sign elected on the unweighted pruned ΔW (${o.majoritySign === "total" ? "sign of the sum" : "majority of signs"}), disjoint mean over the count of agreeing entries (PEFT merge_utils)`
    : `--ties-mode mergekit: sign elected on the weighted pruned ΔW (${o.majoritySign === "total" ? "sum" : "count"}), ${o.method === "ties" ? "normalised by Σ w over agreeing entries" : "not normalised"} (mergekit generalized task arithmetic)`;
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

/** Methods whose modules are merged ahead of the writer, side by side (runMerge). */
const AHEAD_METHODS: ReadonlySet<MergeMethod> = new Set<MergeMethod>(["cat", "linear", "svd"]);

export async function runMerge(o: MergeOptions, deps: MergeDeps): Promise<MergeReport> {
  const weights = checkOptions(o);
  const be = deps.backend;
  const adapters: Adapter[] = [];
  try {
    for (const input of o.inputs) adapters.push(await loadAdapter(input, deps.stdin ? { stdin: deps.stdin } : {}));
    for (const a of adapters) {
      refuseBaseDependent(a, "merge");
      refuseExperts(a, "merge");
      if (isDora(a)) {
        throw new InvalidInputError(
          `${label(a.source)}: DoRA adapter; merging changes the factors and the magnitude vector cannot be kept right without the base weights`,
          { hint: "merge DoRA adapters into the base model with PEFT instead" },
        );
      }
    }
    const notes: string[] = [];
    const groups = pairModules(adapters, weights);
    const passthrough = await resolvePassthrough(adapters, o.passthrough);
    if (passthrough.conflicts.length) {
      notes.push(
        `${passthrough.conflicts.length} passthrough tensor(s) differ between inputs: ${o.passthrough === "first" ? "kept the first input's" : "dropped"} (${passthrough.conflicts.slice(0, 3).join(", ")}${passthrough.conflicts.length > 3 ? ", …" : ""})`,
      );
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
    /** Modules whose target cancelled to rounding level (reported as 0), with their ‖ΔW_out − T‖. */
    const cancelled = new Map<ModuleResult, number>();
    let done = 0;
    const mergeOne = async (g: (typeof live)[number]): Promise<{ A: Uint8Array; B: Uint8Array }> => {
      const terms = await readTerms(adapters, g, weights);
      const res = await mergeModule(be, terms, g, o);
      if (res.A.rows !== g.rank || res.B.cols !== g.rank)
        throw new Error(`internal: ${o.method} produced rank ${res.A.rows} for module ${g.name}, planned ${g.rank}`);
      // A value past the dtype's range is written as ±Inf: refused, naming the module (exit 3).
      const refuseOverflow = (b: { A: Uint8Array; B: Uint8Array }) => {
        if (firstNonFinite(g.dtype, b.B) >= 0 || firstNonFinite(g.dtype, b.A) >= 0)
          throw new InvalidInputError(
            `module ${g.name}: the merged factors do not fit in ${g.dtype} (a value overflows to ±Inf); lower the --weights or merge adapters stored in F32`,
          );
      };
      const target = terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale }));
      let bytes: { A: Uint8Array; B: Uint8Array }, err: ErrorReport;
      if (res.written) {
        bytes = res.written;
        refuseOverflow(bytes);
        err = res.written;
      } else if (res.exact) {
        // Exact merges: the error is what rounding to the dtype did (an infinite residual: overflow).
        const Br = encodeFloatsWithResidual(g.dtype, res.B.data),
          Ar = encodeFloatsWithResidual(g.dtype, res.A.data);
        bytes = { A: Ar.bytes, B: Br.bytes };
        refuseOverflow(bytes);
        err = await roundingErrorOf(be, target, res, { A: Ar.residual, B: Br.residual });
      } else {
        const Ar = rounded(g.dtype, res.A.data),
          Br = rounded(g.dtype, res.B.data);
        bytes = { A: Ar.bytes, B: Br.bytes };
        refuseOverflow(bytes);
        err = await errorOf(be, target, { A: { ...res.A, data: Ar.values }, B: { ...res.B, data: Br.values } });
      }
      const rankIn = adapters.map((_, i) => g.members.find((m) => m.input === i)?.module.rank ?? 0);
      // relative_error Infinity (T at rounding level, the output not) is null in the JSON report.
      const mr: ModuleResult = { name: g.name, rank_in: rankIn, rank: g.rank, relative_error: err.rel, target_norm: err.norm };
      if (err.cancelled) cancelled.set(mr, err.diff);
      const det = { ...(res.details ?? {}) };
      delete det["labels"];
      if (typeof det["retained_energy"] === "number") {
        // a share of a target that is rounding noise means nothing: left out then
        if (!err.cancelled) mr.retained_energy = det["retained_energy"];
        delete det["retained_energy"];
      }
      if (g.ffaDeviation !== undefined) Object.assign(det, { shared_a_deviation: g.ffaDeviation, projected: !g.ffaShared });
      Object.assign(mr, det);
      results.set(g.key, mr);
      deps.onModule?.(++done, live.length);
      return bytes;
    };
    const first = adapters[0]!;
    const write = (produce: (g: (typeof live)[number]) => Promise<{ A: Uint8Array; B: Uint8Array }>) => {
      const modules: OutModule[] = live.map((g) => ({
        path: g.path,
        ...(format === "kohya" && g.stem !== undefined ? { stem: g.stem } : {}),
        kind: g.kind,
        rank: g.rank,
        alpha: g.rank,
        out: g.out,
        in: g.in,
        dtype: g.dtype,
        ...(g.kernel ? { kernel: g.kernel } : {}),
        produce: () => produce(g),
      }));
      const out: AdapterOutput = {
        format,
        modules,
        passthrough: passthrough.kept.map(({ input, tensor }) => ({ file: adapters[input]!.file, tensor })),
        baseConfig: baseConfigOf(first),
        metadata: first.metadata,
        extraMetadata: { lora_merge: provenance(o, weights) },
      };
      return writeAdapter(o.output, out, {
        force: o.force,
        inputs: o.inputs.filter((x) => x !== "-"),
        ...(deps.stdout ? { stdout: deps.stdout } : {}),
      });
    };
    // The factor-space methods merge the next modules while one is written, side by side on
    // single-threaded BLAS lanes (one module's JS runs while another's products run in the pool).
    // The dense methods (ΔW of out×in per module) and the clustering ones (lanes of their own) go
    // one module at a time.
    const written = AHEAD_METHODS.has(o.method)
      ? await be.withLanes(async (lanes) => {
          const ahead = new ReadAhead(live, mergeOne, lanes - 1); // `lanes` modules in flight: the one written and those ahead
          try {
            return await write((g) => ahead.take(g));
          } finally {
            await ahead.settled(); // no native call in flight when the lanes end
          }
        })
      : await write(mergeOne);
    const mods = live.map((g) => results.get(g.key)!);
    // A cancelled module's ‖ΔW_out − T‖ enters the total as it is (its ratio may be ∞ over a norm of 0).
    const totals = totalsOf(mods, written.tensorBytes, (m) => cancelled.get(m));
    if (cancelled.size) {
      const nonzero = [...cancelled.values()].filter((d) => d > 0).length;
      notes.push(
        `${cancelled.size} module(s) have a target Σ wᵢ·ΔWᵢ that cancels to the rounding level of its terms: reported as target_norm 0, with relative error 0${nonzero ? `, or infinite (null in --json) for the ${nonzero} whose output is not 0` : " (the output is 0 too)"}`,
      );
    }
    const report: MergeReport = {
      command: "merge",
      method: o.method,
      inputs: o.inputs,
      output: o.output,
      format,
      modules: mods,
      dropped,
      totals,
      notes,
      weights,
      seed: o.seed,
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
  if (o.method === "lego")
    Object.assign(p, {
      param_reweight: o.paramReweight,
      output_reweight: o.outputReweight,
      param_norm: o.paramNorm,
      sign_canonicalize: o.signCanonicalize,
      n_init: o.nInit,
      max_iter: o.maxIter,
      tol: o.tol,
      ...(o.refRank !== undefined ? { ref_rank: o.refRank } : {}),
    });
  if (["ties", "dare", "dare_ties", "magnitude_prune"].includes(o.method))
    Object.assign(p, { density: o.density, ties_mode: o.tiesMode, majority_sign: o.majoritySign, oversample: o.oversample, power_iters: o.powerIters });
  if (o.method === "ffa") Object.assign(p, { project: o.project });
  if (o.method === "fair")
    Object.assign(p, { solver: o.fairSolver, lambda: o.fairLambda, ...(o.fairSolver === "cosine-sgd" ? { steps: o.fairSteps, lr: o.fairLr } : {}) });
  return JSON.stringify(p);
}
