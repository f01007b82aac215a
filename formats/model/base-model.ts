// Opening a base model for `prune --method loraprune`: a single .safetensors file, a directory with
// model.safetensors, or a sharded checkpoint (model.safetensors.index.json + its shards), plus the
// config.json beside it (head counts, sizes). Only headers are read here; tensor bytes are read on
// demand, one tensor (or one row block) at a time.
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InvalidInputError, UsageError } from "../errors.js";
import { SafetensorsFile, type TensorInfo } from "../safetensors/index.js";

export interface BaseTensor {
  file: SafetensorsFile;
  info: TensorInfo;
  /** File name of the shard holding it (basename). */
  shard: string;
}

export interface BaseShard {
  /** File name (basename) of the shard. */
  name: string;
  file: SafetensorsFile;
}

export interface BaseModel {
  /** What the user named. */
  source: string;
  config: Record<string, unknown>;
  configPath: string;
  /** The safetensors files, in the order of the index (or the one file). */
  shards: BaseShard[];
  /** True when read through model.safetensors.index.json. */
  sharded: boolean;
  /** The index's "metadata" object, when sharded. */
  indexMetadata: Record<string, unknown> | null;
  tensors: Map<string, BaseTensor>;
  close(): Promise<void>;
}

export async function kind(p: string): Promise<"dir" | "file" | null> {
  try {
    const s = await stat(p);
    return s.isDirectory() ? "dir" : "file";
  } catch {
    return null;
  }
}

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try { text = await readFile(path, "utf8"); } catch (e) {
    throw new InvalidInputError(`${path}: cannot read ${what}: ${(e as Error).message}`);
  }
  let v: unknown;
  try { v = JSON.parse(text); } catch (e) {
    throw new InvalidInputError(`${path}: ${what} is not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new InvalidInputError(`${path}: ${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

/** Open a base model; the caller closes it. */
export async function openBaseModel(arg: string): Promise<BaseModel> {
  const k = await kind(arg);
  if (k === null) throw new UsageError(`--base ${arg}: no such file or directory`);
  let dir: string;
  let indexPath: string | null = null;
  let single: string | null = null;
  if (k === "dir") {
    dir = arg;
    if ((await kind(join(arg, "model.safetensors.index.json"))) === "file") indexPath = join(arg, "model.safetensors.index.json");
    else if ((await kind(join(arg, "model.safetensors"))) === "file") single = join(arg, "model.safetensors");
    else {
      const bin = (await kind(join(arg, "pytorch_model.bin"))) === "file" || (await kind(join(arg, "pytorch_model.bin.index.json"))) === "file";
      throw new InvalidInputError(`--base ${arg}: no model.safetensors or model.safetensors.index.json in the directory${bin ? " (only PyTorch .bin weights; lora reads safetensors)" : ""}`, { hint: "point --base at a Hugging Face model directory with safetensors weights, or at one .safetensors file" });
    }
  } else {
    dir = dirname(arg);
    if (arg.endsWith(".json")) indexPath = arg;
    else single = arg;
  }
  const configPath = join(dir, "config.json");
  if ((await kind(configPath)) !== "file") {
    throw new InvalidInputError(`--base ${arg}: no config.json beside the weights (${configPath}); it is needed for the head counts and sizes`, { hint: "copy the model's config.json next to the weights" });
  }
  const config = await readJson(configPath, "config.json");

  const shards: BaseShard[] = [];
  const tensors = new Map<string, BaseTensor>();
  let indexMetadata: Record<string, unknown> | null = null;
  const close = async () => { for (const s of shards) await s.file.close().catch(() => {}); };
  try {
    if (single !== null) {
      const file = await SafetensorsFile.open(single);
      shards.push({ name: basename(single), file });
    } else {
      const idx = await readJson(indexPath!, "the shard index");
      const wm = idx["weight_map"];
      if (!wm || typeof wm !== "object" || Array.isArray(wm) || Object.values(wm).some((v) => typeof v !== "string")) {
        throw new InvalidInputError(`${indexPath}: "weight_map" must be an object mapping tensor names to shard file names`);
      }
      const md = idx["metadata"];
      indexMetadata = md && typeof md === "object" && !Array.isArray(md) ? (md as Record<string, unknown>) : null;
      const files = [...new Set(Object.values(wm as Record<string, string>))];
      for (const f of files) {
        if (f.includes("/") || f.includes("\\") || f === ".." || f === ".") throw new InvalidInputError(`${indexPath}: shard name ${JSON.stringify(f)} is not a plain file name`);
        const file = await SafetensorsFile.open(join(dirname(indexPath!), f));
        shards.push({ name: f, file });
      }
      for (const [name, f] of Object.entries(wm as Record<string, string>)) {
        const sh = shards.find((s) => s.name === f)!;
        if (!sh.file.has(name)) throw new InvalidInputError(`${indexPath}: weight_map puts ${name} in ${f}, but that shard has no such tensor`);
      }
    }
    for (const s of shards) {
      for (const t of s.file.tensors) {
        const prev = tensors.get(t.name);
        if (prev) throw new InvalidInputError(`--base ${arg}: tensor ${t.name} appears in both ${prev.shard} and ${s.name}`);
        tensors.set(t.name, { file: s.file, info: t, shard: s.name });
      }
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { source: arg, config, configPath, shards, sharded: single === null, indexMetadata, tensors, close };
}
