// PyTorch checkpoints (docs/formats.md "PyTorch checkpoints"): a torch.save file — the zip format
// of torch ≥ 1.6 or the legacy pickle stream (legacy.ts) — read through the restricted unpickler
// and presented as a SafetensorsFile of its state dict's tensors (SafetensorsFile.derived), each
// produced on read as its exact contiguous little-endian bytes. Recognised from content, never
// from the file name.
import { InvalidInputError } from "../../common/errors.js";
import { type DerivedTensor, SafetensorsFile } from "../safetensors/index.js";
import { torchPolicy } from "./globals.js";
import { readLegacy } from "./legacy.js";
import { PICKLE, TENSORS } from "./limits.js";
import { unpickle } from "./pickle.js";
import { bufferSource, type ByteSource, fileSource } from "./source.js";
import { findStateDict } from "./state-dict.js";
import { materialize, STORAGE_DTYPES, TorchStorage, type Unpickled } from "./tensor.js";
import { sniffCheckpoint } from "./sniff.js";
import { ZipArchive, type ZipEntry } from "./zip.js";

export interface Checkpoint {
  file: SafetensorsFile;
  /** One line each for the adapter's notes: what was read and what was left out. */
  notes: string[];
}

/** Open a checkpoint file; the returned file's close() closes it. */
export async function openTorchCheckpoint(path: string, label: string = path): Promise<Checkpoint> {
  const source = await fileSource(path, label);
  try {
    return await readCheckpoint(source);
  } catch (e) {
    await source.close();
    throw e;
  }
}

/** A checkpoint held in memory (tests, fuzzing). */
export function readCheckpointBuffer(buf: Uint8Array, label: string): Promise<Checkpoint> {
  return readCheckpoint(bufferSource(buf, label));
}

async function readCheckpoint(source: ByteSource): Promise<Checkpoint> {
  const label = source.label;
  const head = await source.read(0, Math.min(16, source.size));
  const kind = sniffCheckpoint(head);
  if (kind === "legacy") return finish(source, await readLegacy(source), "torch.save legacy format");
  if (kind !== "zip")
    throw new InvalidInputError(`${label}: ${kind === "pickle" ? "a pickle, but not one written by torch.save" : "not a PyTorch checkpoint"}`, {
      hint: "lora reads safetensors files and torch.save checkpoints (.bin/.pt/.pth)",
    });
  const zip = await ZipArchive.open(source);
  return finish(source, await readZipCheckpoint(zip), "torch.save zip format");
}

async function readZipCheckpoint(zip: ZipArchive): Promise<Unpickled> {
  const label = zip.source.label;
  // PyTorchStreamReader: every record lives under the first entry's top folder (the archive name)
  const first = zip.entries.keys().next().value as string | undefined;
  const slash = first?.indexOf("/") ?? -1;
  if (first === undefined || slash <= 0) throw new InvalidInputError(`${label}: a zip archive, but not a torch.save checkpoint (no archive folder)`);
  const prefix = first.slice(0, slash + 1);
  const entry = (name: string): ZipEntry | undefined => zip.entries.get(prefix + name);
  const pkl = entry("data.pkl");
  if (!pkl) {
    const jit = entry("constants.pkl") || entry("code/") ? " (a TorchScript archive from torch.jit.save; save the state dict with torch.save)" : "";
    throw new InvalidInputError(`${label}: a zip archive without ${prefix}data.pkl: not a torch.save checkpoint${jit}`);
  }
  const order = entry("byteorder");
  if (order) {
    const text = Buffer.from(await zip.read(order)).toString("latin1");
    if (text !== "little")
      throw new InvalidInputError(`${label}: saved with byte order ${JSON.stringify(text.slice(0, 20))}; lora reads little-endian checkpoints only`);
  }
  if (pkl.size > PICKLE.maxBytes) throw new InvalidInputError(`${label}: data.pkl is ${pkl.size} bytes, more than the ${PICKLE.maxBytes} accepted`);
  const data = await zip.read(pkl);
  const storages = new Map<string, TorchStorage>();
  let extraBytes = 0;
  const where = `${label} (${prefix}data.pkl)`;
  const policy = torchPolicy(where, (key, type, numel, view) => {
    const spec = STORAGE_DTYPES[type]!;
    const known = storages.get(key);
    if (known) {
      if (known.storageType !== type || known.numel !== numel)
        throw new InvalidInputError(
          `${where}: storage ${JSON.stringify(key)} is referenced as torch.${known.storageType}[${known.numel}] and as torch.${type}[${numel}]`,
        );
      return known;
    }
    if (view !== null) throw new InvalidInputError(`${where}: storage ${JSON.stringify(key)} carries view metadata, which the zip format never writes`);
    const e = entry(`data/${key}`);
    if (!e) throw new InvalidInputError(`${where}: storage ${JSON.stringify(key)} has no record ${prefix}data/${key}`);
    if (e.size !== numel * spec.size)
      throw new InvalidInputError(`${where}: storage ${JSON.stringify(key)} declares ${numel} × ${spec.size} bytes but its record holds ${e.size}`);
    if (e.method === 8) extraBytes += e.size;
    const s = new TorchStorage(key, type, spec.dtype, spec.size, numel);
    storages.set(key, s);
    return s;
  });
  const { value, end } = unpickle(data, 0, policy, where);
  if (end !== data.length) throw new InvalidInputError(`${where}: ${data.length - end} bytes after the pickle's STOP`);
  let cached: { key: string; bytes: Uint8Array } | null = null;
  return {
    root: value,
    extraBytes,
    async storageBytes(s) {
      if (cached?.key !== s.key) cached = { key: s.key, bytes: await zip.read(entry(`data/${s.key}`)!) };
      return cached.bytes;
    },
  };
}

/** The state dict's tensors as a derived SafetensorsFile, within the byte budget. */
function finish(source: ByteSource, u: Unpickled, what: string): Checkpoint {
  const label = source.label;
  const sd = findStateDict(u.root, label);
  if (sd.tensors.length > TENSORS.maxCount) throw new InvalidInputError(`${label}: ${sd.tensors.length} tensors, more than the ${TENSORS.maxCount} accepted`);
  const budget = source.size * TENSORS.maxExpansion + TENSORS.expansionSlackBytes;
  let total = u.extraBytes;
  for (const { tensor } of sd.tensors) total += tensor.byteLength;
  if (total > budget) {
    throw new InvalidInputError(
      `${label}: the tensors would take ${total} bytes in memory, more than ${TENSORS.maxExpansion}× the file's ${source.size} bytes (+${TENSORS.expansionSlackBytes}); refused as a decompression bomb`,
      { hint: "expanded views (stride 0) or deflated records that claim far more than the file holds" },
    );
  }
  const tensors: DerivedTensor[] = sd.tensors.map(({ name, tensor }) => ({
    name,
    dtype: tensor.dtype,
    shape: [...tensor.shape],
    produce: async () => materialize(tensor, await u.storageBytes(tensor.storage)),
  }));
  const file = SafetensorsFile.derived(label, null, tensors, null, { size: source.size, close: () => source.close() });
  const notes = [`read from a PyTorch checkpoint (${what}): ${sd.tensors.length} tensors${sd.path ? ` from ckpt${sd.path}` : ""}`];
  if (sd.ignored.length)
    notes.push(`${sd.ignored.length} non-tensor entries of the state dict ignored: ${sd.ignored.slice(0, 5).join(", ")}${sd.ignored.length > 5 ? ", …" : ""}`);
  return { file, notes };
}
