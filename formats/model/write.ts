// Writing a full model shard by shard (prune's --base-out, apply's output): the input's shard
// layout and names, its index (total_size recomputed), the other files of its directory, each
// tensor given by the caller as a TensorSpec (copied through, or produced lazily one at a time).
// A directory appears atomically (atomic.ts writeDirAtomic); a .safetensors target gets every
// tensor in one file.
import { createReadStream } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { refusePickleName, writeDirAtomic, writeFileAtomic, type AtomicOptions, type ByteSink, type DirEntrySpec } from "../../common/atomic.js";
import { layoutSafetensors, writeSafetensors, type SafetensorsFile, type TensorInfo, type TensorSpec } from "../safetensors/index.js";
import type { Model } from "./base-model.js";

export interface ModelOutput {
  /** The output tensor for one input tensor (same name, or another shape/bytes). */
  specFor: (file: SafetensorsFile, tensor: TensorInfo) => TensorSpec;
  /** Files written instead of the input's (e.g. a new config.json), name → text. */
  replace?: Record<string, string>;
  /** Which other files of the model directory to copy: every plain file, or only those named. */
  copy: "all" | readonly string[];
  /** Told the size of every chunk of tensor data written (progress). */
  onBytes?: (n: number) => void;
}

/** The small non-weight files of a Hugging Face model besides config.json: what a model written from one is given. */
export const MODEL_SIDE_FILES: readonly string[] = [
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
  "vocab.txt",
  "spiece.model",
  "sentencepiece.bpe.model",
  "chat_template.jinja",
  "chat_template.json",
  "preprocessor_config.json",
];

/** A fill that writes a text. */
export function textFill(text: string): (sink: ByteSink) => Promise<void> {
  return async (sink) => {
    await sink.write(new TextEncoder().encode(text));
  };
}

/** A fill that streams a file's bytes (files of any size). */
function fileFill(path: string): (sink: ByteSink) => Promise<void> {
  return async (sink) => {
    for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) await sink.write(chunk as Buffer);
  };
}

/** The sink, counting what goes through it. */
function counted(sink: ByteSink, onBytes: ((n: number) => void) | undefined): ByteSink {
  return onBytes
    ? {
        write: async (c) => {
          await sink.write(c);
          onBytes(c.byteLength);
        },
      }
    : sink;
}

/** Names of the weight files of `m` (shards and index), which are never copied as they are. */
function weightFiles(m: Model): Set<string> {
  return new Set([...m.shards.map((s) => s.name), `${m.stem}.safetensors`, `${m.stem}.safetensors.index.json`]);
}

/** Names of the tensors in the order writeModel writes them (shard by shard, each in its layout's order). */
export function writeOrder(m: Model, out: ModelOutput): string[] {
  return m.shards.flatMap((s) =>
    layoutSafetensors(
      s.file.tensors.map((t) => out.specFor(s.file, t)),
      s.file.metadata,
    ).order.map((sp) => sp.name),
  );
}

/** Output bytes of every shard, for a progress display. */
export function modelBytes(m: Model, out: ModelOutput): number {
  let n = 0;
  for (const s of m.shards)
    n += layoutSafetensors(
      s.file.tensors.map((t) => out.specFor(s.file, t)),
      s.file.metadata,
    ).totalBytes;
  return n;
}

/**
 * Write the model to `target`: one .safetensors file (every shard's tensors, the first shard's
 * metadata) or a directory with the input's shard names, index and other files. Every layout is
 * planned (and validated) before anything is created.
 */
export async function writeModel(target: string, m: Model, out: ModelOutput, opts: AtomicOptions): Promise<void> {
  refusePickleName(target);
  if (target.endsWith(".safetensors")) {
    const specs = m.shards.flatMap((s) => s.file.tensors.map((t) => out.specFor(s.file, t)));
    const meta = m.shards[0]!.file.metadata;
    layoutSafetensors(specs, meta);
    await writeFileAtomic(target, (sink) => writeSafetensors(counted(sink, out.onBytes), specs, meta), opts);
    return;
  }
  const entries: DirEntrySpec[] = [];
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (const s of m.shards) {
    const specs = s.file.tensors.map((t) => out.specFor(s.file, t));
    const meta = s.file.metadata;
    const lay = layoutSafetensors(specs, meta);
    for (const t of lay.tensors) totalSize += t.end - t.begin;
    for (const sp of specs) weightMap[sp.name] = s.name;
    entries.push({ name: m.sharded ? s.name : `${m.stem}.safetensors`, fill: (sink) => writeSafetensors(counted(sink, out.onBytes), specs, meta) });
  }
  if (m.sharded) {
    const sorted = Object.fromEntries(
      Object.keys(weightMap)
        .sort()
        .map((k) => [k, weightMap[k]!]),
    );
    const index = { metadata: { ...(m.indexMetadata ?? {}), total_size: totalSize }, weight_map: sorted };
    entries.push({ name: `${m.stem}.safetensors.index.json`, fill: textFill(JSON.stringify(index, null, 2) + "\n") });
  }
  const replace = out.replace ?? {};
  for (const [name, text] of Object.entries(replace)) entries.push({ name, fill: textFill(text) });
  const skip = weightFiles(m);
  const listing = await readdir(m.dir, { withFileTypes: true });
  for (const e of listing) {
    if (!e.isFile() || skip.has(e.name) || e.name in replace || e.name.startsWith(".")) continue;
    if (out.copy !== "all" && !out.copy.includes(e.name)) continue;
    entries.push({ name: e.name, fill: fileFill(join(m.dir, e.name)) });
  }
  await writeDirAtomic(target, entries, opts);
}
