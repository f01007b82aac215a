// Writing an adapter (docs/cli.md "Adapters in and out"): plan every output tensor's name, dtype and
// shape first (safetensors puts offsets before data), then compute each module's factors lazily in
// the writer's order, one module at a time, and copy passthrough tensors byte for byte.
import { basename } from "node:path";
import { UsageError } from "../../common/errors.js";
import { refusePickleName, stdoutSink, writeDirAtomic, writeFileAtomic, type ByteSink } from "../../common/atomic.js";
import { encodeFloats, layoutSafetensors, writeSafetensors, writeSafetensorsHashed, type HashFields, type TensorSpec } from "../safetensors/index.js";
import { kohyaStemFor, PEFT_PREFIX } from "./names.js";
import { kohyaFamily, kohyaModuleId } from "./name-map.js";
import { applyNameMap } from "./split-fuse.js";
import { orientForTarget } from "./fan-in-fan-out.js";
import { peftPatterns, type PeftConfig } from "./peft-config.js";
import { DIFFUSERS_FILE, planDiffusersFile } from "./write-diffusers.js";
import type { AdapterOutput } from "./output.js";
import { moduleTensorSpecs } from "./module-specs.js";
import { sortedJson } from "./json.js";
import { updateKohyaMetadata } from "./kohya-metadata.js";

export type { AdapterOutput, OutFactors, OutModule } from "./output.js";

export interface WriteOptions {
  force: boolean;
  /** Input paths that must not be overwritten by accident. */
  inputs: string[];
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
}

/** Extra roles whose kohya key differs from the PEFT one. */
const KOHYA_ROLE_SUFFIX: Record<string, string> = { "lora_B.bias": "lora_up.bias" };

const MANAGED_META = ["format", "adapter_config", "lora_module_names", "lora_module_kinds", "lora_peft_config", "lora_adapter_metadata"];

/** The PEFT adapter_config for a set of output modules (PEFT loads exactly the intended ΔW). */
export function buildPeftConfig(out: AdapterOutput): PeftConfig {
  const base: PeftConfig = { ...(out.baseConfig ?? {}) };
  const pat = peftPatterns(out.modules.map((m) => ({ path: m.path, rank: m.rank, alpha: m.alpha })));
  const cfg: PeftConfig = {
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    lora_dropout: 0,
    modules_to_save: null,
    task_type: null,
    use_dora: false,
    use_rslora: false,
    lora_bias: false,
    ...base,
    peft_type: "LORA",
    r: pat.r,
    lora_alpha: pat.lora_alpha,
    rank_pattern: pat.rank_pattern,
    alpha_pattern: pat.alpha_pattern,
  };
  if (!(out.keepTargetModules && base["target_modules"] !== undefined && base["target_modules"] !== null)) {
    cfg["target_modules"] = [...new Set(out.modules.map((m) => m.path))].sort();
  }
  cfg["lora_bias"] = out.modules.some((m) => m.extras && "lora_B.bias" in m.extras) || base["lora_bias"] === true;
  return cfg;
}

function carriedMetadata(out: AdapterOutput): Record<string, string> {
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(out.metadata)) if (!MANAGED_META.includes(k)) meta[k] = v;
  return meta;
}

function moduleSpecs(out: AdapterOutput): TensorSpec[] {
  const specs: TensorSpec[] = [];
  for (const m of out.modules) {
    if (out.format === "peft") {
      const base = PEFT_PREFIX + m.path;
      specs.push(
        ...moduleTensorSpecs(m, {
          A: base + (m.kind === "embedding" ? ".lora_embedding_A" : ".lora_A.weight"),
          B: base + (m.kind === "embedding" ? ".lora_embedding_B" : ".lora_B.weight"),
          extra: (role) => `${base}.${role}`,
        }),
      );
    } else {
      const stem = m.stem ?? kohyaStemFor(m.path);
      specs.push({ name: stem + ".alpha", dtype: "F32", shape: [], data: encodeFloats("F32", Float32Array.of(m.alpha)) });
      specs.push(
        ...moduleTensorSpecs(m, { A: stem + ".lora_down.weight", B: stem + ".lora_up.weight", extra: (role) => `${stem}.${KOHYA_ROLE_SUFFIX[role] ?? role}` }),
      );
    }
  }
  return specs;
}

/**
 * Tensor specs and metadata of the output file (also used for `-o -`), the kohya metadata brought
 * up to date (kohya-metadata.ts) and the hash fields the writer fills from the written bytes.
 */
