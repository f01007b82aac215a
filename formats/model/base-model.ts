// Opening a full model (prune's --base; extract's and apply's BASE and TUNED): a single
// .safetensors file, a directory with model.safetensors, a sharded checkpoint
// (model.safetensors.index.json + its shards) or the diffusers layout
// (unet/diffusion_pytorch_model.safetensors[.index.json]), plus the config.json beside it when
// there is one. Only headers are read here; tensor bytes are read on demand (stream.ts).
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InvalidInputError, UsageError } from "../../common/errors.js";
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

/** Where the weights sit: a Hugging Face model ("model") or a diffusers component ("diffusion_pytorch_model"). */
export type WeightsStem = "model" | "diffusion_pytorch_model";

export interface Model {
  /** What the user named. */
  source: string;
  /** The directory holding the weights (for the diffusers layout, the unet/ folder). */
  dir: string;
  /** Named as a directory (its other files belong to the model), not as one weights or index file. */
  namedDir: boolean;
  /** File stem of the weights: <stem>.safetensors, <stem>.safetensors.index.json. */
  stem: WeightsStem;
  /** config.json beside the weights, when there is one. */
  config: Record<string, unknown> | null;
  configPath: string | null;
  /** The safetensors files, in the order of the index (or the one file). */
  shards: BaseShard[];
  /** True when read through an index (<stem>.safetensors.index.json). */
  sharded: boolean;
  /** The index's "metadata" object, when sharded. */
  indexMetadata: Record<string, unknown> | null;
  tensors: Map<string, BaseTensor>;
  close(): Promise<void>;
}

/** A model whose config.json is required (prune's --base). */
export interface BaseModel extends Model {
  config: Record<string, unknown>;
  configPath: string;
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
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new InvalidInputError(`${path}: cannot read ${what}: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new InvalidInputError(`${path}: ${what} is not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new InvalidInputError(`${path}: ${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

export interface OpenModelOptions {
  /** How the argument is named in messages, e.g. "--base ./llama" (default: the path). */
  label?: string;
}

const STEMS: readonly WeightsStem[] = ["model", "diffusion_pytorch_model"];

/** The weights of a directory: an index or one file, under either stem; the diffusers layout's unet/ as well. */
async function weightsIn(dir: string): Promise<{ dir: string; stem: WeightsStem; index: string | null; single: string | null } | null> {
  for (const stem of STEMS) {
    if ((await kind(join(dir, `${stem}.safetensors.index.json`))) === "file")
      return { dir, stem, index: join(dir, `${stem}.safetensors.index.json`), single: null };
    if ((await kind(join(dir, `${stem}.safetensors`))) === "file") return { dir, stem, index: null, single: join(dir, `${stem}.safetensors`) };
  }
  if ((await kind(join(dir, "unet"))) === "dir") return weightsIn(join(dir, "unet"));
  return null;
}

/**
 * Open a full model: one .safetensors file, a shard index file, or a directory holding
 * model.safetensors[.index.json] (Hugging Face), diffusion_pytorch_model.safetensors[.index.json]
 * (a diffusers component) or a diffusers pipeline's unet/ folder. Only headers are read; the
 * caller closes it.
 */
export async function openModel(arg: string, opts: OpenModelOptions = {}): Promise<Model> {
  const label = opts.label ?? arg;
  const k = await kind(arg);
  if (k === null) throw new UsageError(`${label}: no such file or directory`);
  let dir: string;
  let stem: WeightsStem = "model";
  let indexPath: string | null = null;
  let single: string | null = null;
  if (k === "dir") {
    const w = await weightsIn(arg);
    if (w === null) {
      const bin = (await kind(join(arg, "pytorch_model.bin"))) === "file" || (await kind(join(arg, "pytorch_model.bin.index.json"))) === "file";
      throw new InvalidInputError(
        `${label}: no model.safetensors or model.safetensors.index.json in the directory (nor a diffusers unet/diffusion_pytorch_model.safetensors)${bin ? " (only PyTorch .bin weights; lora reads safetensors)" : ""}`,
        { hint: "point at a Hugging Face model directory with safetensors weights, or at one .safetensors file" },
      );
    }
    ({ dir, stem, index: indexPath, single } = w);
  } else {
    dir = dirname(arg);
    if (arg.endsWith(".json")) indexPath = arg;
    else single = arg;
    if (basename(arg).startsWith("diffusion_pytorch_model.")) stem = "diffusion_pytorch_model";
  }
  const configPath = join(dir, "config.json");
  const hasConfig = (await kind(configPath)) === "file";
  const config = hasConfig ? await readJson(configPath, "config.json") : null;

  const shards: BaseShard[] = [];
  const tensors = new Map<string, BaseTensor>();
  let indexMetadata: Record<string, unknown> | null = null;
  const close = async () => {
    for (const s of shards) await s.file.close().catch(() => {});
  };
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
        if (f.includes("/") || f.includes("\\") || f === ".." || f === ".")
          throw new InvalidInputError(`${indexPath}: shard name ${JSON.stringify(f)} is not a plain file name`);
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
        if (prev) throw new InvalidInputError(`${label}: tensor ${t.name} appears in both ${prev.shard} and ${s.name}`);
        tensors.set(t.name, { file: s.file, info: t, shard: s.name });
      }
    }
  } catch (e) {
    await close();
    throw e;
  }
  return {
    source: arg,
    dir,
    namedDir: k === "dir",
    stem,
    config,
    configPath: hasConfig ? configPath : null,
    shards,
    sharded: single === null,
    indexMetadata,
    tensors,
    close,
  };
}

/** Open a base model for prune --method loraprune, which needs its config.json (head counts, sizes). */
export async function openBaseModel(arg: string): Promise<BaseModel> {
  const m = await openModel(arg, { label: `--base ${arg}` });
  if (m.config === null || m.configPath === null) {
    await m.close();
    throw new InvalidInputError(
      `--base ${arg}: no config.json beside the weights (${join(m.dir, "config.json")}); it is needed for the head counts and sizes`,
      { hint: "copy the model's config.json next to the weights" },
    );
  }
  return m as BaseModel;
}
