// lora convert --to peft|kohya|diffusers: the same ΔW in another layout. Factors are copied byte
// for byte; only the bookkeeping changes (docs/algorithms.md §1.2): the scale s of every module is kept
// by writing alpha' = s·r (kohya, and PEFT/diffusers without rsLoRA) or s·√r (PEFT/diffusers with
// use_rslora). diffusers output is the PEFT-style layout with lora_adapter_metadata
// (formats/adapter/write-diffusers.ts); kohya stems are lora_unet_…/lora_te_… (lora_te1_/lora_te2_
// for SDXL's two text encoders) as kohya and ComfyUI name them. Adapter families beyond B·A
// (docs/formats.md "Adapter families") are written as their exact factors; MeteoRA one expert at a
// time (--expert), MiSS/Bone with the base weights (--base).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  checkableWhileCopied,
  checkFactorsFinite,
  isDora,
  loadAdapter,
  meteoraExpert,
  refuseBaseDependent,
  type Adapter,
} from "../../formats/adapter/index.js";
import { openModel, type Model } from "../../formats/model/base-model.js";
import { writeAdapter, type AdapterOutput } from "../../formats/adapter/write.js";
import { diffusersLoadWarnings } from "../../formats/adapter/diffusers-warnings.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import type { PeftConfig } from "../../formats/adapter/peft-config.js";
import { convertedModules, sameLayoutFamily, type TargetFormat } from "../../surgery/convert.js";

export type { TargetFormat };

export interface ConvertOptions {
  input: string;
  output: string;
  to: TargetFormat;
  force: boolean;
  /** Base model for families whose ΔW needs its weights (MiSS/Bone). */
  base?: string;
  /** MeteoRA: the expert to write (0-based), or "all" (one adapter per expert under the output directory). */
  expert?: string;
}

export interface ConvertReport {
  input: string;
  output: string;
  from: string;
  to: TargetFormat;
  modules: { name: string; rank: number; alpha: number; scale: number; relative_error: number }[];
  passthrough: number;
  totals: { modules: number; rank: number };
  /** Where diffusers would drop or mis-scale a module of the written file (docs/formats.md "Naming maps"). */
  warnings: string[];
}

/** The config the output starts from: the input's, or the one a kohya file of ours carried. */
function baseConfigFor(a: Adapter): PeftConfig | null {
  return a.config;
}

export async function runConvert(o: ConvertOptions, deps: { stdin?: NodeJS.ReadableStream; stdout?: NodeJS.WritableStream }): Promise<ConvertReport> {
  const model: Model | undefined = o.base ? await openModel(o.base, { label: `--base ${o.base}` }) : undefined;
  try {
    const a = await loadAdapter(o.input, { ...(deps.stdin ? { stdin: deps.stdin } : {}), ...(model ? { base: model } : {}) });
    try {
      refuseBaseDependent(a, "convert");
      const experts = expertsOf(a);
      if (!experts) {
        if (o.expert !== undefined) throw new UsageError(`--expert applies to MeteoRA checkpoints only; ${o.input} has no experts`);
        return await convertOne(a, o, deps);
      }
      if (o.expert === undefined)
        throw new UsageError(
          `${o.input}: MeteoRA checkpoint with ${experts} experts per module; choose one with --expert I (0…${experts - 1}) or --expert all`,
        );
      if (o.expert === "all") {
        if (o.output === "-") throw new UsageError("--expert all writes one adapter per expert: -o must be a directory");
        await mkdir(o.output, { recursive: true });
        const ext = o.to === "kohya" ? ".safetensors" : "";
        const reps = [];
        for (let i = 0; i < experts; i++) reps.push(await convertOne(expertView(a, i), { ...o, output: join(o.output, `expert-${i}${ext}`) }, deps));
        return {
          ...reps[0]!,
          output: o.output,
          modules: reps.flatMap((r) => r.modules),
          totals: { modules: reps.reduce((s, r) => s + r.totals.modules, 0), rank: reps.reduce((s, r) => s + r.totals.rank, 0) },
          warnings: [...new Set(reps.flatMap((r) => r.warnings))],
        };
      }
      const i = Number(o.expert);
      if (!Number.isInteger(i) || i < 0 || i >= experts)
        throw new UsageError(`--expert must be an integer in 0…${experts - 1} or "all" (got ${JSON.stringify(o.expert)})`);
      return await convertOne(expertView(a, i), o, deps);
    } finally {
      await a.file.close();
    }
  } finally {
    await model?.close();
  }
}

