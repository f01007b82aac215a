// Opening an adapter argument (docs/cli.md "Adapters in and out"): a PEFT directory, a .safetensors
// file (config from __metadata__["adapter_config"], else a sibling adapter_config.json), a PyTorch
// checkpoint (.bin/.pt/.pth written by torch.save, recognised from its first bytes and read by
// formats/torch's restricted unpickler), or "-" for a safetensors stream on stdin. The format is
// detected from the keys.
import type { BufferPool } from "../../common/buffer-pool.js";
import { readFileSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { InvalidInputError, RuntimeFailure } from "../../common/errors.js";
import { limits, SafetensorsFile, type DType } from "../safetensors/index.js";
import { sniffCheckpoint, sniffCheckpointFile } from "../torch/sniff.js";
import { detectors } from "./detect.js";
import type { DetectContext } from "./detector.js";
import type { PeftConfig } from "./peft-config.js";
import type { Model } from "../model/base-model.js";
import type { Adapter } from "./types.js";

/** The adapter file of a directory, in order of preference (safetensors first; PyTorch checkpoints from older PEFT and diffusers). */
export const DIR_FILES = ["adapter_model.safetensors", "pytorch_lora_weights.safetensors", "adapter_model.bin", "pytorch_lora_weights.bin"];

// Path probes and the small JSON configs are read synchronously: a stat or a read of a few KB from
// the page cache takes microseconds, while an awaited one waits its turn in the thread pool behind
// reads and costs two thread wake-ups (a catalog probes thousands of paths; docs/BENCHMARKS.md "catalog").
function statOrNull(p: string): ReturnType<typeof statSync> | null {
  try {
    return statSync(p, { throwIfNoEntry: false }) ?? null; // a missing path answered without an exception (most probes miss)
  } catch {
    return null;
  }
}
const isDir = (p: string) => statOrNull(p)?.isDirectory() ?? false;
const exists = (p: string) => statOrNull(p) !== null;

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

/** The first `n` bytes of a stream (fewer if it ends), and a stream that still yields every byte. */
async function peekStream(stream: NodeJS.ReadableStream, n: number): Promise<{ head: Uint8Array; rest: NodeJS.ReadableStream }> {
  const it = (stream as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  const seen: Buffer[] = [];
  let have = 0;
  while (have < n) {
    const r = await it.next();
    if (r.done) break;
    const c = typeof r.value === "string" ? Buffer.from(r.value) : r.value;
    seen.push(c);
    have += c.length;
  }
  async function* all() {
    yield* seen;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  }
  return { head: Buffer.concat(seen).subarray(0, n), rest: Readable.from(all(), { objectMode: false }) };
}

/** A whole stream in one buffer, up to the largest buffer Node allocates. */
async function bufferStream(stream: NodeJS.ReadableStream, label: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of stream as AsyncIterable<Buffer | string>) {
    const b = typeof c === "string" ? Buffer.from(c) : c;
    total += b.length;
    if (total > limits.MAX_STREAM_BYTES)
      throw new InvalidInputError(`${label}: more than ${limits.MAX_STREAM_BYTES} bytes arrived`, { hint: "save the stream to a file and pass its path" });
    chunks.push(b);
  }
  return Buffer.concat(chunks, total);
}

export interface OpenOptions {
  stdin?: NodeJS.ReadableStream;
  /** The base model (--base) for families whose ΔW needs its weights (MiSS/Bone); the caller closes it. */
  base?: Model;
  /** Buffers for a file read whole (catalog mode shares one pool across adapters); close() gives the buffer back. */
  buffers?: BufferPool;
}

/** The safetensors file an adapter argument names (a PyTorch checkpoint seen as one), and the sibling adapter_config.json when one exists. */
export interface AdapterSource {
  file: SafetensorsFile;
  label: string;
  siblingConfig: string | null;
  /** What reading it involved that the user should know (a checkpoint's state dict path, ignored entries). */
  notes?: string[];
  /** The file's path on disk (absent for stdin). */
  path?: string;
}

/** Open an adapter argument's safetensors file (validated) without interpreting its keys. */
export async function openAdapterSource(arg: string, opts: OpenOptions = {}): Promise<AdapterSource> {
  if (arg === "-") {
    if (!opts.stdin) throw new InvalidInputError("-: no standard input available");
    const { head, rest } = await peekStream(opts.stdin, 16);
    if (sniffCheckpoint(head)) {
      const { readCheckpointBuffer } = await import("../torch/index.js");
      const { file, notes } = await readCheckpointBuffer(await bufferStream(rest, "<stdin>"), "<stdin>");
      return { file, label: "<stdin>", siblingConfig: null, notes };
    }
    return { file: await SafetensorsFile.fromStream(rest, "<stdin>"), label: "<stdin>", siblingConfig: null };
  }
  let path = arg;
  if (isDir(arg)) {
    const found = [];
    for (const f of DIR_FILES) if (exists(join(arg, f))) found.push(f);
    if (found.length === 0) throw new InvalidInputError(`${arg}: not an adapter directory (no ${DIR_FILES.join(" or ")})`);
    path = join(arg, found[0]!);
  } else if (!exists(arg)) {
    throw new RuntimeFailure(`${arg}: no such file or directory`);
  }
  const cfg = join(dirname(path), "adapter_config.json");
  const siblingConfig = exists(cfg) ? cfg : null;
  if (await sniffCheckpointFile(path)) {
    const { openTorchCheckpoint } = await import("../torch/index.js");
    const { file, notes } = await openTorchCheckpoint(path, path === arg ? arg : `${arg}/${basename(path)}`);
    return { file, label: arg, siblingConfig, notes, path };
  }
  return { file: await SafetensorsFile.open(path, path, opts.buffers ? { buffers: opts.buffers } : {}), label: arg, siblingConfig, path };
}

/** The adapter config: __metadata__.adapter_config, else the sibling adapter_config.json, else none. */
export async function readAdapterConfig(src: AdapterSource): Promise<{ config: PeftConfig | null; configSource: string }> {
  const metadata = src.file.header.metadata ?? {};
  if (metadata["adapter_config"] !== undefined) {
    return { config: parseConfigText(metadata["adapter_config"], `${src.label} (__metadata__.adapter_config)`), configSource: "__metadata__.adapter_config" };
  }
  if (src.siblingConfig)
    return { config: parseConfigText(readFileSync(src.siblingConfig, "utf8"), src.siblingConfig), configSource: basename(src.siblingConfig) };
  return { config: null, configSource: "none" };
}

/** Open and validate an adapter; the caller closes it with `adapter.file.close()`. */
export async function loadAdapter(arg: string, opts: OpenOptions = {}): Promise<Adapter> {
  const src = await openAdapterSource(arg, opts);
  try {
    return await describe(arg, src, opts);
  } catch (e) {
    await src.file.close();
    throw e;
  }
}

/** config.json beside the adapter file (a trainer's model config), or null; unreadable JSON counts as none. */
async function readModelConfig(src: AdapterSource): Promise<Record<string, unknown> | null> {
  if (!src.path) return null;
  try {
    const v: unknown = JSON.parse(readFileSync(join(dirname(src.path), "config.json"), "utf8"));
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

async function describe(arg: string, src: AdapterSource, opts: OpenOptions): Promise<Adapter> {
  const { file, label } = src;
  const metadata = file.header.metadata ?? {};
  const { config, configSource } = await readAdapterConfig(src);
  const notes: string[] = [...(src.notes ?? [])];
  const modelConfig = await readModelConfig(src);
  const ctx: DetectContext = { file, label, metadata, config, configSource, notes, modelConfig, ...(opts.base ? { base: opts.base } : {}) };
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
  // Only base-dependent modules (MiSS/Bone without --base): the dtype their tensors are stored in.
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