export function planAdapterFile(out: AdapterOutput): {
  specs: TensorSpec[];
  metadata: Record<string, string>;
  config: PeftConfig | null;
  hashFields: HashFields;
} {
  const plan = out.format === "diffusers" ? planDiffusersFile(out) : planLoraFile(out);
  return { ...plan, ...updateKohyaMetadata(plan.metadata, out) };
}

function planLoraFile(out: AdapterOutput): { specs: TensorSpec[]; metadata: Record<string, string>; config: PeftConfig | null } {
  const specs = moduleSpecs(out);
  for (const p of out.passthrough) specs.push({ name: p.tensor.name, dtype: p.tensor.dtype, shape: p.tensor.shape, copyFrom: p });
  const metadata = carriedMetadata(out);
  let config: PeftConfig | null = null;
  if (out.format === "peft") {
    config = buildPeftConfig(out);
    metadata["format"] = "pt";
    metadata["adapter_config"] = sortedJson(config);
  } else {
    const names: Record<string, string> = {};
    const kinds: Record<string, string> = {};
    const family = kohyaFamily(out.modules.map((m) => m.stem ?? kohyaStemFor(m.path)));
    for (const m of out.modules) {
      const stem = m.stem ?? kohyaStemFor(m.path);
      // Only the paths the naming maps would not give back (docs/formats.md "Naming maps").
      if (kohyaModuleId(stem, family, {}).path !== m.path) names[stem] = m.path;
      if (m.kind === "embedding") kinds[stem] = "embedding";
    }
    metadata["lora_module_names"] = sortedJson(names);
    if (Object.keys(kinds).length) metadata["lora_module_kinds"] = sortedJson(kinds);
    if (out.baseConfig) {
      const { r: _r, lora_alpha: _a, rank_pattern: _rp, alpha_pattern: _ap, ...rest } = out.baseConfig;
      metadata["lora_peft_config"] = sortedJson(rest);
    }
  }
  Object.assign(metadata, out.extraMetadata ?? {});
  return { specs, metadata, config };
}

/** What writeAdapter wrote. */
export interface WrittenAdapter {
  /** The paths written ("-" for standard output). */
  paths: string[];
  /** Bytes of the tensors' data in the safetensors file (the header not counted). */
  tensorBytes: number;
}

/**
 * Write the adapter to `target`: "-" (stdout stream), a path ending in .safetensors (one file,
 * config embedded), or (PEFT) a directory with adapter_model.safetensors + adapter_config.json.
 */
export async function writeAdapter(target: string, given: AdapterOutput, opts: WriteOptions): Promise<WrittenAdapter> {
  refusePickleName(target);
  const out = await applyNameMap(orientForTarget(given));
  const { specs, metadata, config, hashFields } = planAdapterFile(out);
  const layout = layoutSafetensors(specs, metadata); // validates names/sizes before anything is created
  const tensorBytes = layout.totalBytes - layout.header.byteLength;
  const hashed = Object.keys(hashFields).length > 0;
  const fill = (sink: ByteSink) =>
    hashed ? writeSafetensorsHashed(sink, specs, metadata, hashFields).then(() => {}) : writeSafetensors(sink, specs, metadata);
  if (target === "-") {
    const stream = opts.stdout ?? process.stdout;
    if ((stream as { isTTY?: boolean }).isTTY) {
      throw new UsageError("refusing to write binary safetensors data to a terminal; use -o FILE or redirect standard output");
    }
    await fill(stdoutSink(stream));
    return { paths: ["-"], tensorBytes };
  }
  if (out.format === "kohya" || target.endsWith(".safetensors")) {
    if (!target.endsWith(".safetensors") && out.format === "kohya") {
      throw new UsageError(`kohya output must be a .safetensors file (got ${basename(target)})`);
    }
    await writeFileAtomic(target, fill, { force: opts.force, inputs: opts.inputs });
    return { paths: [target], tensorBytes };
  }
  if (out.format === "diffusers") {
    await writeDirAtomic(target, [{ name: DIFFUSERS_FILE, fill }], { force: opts.force, inputs: opts.inputs });
    return { paths: [target], tensorBytes };
  }
  await writeDirAtomic(
    target,
    [
      { name: "adapter_model.safetensors", fill },
      {
        name: "adapter_config.json",
        fill: async (sink) => {
          await sink.write(new TextEncoder().encode(sortedJson(config, 2) + "\n"));
        },
      },
    ],
    { force: opts.force, inputs: opts.inputs },
  );
  return { paths: [target], tensorBytes };
}
