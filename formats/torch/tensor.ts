// Storages and strided tensors as torch.save describes them (torch/_utils.py `_rebuild_tensor_v2`:
// storage, storage_offset, size, stride), and their materialisation as the contiguous row-major
// little-endian bytes a safetensors tensor holds. Every index a view can reach is checked against
// its storage before any byte is read.
import { InvalidInputError } from "../../common/errors.js";
import type { DType } from "../../common/dtype.js";
import { MAX_BUFFER_BYTES, TENSORS } from "./limits.js";
import { describe, PyTuple, safeInt } from "./values.js";

/** torch.<X>Storage (torch/storage.py `_dtype_to_storage_type_map`) → our dtype and its element size. */
export const STORAGE_DTYPES: Readonly<Record<string, { dtype: DType; size: number }>> = {
  DoubleStorage: { dtype: "F64", size: 8 },
  FloatStorage: { dtype: "F32", size: 4 },
  HalfStorage: { dtype: "F16", size: 2 },
  BFloat16Storage: { dtype: "BF16", size: 2 },
  LongStorage: { dtype: "I64", size: 8 },
  IntStorage: { dtype: "I32", size: 4 },
  ShortStorage: { dtype: "I16", size: 2 },
  CharStorage: { dtype: "I8", size: 1 },
  ByteStorage: { dtype: "U8", size: 1 },
  BoolStorage: { dtype: "BOOL", size: 1 },
  ComplexFloatStorage: { dtype: "C64", size: 8 },
};

/** One storage of the checkpoint: `numel` elements of `dtype` under `key` (zip: data/<key>). */
export class TorchStorage {
  constructor(
    readonly key: string,
    readonly storageType: string,
    readonly dtype: DType,
    readonly elementSize: number,
    readonly numel: number,
  ) {}
  get byteLength(): number {
    return this.numel * this.elementSize;
  }
  describe(): string {
    return `torch.${this.storageType} ${JSON.stringify(this.key)}`;
  }
}

/** An unpickled checkpoint: its root object and the bytes of its storages. */
export interface Unpickled {
  root: unknown;
  /** The bytes of a storage (whole). */
  storageBytes(s: TorchStorage): Promise<Uint8Array>;
  /** Bytes reading the storages may allocate beyond the tensors themselves (deflated records). */
  extraBytes: number;
}

/** A tensor: a strided view of a storage. */
export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}
  get dtype(): DType {
    return this.storage.dtype;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get byteLength(): number {
    return this.numel * this.storage.elementSize;
  }
  describe(): string {
    return `tensor ${this.dtype}[${this.shape.join(", ")}]`;
  }
}

/** `_rebuild_tensor(_v2)`'s view arguments, validated against the storage (exit 3 naming what is wrong). */
export function makeTensor(storage: unknown, offset: unknown, size: unknown, stride: unknown, where: string): TorchTensor {
  const bad = (msg: string): never => {
    throw new InvalidInputError(`${where}: a tensor ${msg}`, { hint: "the checkpoint is corrupt" });
  };
  if (!(storage instanceof TorchStorage)) return bad(`is rebuilt from ${describe(storage)}, not a storage`);
  const off = safeInt(offset);
  if (off === null || off < 0) return bad(`has storage offset ${describe(offset)}`);
  const dims = intTuple(size, "size", bad);
  const steps = intTuple(stride, "stride", bad);
  if (dims.length !== steps.length) bad(`has ${dims.length} sizes but ${steps.length} strides`);
  let n = 1;
  let last = off;
  for (let i = 0; i < dims.length; i++) {
    n *= dims[i]!;
    if (dims[i]! > 0) last += (dims[i]! - 1) * steps[i]!;
    if (!Number.isSafeInteger(n) || !Number.isSafeInteger(last)) bad(`of shape [${dims.join(", ")}] is too large`);
  }
  if (n > 0 && last >= storage.numel)
    bad(
      `[${dims.join(", ")}] with strides [${steps.join(", ")}] at offset ${off} reaches element ${last} of ${storage.describe()}, which has ${storage.numel}`,
    );
  if (n === 0 && off > storage.numel) bad(`starts at element ${off} of ${storage.describe()}, which has ${storage.numel}`);
  if (n * storage.elementSize > MAX_BUFFER_BYTES) bad(`of ${n * storage.elementSize} bytes is larger than one buffer can hold`);
  return new TorchTensor(storage, off, dims, steps);
}

function intTuple(v: unknown, what: string, bad: (m: string) => never): number[] {
  if (!(v instanceof PyTuple)) return bad(`has a ${what} that is ${describe(v)}, not a tuple`);
  if (v.items.length > TENSORS.maxRank) return bad(`has ${v.items.length} dimensions (at most ${TENSORS.maxRank})`);
  return v.items.map((x) => {
    const i = safeInt(x);
    return i === null || i < 0 ? bad(`has ${what} entry ${describe(x)}`) : i;
  });
}

/**
 * The tensor's elements in row-major order, as little-endian bytes (torch stores native order and
 * the byteorder record is checked to be "little"). `data` holds the whole storage.
 */
export function materialize(t: TorchTensor, data: Uint8Array): Uint8Array {
  const es = t.storage.elementSize;
  const n = t.numel;
  const rank = t.shape.length;
  let contiguous = true;
  for (let i = rank - 1, want = 1; i >= 0; i--) {
    if (t.shape[i]! !== 1 && t.stride[i]! !== want) contiguous = false;
    want *= t.shape[i]!;
  }
  if (contiguous || n === 0) return data.slice(t.offset * es, (t.offset + n) * es);
  const out = new Uint8Array(n * es);
  const inner = t.shape[rank - 1]!;
  const innerStride = t.stride[rank - 1]!;
  const idx = new Array<number>(rank).fill(0);
  let base = t.offset;
  for (let o = 0; o < out.length; ) {
    if (innerStride === 1) {
      out.set(data.subarray(base * es, (base + inner) * es), o);
      o += inner * es;
    } else {
      for (let j = 0; j < inner; j++, o += es) out.set(data.subarray((base + j * innerStride) * es, (base + j * innerStride + 1) * es), o);
    }
    for (let d = rank - 2; d >= 0; d--) {
      base += t.stride[d]!;
      if (++idx[d]! < t.shape[d]!) break;
      base -= t.stride[d]! * t.shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}