/** The number of MeteoRA experts per module, or 0 for any other adapter. */
function expertsOf(a: Adapter): number {
  const e = a.modules.map(meteoraExpert).find((x) => x);
  return e ? e.experts : 0;
}

/** Expert i of a MeteoRA adapter as a plain adapter: its modules under their own module paths. */
function expertView(a: Adapter, i: number): Adapter {
  const modules = a.modules
    .filter((m) => meteoraExpert(m)?.expert === i)
    .map((m) => {
      const path = meteoraExpert(m)!.module;
      return { ...m, name: path, path, matchKey: m.matchKey.replace(new RegExp(`_experts_${i}$`), "") };
    });
  return { ...a, modules };
}

async function convertOne(a: Adapter, o: ConvertOptions, deps: { stdin?: NodeJS.ReadableStream; stdout?: NodeJS.WritableStream }): Promise<ConvertReport> {
  {
    if (isDora(a) && !sameLayoutFamily(a.format, o.to)) {
      throw new InvalidInputError(`${o.input}: DoRA adapter; its magnitude vector has a different layout in ${o.to} files, so it cannot be converted`, {
        hint: "convert within the same format only, or merge DoRA into the base model with PEFT",
      });
    }
    // NaN/Inf are refused (exit 3, nothing written) even though the bytes are copied as they are:
    // into a file, stored float factors are checked in the read that copies them (the atomic
    // output is removed on a refusal); on standard output, and for the other modules, every
    // factor is scanned before anything is written.
    const whileCopying = o.output !== "-";
    for (const m of a.modules) if (!(whileCopying && checkableWhileCopied(m))) await checkFactorsFinite(a, m);
    const base = baseConfigFor(a);
    const useRslora = o.to !== "kohya" && base?.["use_rslora"] === true;
    const out: AdapterOutput = {
      format: o.to,
      modules: convertedModules(a, o.to, useRslora, whileCopying),
      passthrough: a.passthrough.map((t) => ({ file: a.file, tensor: t })),
      baseConfig: base,
      metadata: a.metadata,
      keepTargetModules: a.format === "peft",
    };
    const warnings = diffusersLoadWarnings(out);
    await writeAdapter(o.output, out, { force: o.force, inputs: o.input === "-" ? [] : [o.input], ...(deps.stdout ? { stdout: deps.stdout } : {}) });
    return {
      input: o.input,
      output: o.output,
      from: a.format,
      to: o.to,
      modules: out.modules.map((m) => {
        // kohya files hold alpha as an F32 scalar: an alpha that float32 cannot hold (rsLoRA's s·r =
        // α·√r) scales ΔW by fround(α)/α, and that is the conversion's only error (docs/formats.md "kohya").
        const alpha = o.to === "kohya" ? Math.fround(m.alpha) : m.alpha;
        return {
          name: m.path,
          rank: m.rank,
          alpha,
          scale: alpha / (useRslora ? Math.sqrt(m.rank) : m.rank),
          relative_error: m.alpha === 0 ? 0 : Math.abs(alpha - m.alpha) / Math.abs(m.alpha),
        };
      }),
      passthrough: a.passthrough.length,
      totals: { modules: a.modules.length, rank: a.modules.reduce((s, m) => s + m.rank, 0) },
      warnings,
    };
  }
}
