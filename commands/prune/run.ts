// lora prune: three kinds of pruning, each a plan pass (read and check every input, decide what
// survives, compute the report) followed by a write pass (atomic outputs, factors produced one
// module at a time). Bad inputs fail in the plan pass, before anything is created.
import { lstat, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { loadAdapter, refuseBaseDependent, refuseExperts, type Adapter } from "../../formats/adapter/index.js";
import { writeAdapter, type AdapterOutput, type OutModule } from "../../formats/adapter/write.js";
import { writeFileAtomic } from "../../common/atomic.js";
import { RuntimeFailure, UsageError } from "../../common/errors.js";
import { statQuiet } from "../../common/paths.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { totalsOf, type ModuleResult, type WriteReport } from "../../surgery/report.js";
import { openBaseModel } from "../../formats/model/base-model.js";
import { checkAdapter, refuseDora, planLoraPrune, type LoraPruneOptions } from "../../surgery/prune/loraprune.js";
import { adapterOutput } from "../../surgery/prune/loraprune-cut.js";
import { planDocument, prettyJson, prunedConfig, prunedCounts, sidePaths, writeBaseOut } from "../../surgery/prune/pruned-base.js";
import { planModules, type ModuleCriteria } from "../../surgery/prune/modules.js";
import { planSora, type FoldSide } from "../../surgery/prune/sora.js";

export type PruneMethod = "sora" | "loraprune" | "modules";

export interface PruneOptions {
  input: string;
  output: string;
  method: PruneMethod;
  to?: "peft" | "kohya" | "diffusers";
  force: boolean;
  // sora
  threshold?: number;
  loraAlpha?: number;
  fold?: FoldSide;
  keepOther?: boolean;
  // loraprune
  base?: string;
  ratio?: number;
  grads?: string;
  baseOut?: string;
  skipLayers?: number[];
  scoreModules?: "lora" | "all";
  // modules
  match?: string;
  layers?: number[];
  minNorm?: number;
  minEnergyShare?: number;
}

export interface PruneDeps {
  backend: LinalgBackend;
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Progress: (done, total, what). */
  onStep?: (done: number, total: number, what?: string) => void;
}

type OutFormat = "peft" | "kohya" | "diffusers";

function outFormat(a: Adapter, to: PruneOptions["to"]): OutFormat {
  return to ?? (a.format === "kohya" || a.format === "diffusers" ? a.format : "peft");
}

/** PEFT and diffusers alphas follow use_rslora; kohya's never do. */
function rsloraOut(a: Adapter, fmt: OutFormat): boolean {
  return fmt !== "kohya" && a.config?.["use_rslora"] === true;
}

function report(
  o: PruneOptions,
  fmt: string,
  inputs: string[],
  results: ModuleResult[],
  dropped: string[],
  notes: string[],
  bytes: number,
  extra: Record<string, unknown> = {},
): WriteReport {
  return {
    command: "prune",
    method: o.method,
    inputs,
    output: o.output,
    format: fmt,
    modules: results,
    dropped,
    totals: totalsOf(results, bytes),
    notes,
    ...extra,
  };
}

/** Anything at p, a dangling link included. */
const exists = async (p: string) => (await statQuiet(p, lstat)) !== null;

/**
 * Refuse, before any work, outputs that exist (without --force), collide, or have no parent
 * directory. `createdDirs` are directories this run writes first (the --base-out directory), so
 * they may be the parents of the later outputs.
 */
async function preflight(paths: string[], force: boolean, createdDirs: string[] = []): Promise<void> {
  const seen = new Set<string>();
  const made = createdDirs.map((d) => resolve(d));
  for (const p of paths) {
    const abs = resolve(p);
    if (seen.has(abs)) throw new UsageError(`two outputs would be written to ${p}; choose different paths`);
    seen.add(abs);
    if (!force && (await exists(abs))) throw new UsageError(`output exists: ${p} (use --force to overwrite)`);
    if (made.some((d) => dirname(abs) === d)) continue;
    const parent = await statQuiet(dirname(abs));
    if (!parent?.isDirectory()) throw new RuntimeFailure(`cannot write ${p}: directory ${dirname(abs)} does not exist`);
  }
}

/** Writes the pruned adapter; returns its tensor bytes. */
async function writeAdapterOut(o: PruneOptions, out: AdapterOutput, deps: PruneDeps, extraInputs: string[] = []): Promise<number> {
  const inputs = [...(o.input === "-" ? [] : [o.input]), ...extraInputs];
  return (await writeAdapter(o.output, out, { force: o.force, inputs, ...(deps.stdout ? { stdout: deps.stdout } : {}) })).tensorBytes;
}

function adapterOut(a: Adapter, fmt: OutFormat, modules: OutModule[], passthrough: boolean, keepTargets: boolean): AdapterOutput {
  return {
    format: fmt,
    modules,
    passthrough: passthrough ? a.passthrough.map((t) => ({ file: a.file, tensor: t })) : [],
    baseConfig: a.config && (a.config["peft_type"] === undefined || a.config["peft_type"] === "LORA") ? a.config : null,
    metadata: a.metadata,
    keepTargetModules: keepTargets && a.format === "peft",
  };
}

export async function runPrune(o: PruneOptions, deps: PruneDeps): Promise<WriteReport> {
  if (o.method === "loraprune") return runLoraPrune(o, deps);
  const a = await loadAdapter(o.input, deps.stdin ? { stdin: deps.stdin } : {});
  try {
    refuseBaseDependent(a, "prune");
    refuseExperts(a, "prune");
    refuseDora(a);
    const fmt = outFormat(a, o.to);
    if (o.output !== "-") await preflight([o.output], o.force);
    if (o.method === "sora") {
      const p = await planSora(
        a,
        { threshold: o.threshold ?? 0, fold: o.fold ?? "B", rsloraOut: rsloraOut(a, fmt), ...(o.loraAlpha !== undefined ? { loraAlpha: o.loraAlpha } : {}) },
        deps.backend,
        (i, n) => deps.onStep?.(i, n, "modules"),
      );
      const native = a.modules.some((m) => m.A.name.endsWith(".lora.lora_A"));
      const carry = !native || !!o.keepOther;
      if (native && o.keepOther && a.passthrough.length)
        p.notes.push(`--keep-other: ${a.passthrough.length} other tensor(s) of the checkpoint carried byte for byte`);
      const out = adapterOut(a, fmt, p.out, carry, p.dropped.length === 0);
      const bytes = await writeAdapterOut(o, out, deps);
      const gates = p.gates.reduce((s, g) => ({ total: s.total + g.total, kept: s.kept + g.kept }), { total: 0, kept: 0 });
      return report(o, fmt, [o.input], p.results, p.dropped, [...a.notes, ...p.notes], bytes, {
        gates: { ...gates, threshold: o.threshold ?? 0, fold: o.fold ?? "B" },
      });
    }
    if (o.method === "modules") {
      let match: RegExp | undefined;
      if (o.match !== undefined) {
        try {
          match = new RegExp(o.match);
        } catch (e) {
          throw new UsageError(`--match: not a valid regular expression: ${(e as Error).message}`);
        }
      }
      const c: ModuleCriteria = {
        ...(match ? { match } : {}),
        ...(o.layers ? { layers: new Set(o.layers) } : {}),
        ...(o.minNorm !== undefined ? { minNorm: o.minNorm } : {}),
        ...(o.minEnergyShare !== undefined ? { minEnergyShare: o.minEnergyShare } : {}),
      };
      if (!c.match && !c.layers && c.minNorm === undefined && c.minEnergyShare === undefined) {
        throw new UsageError("--method modules needs at least one of --match, --layers, --min-norm, --min-energy-share");
      }
      const p = await planModules(a, c, rsloraOut(a, fmt), deps.backend, (i, n) => deps.onStep?.(i, n, "modules"));
      if (p.out.length === 0) throw new UsageError(`these options drop every module of ${o.input} (${a.modules.length}); nothing would be left`);
      const out = adapterOut(a, fmt, p.out, true, p.dropped.length === 0);
      const bytes = await writeAdapterOut(o, out, deps);
      return report(o, fmt, [o.input], p.results, p.dropped, [...a.notes, ...p.notes], bytes);
    }
    throw new UsageError(`unknown --method ${String(o.method)}`);
  } finally {
    await a.file.close();
  }
}

async function runLoraPrune(o: PruneOptions, deps: PruneDeps): Promise<WriteReport> {
  if (o.base === undefined) throw new UsageError("--method loraprune needs --base <model>");
  if (o.ratio === undefined) throw new UsageError("--method loraprune needs --ratio <P>");
  const lo: LoraPruneOptions = {
    base: o.base,
    ratio: o.ratio,
    scoreModules: o.scoreModules ?? "lora",
    ...(o.grads !== undefined ? { grads: o.grads } : {}),
    ...(o.baseOut !== undefined ? { baseOut: o.baseOut } : {}),
    ...(o.skipLayers !== undefined ? { skipLayers: o.skipLayers } : {}),
  };
  const a = await loadAdapter(o.input, deps.stdin ? { stdin: deps.stdin } : {});
  try {
    refuseBaseDependent(a, "prune");
    refuseExperts(a, "prune");
    checkAdapter(a);
    const base = await openBaseModel(o.base);
    try {
      const fmt = outFormat(a, o.to);
      const side = sidePaths(o.output, o.baseOut);
      const targets = [
        ...(o.output !== "-" ? [o.output] : []),
        ...(o.baseOut !== undefined ? [o.baseOut] : []),
        side.plan,
        ...(side.config ? [side.config] : []),
      ];
      await preflight(targets, o.force, o.baseOut !== undefined && !o.baseOut.endsWith(".safetensors") ? [o.baseOut] : []);
      const plan = await planLoraPrune(a, base, lo, deps.backend, (i, n) => deps.onStep?.(i, n, "projections scored"));
      const ad = await adapterOutput(a, plan, deps.backend);
      const config = prunedConfig(base.config, plan);
      const planDoc = planDocument(plan, lo);
      const inputs = [
        ...(o.input === "-" ? [] : [o.input]),
        ...base.shards.map((s) => join(dirname(base.configPath), s.name)),
        base.configPath,
        ...(o.grads ? [o.grads] : []),
      ];

      // Write: the big one first; anything created by this run is removed if a later write fails.
      const created: string[] = [];
      const track = async <T>(p: string, write: () => Promise<T>): Promise<T> => {
        const had = await exists(p);
        const r = await write();
        if (!had) created.push(p);
        return r;
      };
      let bytes: number;
      try {
        if (o.baseOut !== undefined) await track(o.baseOut, () => writeBaseOut(o.baseOut!, base, plan, config, { force: o.force, inputs }));
        const out = adapterOut(a, fmt, ad.out, true, true);
        if (o.output === "-") bytes = await writeAdapterOut(o, out, deps, inputs);
        else bytes = await track(o.output, () => writeAdapterOut(o, out, deps, inputs));
        await track(side.plan, () =>
          writeFileAtomic(
            side.plan,
            async (sink) => {
              await sink.write(new TextEncoder().encode(prettyJson(planDoc)));
            },
            { force: o.force, inputs },
          ),
        );
        if (side.config) {
          const cfgPath = side.config;
          await track(cfgPath, () =>
            writeFileAtomic(
              cfgPath,
              async (sink) => {
                await sink.write(new TextEncoder().encode(prettyJson(config)));
              },
              { force: o.force, inputs },
            ),
          );
        }
      } catch (e) {
        for (const p of created) await rm(p, { recursive: true, force: true }).catch(() => {});
        throw e;
      }
      const counts = prunedCounts(plan);
      const written = {
        adapter: o.output,
        plan: side.plan,
        config: side.config ?? join(o.baseOut!, "config.json"),
        ...(o.baseOut !== undefined ? { base: o.baseOut } : {}),
      };
      const layerRows = plan.layers.map((L, i) => ({
        layer: L.layer,
        skipped: L.skipped,
        heads: [plan.arch.heads[i], counts.heads[i]],
        kv_heads: [plan.arch.kvHeads[i], counts.kvHeads[i]],
        channels: [plan.arch.inter[i], counts.inter[i]],
      }));
      const notes = [...a.notes, ...plan.notes, ...ad.notes];
      const pruned = plan.layers.filter((L) => L.attn.kept.length < L.attn.total || L.mlp.kept.length < L.mlp.total).length;
      notes.push(
        `${plan.criterion} criterion, ratio ${o.ratio}: ${pruned} of ${plan.arch.layers} layers pruned (skipped: ${plan.skip.join(", ") || "none"}); plan in ${written.plan}, config in ${written.config}${o.baseOut !== undefined ? `, pruned model in ${o.baseOut}` : " (no --base-out: base weights not written)"}`,
      );
      return report(o, fmt, [o.input, o.base, ...(o.grads ? [o.grads] : [])], ad.results, [], notes, bytes, {
        criterion: plan.criterion,
        ratio: o.ratio,
        skip_layers: plan.skip,
        layers: layerRows,
        written,
      });
    } finally {
      await base.close();
    }
  } finally {
    await a.file.close();
  }
}
