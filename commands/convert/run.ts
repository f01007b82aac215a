// lora convert --to peft|kohya|diffusers: the same ΔW in another layout. Factors are copied byte
// for byte; only the bookkeeping changes (docs/algorithms.md §1.2): the scale s of every module is kept
// by writing alpha' = s·r (kohya, and PEFT/diffusers without rsLoRA) or s·√r (PEFT/diffusers with
// use_rslora). diffusers output is the PEFT-style layout with lora_adapter_metadata
// (formats/adapter/write-diffusers.ts); kohya stems are lora_unet_…/lora_te_… (lora_te1_/lora_te2_
// for SDXL's two text encoders) as kohya and ComfyUI name them.
import { isDora, readFactors, type Adapter } from "../../formats/adapter/index.js";
import { loadForWrite } from "../support/load.js";
import { writeAdapter, type AdapterOutput } from "../../formats/adapter/write.js";
import { InvalidInputError } from "../../common/errors.js";
import type { PeftConfig } from "../../formats/adapter/peft-config.js";
import { convertedModules, sameLayoutFamily, type TargetFormat } from "../../surgery/convert.js";

export type { TargetFormat };

export interface ConvertOptions {
  input: string;
  output: string;
  to: TargetFormat;
  force: boolean;
}

export interface ConvertReport {
  input: string;
  output: string;
  from: string;
  to: TargetFormat;
  modules: { name: string; rank: number; alpha: number; scale: number; relative_error: number }[];
  passthrough: number;
  totals: { modules: number; rank: number };
}

/** The config the output starts from: the input's, or the one a kohya file of ours carried. */
function baseConfigFor(a: Adapter): PeftConfig | null {
  return a.config;
}

export async function runConvert(o: ConvertOptions, deps: { stdin?: NodeJS.ReadableStream; stdout?: NodeJS.WritableStream }): Promise<ConvertReport> {
  const a = await loadForWrite(o.input, deps.stdin, "convert");
  try {
    if (isDora(a) && !sameLayoutFamily(a.format, o.to)) {
      throw new InvalidInputError(`${o.input}: DoRA adapter; its magnitude vector has a different layout in ${o.to} files, so it cannot be converted`, {
        hint: "convert within the same format only, or merge DoRA into the base model with PEFT",
      });
    }
    // Read every factor once: NaN/Inf are refused (exit 3) even though the bytes are copied as they are.
    for (const m of a.modules) await readFactors(a, m, "f32");
    const base = baseConfigFor(a);
    const useRslora = o.to !== "kohya" && base?.["use_rslora"] === true;
    const out: AdapterOutput = {
      format: o.to,
      modules: convertedModules(a, o.to, useRslora),
      passthrough: a.passthrough.map((t) => ({ file: a.file, tensor: t })),
      baseConfig: base,
      metadata: a.metadata,
      keepTargetModules: a.format === "peft",
    };
    await writeAdapter(o.output, out, { force: o.force, inputs: o.input === "-" ? [] : [o.input], ...(deps.stdout ? { stdout: deps.stdout } : {}) });
    return {
      input: o.input,
      output: o.output,
      from: a.format,
      to: o.to,
      modules: out.modules.map((m) => ({
        name: m.path,
        rank: m.rank,
        alpha: m.alpha,
        scale: m.alpha / (useRslora ? Math.sqrt(m.rank) : m.rank),
        relative_error: 0,
      })),
      passthrough: a.passthrough.length,
      totals: { modules: a.modules.length, rank: a.modules.reduce((s, m) => s + m.rank, 0) },
    };
  } finally {
    await a.file.close();
  }
}
