// Opening an adapter argument (docs/cli.md "Adapters in and out"): a PEFT directory, a .safetensors
// file (config from __metadata__["adapter_config"], else a sibling adapter_config.json), or "-"
// for a safetensors stream on stdin. The format is detected from the keys.
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InvalidInputError, RuntimeFailure } from "../../common/errors.js";
import { SafetensorsFile, type DType } from "../safetensors/index.js";
import { detectors } from "./detect.js";
import type { DetectContext } from "./detector.js";
import type { PeftConfig } from "./peft-config.js";
import type { Adapter } from "./types.js";

const DIR_FILES = ["adapter_model.safetensors", "pytorch_lora_weights.safetensors"];

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

function parseConfigText(text: string, where: string): PeftConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new InvalidInputError(`${where}: adapter config is not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new InvalidInputError(`${where}: adapter config must be a JSON object`);
  return v as PeftConfig;
}

export interface OpenOptions {
  stdin?: NodeJS.ReadableStream;
}

/** Open and validate an adapter; the caller closes it with `adapter.file.close()`. */
/** The safetensors file an adapter argument names, and the sibling adapter_config.json when one exists. */
export interface AdapterSource {
  file: SafetensorsFile;
  label: string;
  siblingConfig: string | null;
}

/** Open an adapter argument's safetensors file (validated) without interpreting its keys. */
export async function openAdapterSource(arg: string, opts: OpenOptions = {}): Promise<AdapterSource> {
  if (arg === "-") {
    if (!opts.stdin) throw new InvalidInputError("-: no standard input available");
    return { file: await SafetensorsFile.fromStream(opts.stdin, "<stdin>"), label: "<stdin>", siblingConfig: null };
  }
  let path = arg;
  if (await isDir(arg)) {
    const found = [];
    for (const f of DIR_FILES) if (await exists(join(arg, f))) found.push(f);
    if (found.length === 0) {
      if (await exists(join(arg, "adapter_model.bin"))) {
        throw new InvalidInputError(`${arg}: only adapter_model.bin (a pickle) found; lora reads safetensors`, {
          hint: "convert it with PEFT (save_pretrained(..., safe_serialization=True))",
        });
      }
      throw new InvalidInputError(`${arg}: not an adapter directory (no ${DIR_FILES.join(" or ")})`);
    }
    path = join(arg, found[0]!);
  } else if (!(await exists(arg))) {
    throw new RuntimeFailure(`${arg}: no such file or directory`);
  }
  const cfg = join(dirname(path), "adapter_config.json");
  return { file: await SafetensorsFile.open(path), label: arg, siblingConfig: (await exists(cfg)) ? cfg : null };
}

/** The adapter config: __metadata__.adapter_config, else the sibling adapter_config.json, else none. */
export async function readAdapterConfig(src: AdapterSource): Promise<{ config: PeftConfig | null; configSource: string }> {
  const metadata = src.file.header.metadata ?? {};
  if (metadata["adapter_config"] !== undefined) {
    return { config: parseConfigText(metadata["adapter_config"], `${src.label} (__metadata__.adapter_config)`), configSource: "__metadata__.adapter_config" };
  }
  if (src.siblingConfig)
    return { config: parseConfigText(await readFile(src.siblingConfig, "utf8"), src.siblingConfig), configSource: basename(src.siblingConfig) };
  return { config: null, configSource: "none" };
}

export async function loadAdapter(arg: string, opts: OpenOptions = {}): Promise<Adapter> {
  const src = await openAdapterSource(arg, opts);
  try {
    return await describe(arg, src);
  } catch (e) {
    await src.file.close();
    throw e;
  }
}

async function describe(arg: string, src: AdapterSource): Promise<Adapter> {
  const { file, label } = src;
  const metadata = file.header.metadata ?? {};
  const { config, configSource } = await readAdapterConfig(src);
  const notes: string[] = [];
  const ctx: DetectContext = { file, label, metadata, config, configSource, notes };
  const names = file.header.tensors.map((t) => t.name);
  const det = detectors.find((d) => d.claims(names, ctx));
  if (!det) {
    throw new InvalidInputError(`${label}: not a LoRA adapter (no lora_A/lora_B, lora_down/lora_up or diffusers LoRA keys among ${names.length} tensors)`);
  }
  const got = await det.parse(ctx);
  if (got.modules.length === 0 && !got.baseDependent?.length) throw new InvalidInputError(`${label}: no LoRA modules found`);
  got.modules.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const counts = new Map<DType, number>();
  for (const m of got.modules) {
    const d = m.family?.dtype ?? m.A.dtype;
    counts.set(d, (counts.get(d) ?? 0) + 1);
  }
  // A file of base-dependent modules only ((IA)³): their dtype.
  const dtype = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? got.baseDependent?.[0]?.tensors[0]?.dtype ?? "F32";
  const adapter: Adapter = {
    source: arg,
    file: got.file ?? file,
    format: got.format,
    config: got.config,
    configSource: got.configSource,
    metadata,
    modules: got.modules,
    passthrough: got.passthrough,
    notes,
    dtype,
    ...(got.baseDependent?.length ? { baseDependent: got.baseDependent } : {}),
  };
  if (metadata["ss_network_module"] === "networks.dylora") {
    let unit = 1;
    try {
      unit = Number((JSON.parse(metadata["ss_network_args"] ?? "{}") as Record<string, unknown>)["unit"] ?? 1) || 1;
    } catch {
      /* default 1 */
    }
    adapter.dylora = { unit };
    notes.push(`kohya DyLoRA (unit ${unit}): truncate defaults to --method prefix`);
  }
  return adapter;
}
