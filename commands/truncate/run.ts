// lora truncate: shrink every module of an adapter, from the adapter file alone.
//
//   --method svd (default)  the Eckart–Young optimal rank-t ΔW per module (linalg/truncate.ts), with t from
//                           --rank R (min(R, r)), --energy F or --budget K (surgery/truncate/allocate.ts, the very
//                           ranks `lora inspect` prints) or --dynamic (kohya-rules.ts, clean or
//                           --kohya-compat). The scale convention of each module is kept: s' = s,
//                           alpha' = s·t (s·√t with rsLoRA), as kohya's resize_lora.py does, so the
//                           factors keep their magnitude and PEFT/kohya load exactly U_t Σ_t V_tᵀ.
//   --method prefix         DyLoRA: first t components, alpha kept (surgery/truncate/prefix.ts); the default for
//                           files detected as kohya DyLoRA.
//
// Plan, then write: ranks are decided first (spectra only when the selection
// needs them), every output shape is then known, and each module's new factors are computed
// lazily while the writer streams the file, one module at a time. A rank of 0 removes the module.
import { diffusersLoadWarnings } from "../../formats/adapter/diffusers-warnings.js";
import { existsSync } from "node:fs";
import { hasTextEncoder2, isDora, loadAdapter, refuseBaseDependent, refuseExperts, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import { writeAdapter, type AdapterOutput } from "../../formats/adapter/write.js";
import type { BufferPool } from "../../common/buffer-pool.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import type { SplitMode } from "../../linalg/lowrank.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { totalsOf, type ModuleResult, type WriteReport } from "../../surgery/report.js";
import { buildModules, type BuildContext } from "../../surgery/truncate/modules.js";
import type { OutFormat, TruncateOptions } from "../../surgery/truncate/options.js";
import { plan } from "../../surgery/truncate/plan.js";
import { splitPath, splitRanks } from "../../surgery/truncate/prefix.js";

export type { OutDType, OutFormat, TruncateOptions } from "../../surgery/truncate/options.js";

export interface TruncateDeps {
  backend: LinalgBackend;
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  onModule?: (done: number, total: number) => void;
  /** Read buffers shared with other adapters (catalog mode): files of a few MB are read whole into them. */
  buffers?: BufferPool;
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
  if (o.ranks) {
    if (o.rank !== undefined || o.energy !== undefined || o.budget !== undefined || o.dynamic !== undefined || o.unit !== undefined || o.method === "prefix")
      throw new UsageError("ranks chosen for a catalog cannot be combined with --rank, --energy, --budget, --dynamic, --unit or --method prefix");
    return;
  }
  const sel = [o.rank !== undefined && "--rank", o.energy !== undefined && "--energy", o.budget !== undefined && "--budget"].filter(Boolean) as string[];
  if (o.energy !== undefined && o.budget !== undefined) throw new UsageError("--energy and --budget are mutually exclusive");
  if (o.rank !== undefined && (o.energy !== undefined || o.budget !== undefined))
    throw new UsageError(`--rank cannot be combined with ${o.energy !== undefined ? "--energy" : "--budget"} (choose one way to pick ranks)`);
  if (o.dynamicParam !== undefined && o.dynamic === undefined) throw new UsageError("--dynamic-param needs --dynamic sv_ratio|sv_fro|sv_cumulative");
  if (o.dynamic !== undefined) {
    if (o.dynamicParam === undefined) throw new UsageError(`--dynamic ${o.dynamic} needs --dynamic-param X`);
    if (o.energy !== undefined || o.budget !== undefined) throw new UsageError("--dynamic cannot be combined with --energy or --budget");
    if (o.dynamic !== "sv_ratio" && !(o.dynamicParam > 0 && o.dynamicParam <= 1))
      throw new UsageError(`--dynamic-param for ${o.dynamic} must be in (0, 1], got ${o.dynamicParam}`);
    if (o.dynamic === "sv_ratio" && !(o.dynamicParam > 0)) throw new UsageError(`--dynamic-param for sv_ratio must be > 0, got ${o.dynamicParam}`);
  }
  if (o.kohyaCompat && o.dynamic === undefined && o.rank === undefined)
    throw new UsageError("--kohya-compat needs --dynamic (and --dynamic-param) or --rank, as resize_lora.py does");
  if (o.kohyaCompat && (o.energy !== undefined || o.budget !== undefined))
    throw new UsageError("--kohya-compat applies to --rank and --dynamic only (kohya has no --energy/--budget)");
  if (o.unit !== undefined) {
    if (sel.length || o.dynamic !== undefined)
      throw new UsageError(
        `--unit writes every multiple of the unit below the full rank; it cannot be combined with ${[...sel, ...(o.dynamic ? ["--dynamic"] : [])].join(", ")}`,
      );
    if (o.method === "svd") throw new UsageError("--unit splits a DyLoRA adapter by prefix; it needs --method prefix");
    if (o.output === "-") throw new UsageError("--unit writes several files; -o - (standard output) cannot hold them");
  } else if (!sel.length && o.dynamic === undefined) {
    throw new UsageError(
      "say how far to truncate: --rank R, --energy F, --budget K or --dynamic METHOD --dynamic-param X (or --unit U to split a DyLoRA adapter)",
    );
  }
  if (o.method === "prefix") {
    if (o.energy !== undefined || o.budget !== undefined || o.dynamic !== undefined || o.kohyaCompat) {
      throw new UsageError(
        "--method prefix keeps the first R components in index order; it takes --rank R (or --unit U), not --energy, --budget, --dynamic or --kohya-compat",
      );
    }
    if (o.split !== undefined) throw new UsageError("--split applies to --method svd (prefix keeps the factors as they are)");
  }
  if (o.alphaMode !== "keep" && o.method === "svd") throw new UsageError("--alpha-mode applies to --method prefix (DyLoRA); svd keeps each module's scale");
  if (o.minRank > 0 && o.rank !== undefined && o.dynamic === undefined) throw new UsageError("--min-rank applies to --energy, --budget and --dynamic");
}

function outputFormat(o: TruncateOptions, a: Adapter, notes: string[]): OutFormat {
  if (o.to) return o.to;
  if (a.format === "kohya" || a.format === "peft" || a.format === "diffusers") return a.format;
  notes.push(`${a.format} input is written as PEFT (--to kohya|diffusers for another layout)`);
  return "peft";
}

function kohyaComment(o: TruncateOptions, a: Adapter, method: "svd" | "prefix", maxRank: number, rank: number): string {
  const prev = a.metadata["ss_training_comment"] ?? "";
  const from = a.metadata["ss_network_dim"] ?? String(maxRank);
  if (method === "prefix")
    return a.dylora ? `split from DyLoRA, rank ${maxRank} to ${rank}; ${prev}` : `prefix-truncated from rank ${maxRank} to ${rank}; ${prev}`;
  if (o.dynamic) return `Dynamic resize with ${o.dynamic}: ${o.dynamicParam} from ${from}; ${prev}`;
  if (o.rank !== undefined) return `dimension is resized from ${from} to ${o.rank}; ${prev}`;
  return `resized by lora truncate (${o.energy !== undefined ? `--energy ${o.energy}` : `--budget ${o.budget} --score ${o.score}`}) from ${from}; ${prev}`;
}

async function writeOne(c: BuildContext, output: string, notes: string[], deps: TruncateDeps, kohyaRank: number): Promise<WriteReport> {
  // The fused route runs modules side by side, each on one BLAS thread (linalg/types.ts withLanes).
  if (c.method === "svd") return c.be.withLanes((lanes) => writeOneWith({ ...c, lanes }, output, notes, deps, kohyaRank));
  return writeOneWith(c, output, notes, deps, kohyaRank);
}

async function writeOneWith(c: BuildContext, output: string, notes: string[], deps: TruncateDeps, kohyaRank: number): Promise<WriteReport> {
  const built = await buildModules(c);
  try {
    return await writeBuilt(c, built, output, notes, deps, kohyaRank);
  } finally {
    await built.settled(); // no native call in flight when the lanes end (after a failed write too)
  }
}

async function writeBuilt(
  c: BuildContext,
  { modules, outcomes, dropped }: Awaited<ReturnType<typeof buildModules>>,
  output: string,
  notes: string[],
  deps: TruncateDeps,
  kohyaRank: number,
): Promise<WriteReport> {
  const { o, a } = c;
  if (modules.length === 0) throw new UsageError("these options remove every module; nothing would be left to write");
  const maxRank = Math.max(...a.modules.map((m) => m.rank));
  const out: AdapterOutput = {
    format: c.format,
    modules,
    passthrough: a.passthrough.map((t) => ({ file: a.file, tensor: t })),
    baseConfig: a.config,
    metadata: a.metadata, // kohya fields and hashes are brought up to date by the writer
    keepTargetModules: a.format === c.format && c.format !== "kohya" && dropped.length === 0,
    ...(c.format === "kohya" ? { extraMetadata: { ss_training_comment: kohyaComment(o, a, c.method, maxRank, kohyaRank) } } : {}),
  };
  // Where diffusers would drop or mis-scale a module of this output (e.g. kohya attention modules
  // whose alphas now differ, since ranks vary): the warnings convert gives.
  const warnings = diffusersLoadWarnings(out);
  const written = await writeAdapter(output, out, {
    force: o.force,
    inputs: o.input === "-" ? [] : [o.input],
    ...(deps.stdout ? { stdout: deps.stdout } : {}),
  });
  const results = a.modules.map((m) => outcomes.get(m.name)!.result);
  const totals = totalsOf(results, written.tensorBytes);
  const params = (pick: (m: LoraModule, r: ModuleResult) => number) => a.modules.reduce((s, m, i) => s + pick(m, results[i]!) * (m.in + m.out), 0);
  const routes = [...outcomes.values()].map((x) => x.route);
  const house = routes.filter((r) => r === "householder").length;
  const allNotes = [...notes];
  if (house) allNotes.push(`${house} module(s) were too ill-conditioned for the Gram route and were computed by Householder QR`);
  let retained: number | undefined;
  if (c.spectra) {
    let kept = 0,
      tot = 0;
    for (const m of a.modules) {
      const S = c.spectra.get(m.name)!;
      const t = c.ranks.get(m.name)!;
      S.forEach((x, i) => {
        tot += x * x;
        if (i < t) kept += x * x;
      });
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
    warnings,
  };
}

export async function runTruncate(o: TruncateOptions, deps: TruncateDeps): Promise<TruncateResult> {
  checkOptions(o);
  const a = await loadAdapter(o.input, { ...(deps.stdin ? { stdin: deps.stdin } : {}), ...(deps.buffers ? { buffers: deps.buffers } : {}) });
  try {
    refuseBaseDependent(a, "truncate");
    refuseExperts(a, "truncate");
    if (isDora(a)) {
      throw new InvalidInputError(
        `${o.input}: DoRA adapter (lora_magnitude_vector / use_dora): truncating its factors would leave the magnitude vector normalising a different direction, and the base weights needed to recompute it are not in the file`,
        {
          hint: "merge the DoRA adapter into the base model with PEFT (merge_and_unload) instead",
        },
      );
    }
    const gated = a.modules.find((m) => "gate" in m.extras);
    if (gated) {
      throw new InvalidInputError(`${o.input}: module "${gated.name}" has a SoRA gate; truncating the factors would detach it`, {
        hint: "fold the gate first with lora prune --method sora",
      });
    }
    const p = await plan(o, a, deps.backend);
    const notes = [...a.notes.filter((n) => !(p.notes.length && n.startsWith("kohya DyLoRA"))), ...p.notes];
    const format = outputFormat(o, a, notes);
    const rsOut = format !== "kohya" && a.config?.["use_rslora"] === true;
    const split: SplitMode = o.split ?? (o.kohyaCompat ? "all-in-up" : "balanced");
    const unit = o.unit ?? a.dylora?.unit ?? (o.alphaMode === "lycoris" ? 4 : 1);
    if (o.alphaMode === "lycoris" && o.unit === undefined && !a.dylora)
      notes.push("--alpha-mode lycoris: block_size 4 assumed (LyCORIS's default; --unit sets it)");
    const te2 = hasTextEncoder2(a.modules.map((m) => m.path));
    const ctx: BuildContext = {
      o,
      a,
      be: deps.backend,
      method: p.method,
      ranks: p.ranks,
      format,
      rsOut,
      te2,
      split,
      unit,
      ...(p.spectra ? { spectra: p.spectra } : {}),
      ...(p.grams ? { grams: p.grams } : {}),
      ...(deps.onModule ? { onModule: deps.onModule } : {}),
    };
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
