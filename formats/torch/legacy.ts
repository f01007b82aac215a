// torch.save's legacy stream (torch/serialization.py `_legacy_save`, `_use_new_zipfile_serialization=False`):
// five pickles in a row — the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, the
// sys_info dict, the object (storages as persistent ids), the list of storage keys — then each
// storage in that list's order as an 8-byte little-endian element count and its raw bytes
// (THPStorage_writeFileRaw). The file is read whole (it has no index to seek by).
import { InvalidInputError } from "../../common/errors.js";
import { torchPolicy } from "./globals.js";
import { MAX_BUFFER_BYTES } from "./limits.js";
import { type PicklePolicy, unpickle } from "./pickle.js";
import type { ByteSource } from "./source.js";
import { STORAGE_DTYPES, TorchStorage, type Unpickled } from "./tensor.js";
import { describe, PyDict, PyList } from "./values.js";

const MAGIC = 0x1950a86a20f9469cfc6cn;
const PROTOCOL_VERSION = 1001;

export async function readLegacy(source: ByteSource): Promise<Unpickled> {
  const label = source.label;
  if (source.size > MAX_BUFFER_BYTES)
    throw new InvalidInputError(`${label}: a legacy torch.save file of ${source.size} bytes is larger than one buffer can hold`);
  const data = await source.read(0, source.size);
  const where = `${label} (legacy torch.save)`;
  const bad = (msg: string): never => {
    throw new InvalidInputError(`${where}: ${msg}`, { hint: "the checkpoint is corrupt or not written by torch.save" });
  };
  // the header pickles are plain data: any global, call or persistent id there is refused
  const plain = torchPolicy(where, () => bad("a storage in the header pickles"));
  const dataOnly: PicklePolicy = { ...plain, persistentLoad: () => bad("a persistent id in the header pickles") };
  let at = 0;
  const next = (policy: PicklePolicy): unknown => {
    const r = unpickle(data, at, policy, where);
    at = r.end;
    return r.value;
  };
  if (next(dataOnly) !== MAGIC) bad("the magic number is wrong");
  const version = next(dataOnly);
  if (version !== PROTOCOL_VERSION) bad(`protocol version ${describe(version)} (expected ${PROTOCOL_VERSION})`);
  const sysInfo = next(dataOnly);
  if (sysInfo instanceof PyDict) {
    const i = sysInfo.keys.indexOf("little_endian");
    if (i >= 0 && sysInfo.values[i] !== true) bad("saved on a big-endian machine; lora reads little-endian checkpoints only");
  }
  const storages = new Map<string, TorchStorage>();
  const root = next(
    torchPolicy(where, (key, type, numel, view) => {
      if (view !== null) bad(`storage ${JSON.stringify(key)} is a storage view (the pre-1.0 format's view metadata)`);
      const known = storages.get(key);
      if (known) {
        if (known.storageType !== type || known.numel !== numel) bad(`storage ${JSON.stringify(key)} is referenced with two types or sizes`);
        return known;
      }
      const spec = STORAGE_DTYPES[type]!;
      const s = new TorchStorage(key, type, spec.dtype, spec.size, numel);
      storages.set(key, s);
      return s;
    }),
  );
  const keys = next(dataOnly);
  if (!(keys instanceof PyList)) return bad(`the storage key list is ${describe(keys)}`);
  const spans = new Map<string, Uint8Array>();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (const k of keys.items) {
    const s = typeof k === "string" ? storages.get(k) : undefined;
    if (!s) return bad(`the storage key list names ${describe(k)}, which no tensor uses`);
    if (spans.has(s.key)) bad(`storage ${JSON.stringify(s.key)} is listed twice`);
    if (at + 8 > data.length) bad(`the file ends before storage ${JSON.stringify(s.key)}`);
    const n = view.getBigInt64(at, true);
    if (n !== BigInt(s.numel)) bad(`storage ${JSON.stringify(s.key)} holds ${n} elements, its tensors say ${s.numel}`);
    at += 8;
    if (at + s.byteLength > data.length) bad(`the file ends inside storage ${JSON.stringify(s.key)}`);
    spans.set(s.key, data.subarray(at, at + s.byteLength));
    at += s.byteLength;
  }
  for (const s of storages.values()) if (!spans.has(s.key)) bad(`storage ${JSON.stringify(s.key)} has no data`);
  if (at !== data.length) bad(`${data.length - at} bytes after the last storage`);
  return { root, extraBytes: 0, storageBytes: async (s) => spans.get(s.key)! };
}
