// Writing safetensors the way the reference does (tensor.rs `prepare` / `serialize`): tensors
// sorted by dtype alignment descending (the reference enum order) then by name, contiguous
// offsets from 0, `__metadata__` first, the JSON padded with spaces to a multiple of 8 so every
// tensor starts aligned to its element size. The header is laid out from shapes alone; tensor
// bytes are then produced, or copied, one tensor at a time, in file order.
import type { ByteSink } from "../../common/atomic.js";
import { RuntimeFailure } from "../../common/errors.js";
import { growingBuffer } from "../../common/buffer-pool.js";
import { dtypeRank, isDType, tensorByteLength, type DType } from "../../common/dtype.js";
import { SafetensorsError } from "./errors.js";
import type { TensorInfo } from "./header.js";
import { HEADER_ALIGNMENT, MAX_HEADER_SIZE, N_LEN } from "./limits.js";
import type { SafetensorsFile } from "./reader.js";

/** One output tensor. Exactly one source: `data`, `produce`, `pieces` or `copyFrom`. */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
  /** Optional check: must equal the size implied by dtype and shape. */
  byteLength?: number;
  /** The bytes, already in memory. */
  data?: Uint8Array;
  /** Called once, lazily, when the writer reaches this tensor (in file order). */
  produce?: () => Promise<Uint8Array>;
  /**
   * Called once, lazily, like `produce`: the bytes in consecutive pieces (a large tensor computed a
   * block at a time). Each piece is written before the next is asked for, so its buffer may be reused then.
   */
  pieces?: () => AsyncIterable<Uint8Array>;
  /** Bytes copied from a tensor of an open input, streamed in chunks (passthrough, factors copied as stored). */
  copyFrom?: CopySource;
}

/** A tensor of an open input to copy, and what to check in its bytes on the way. */
export interface CopySource {
  file: SafetensorsFile;
  tensor: TensorInfo;
  /**
   * Called with each chunk before it is written (`at`: the chunk's byte offset in the tensor, a
   * multiple of the element size). Throwing stops the write, so an atomic output leaves nothing
   * behind: the tensor is checked in the one read that copies it.
   */
  check?: (chunk: Uint8Array, at: number) => void;
}

export interface SafetensorsLayout {
  /** The 8-byte little-endian length followed by the JSON, padded with spaces to a multiple of 8. */
  header: Uint8Array;
  /** The specs in file order. */
  order: TensorSpec[];
  /** Where each tensor of `order` lands (offsets relative to the data section). */
  tensors: TensorInfo[];
  /** Bytes of the whole file. */
  totalBytes: number;
}

const internal = (msg: string): RuntimeFailure => new RuntimeFailure(`internal: ${msg}`);

/** Copied tensors up to this size are read whole into one reused buffer (writeSafetensors); larger ones are streamed in chunks. */
const WHOLE_COPY_BYTES = 4 << 20;

/** Rust `String` order: by UTF-8 bytes, which is code point order (JS `<` compares UTF-16 units). */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // surrogates (0xD800–0xDFFF) encode code points above every BMP unit
    if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
    if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
    return x - y;
  }
  return a.length - b.length;
}

const LONE_SURROGATE = /\p{Surrogate}/u;

/** Check the specs, order them as the reference does, and build the header bytes. */
export function layoutSafetensors(specs: readonly TensorSpec[], metadata: Record<string, string> | null): SafetensorsLayout {
  const records: { spec: TensorSpec; size: number; rank: number }[] = [];
  const names = new Set<string>();
  for (const s of specs) {
    const what = (): string => `output tensor ${JSON.stringify(s.name)}`;
    if (typeof s.name !== "string") throw internal(`tensor name ${String(s.name)} is not a string`);
    if (s.name === "__metadata__") throw internal(`"__metadata__" cannot be a tensor name`);
    if (LONE_SURROGATE.test(s.name)) throw internal(`${what()} is not valid Unicode (lone surrogate)`);
    if (names.has(s.name)) throw internal(`duplicate ${what()}`);
    names.add(s.name);
    if (!isDType(s.dtype)) throw internal(`${what()} has unknown dtype ${String(s.dtype)}`);
    if (!Array.isArray(s.shape)) throw internal(`${what()} has invalid shape ${JSON.stringify(s.shape)}`);
    const size = tensorByteLength(s.dtype, s.shape);
    if (Number.isNaN(size))
      throw internal(`${what()}: ${s.dtype} ${JSON.stringify(s.shape)} is an invalid shape, overflows, or is not a whole number of bytes`);
    const sources = [s.data, s.produce, s.pieces, s.copyFrom].filter((x) => x !== undefined).length;
    if (sources !== 1) throw internal(`${what()} needs exactly one of data, produce, pieces, copyFrom (has ${sources})`);
    if (s.byteLength !== undefined && s.byteLength !== size)
      throw internal(`${what()}: byteLength ${s.byteLength}, but ${s.dtype} [${s.shape.join(", ")}] is ${size} bytes`);
    if (s.data !== undefined && s.data.byteLength !== size) throw internal(`${what()}: data is ${s.data.byteLength} bytes, expected ${size}`);
    if (s.copyFrom) {
      const t = s.copyFrom.tensor;
      if (t.dtype !== s.dtype || t.end - t.begin !== size) {
        throw internal(`${what()} copies ${t.name} (${t.dtype}, ${t.end - t.begin} bytes) as ${s.dtype} [${s.shape.join(", ")}] (${size} bytes)`);
      }
    }
    records.push({ spec: s, size, rank: dtypeRank(s.dtype) });
  }
  if (metadata !== null) {
    if (typeof metadata !== "object" || Array.isArray(metadata)) throw internal("metadata must be an object of strings or null");
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw internal(`metadata value of ${JSON.stringify(k)} is not a string`);
      if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) throw internal(`metadata ${JSON.stringify(k)} is not valid Unicode (lone surrogate)`);
    }
  }

  records.sort((a, b) => b.rank - a.rank || compareNames(a.spec.name, b.spec.name));
  let json = metadata !== null ? `{"__metadata__":${JSON.stringify(metadata)}` : "{";
  const order: TensorSpec[] = [];
  const tensors: TensorInfo[] = [];
  let offset = 0;
  for (const { spec: s, size } of records) {
    const info: TensorInfo = { name: s.name, dtype: s.dtype, shape: s.shape.slice(), begin: offset, end: offset + size };
    order.push(s);
    tensors.push(info);
    if (json.length > 1) json += ",";
    json += `${JSON.stringify(s.name)}:{"dtype":"${s.dtype}","shape":[${s.shape.join(",")}],"data_offsets":[${offset},${offset + size}]}`;
    offset += size;
  }
  json += "}";
  const jsonLength = Buffer.byteLength(json, "utf8");
  const n = Math.ceil(jsonLength / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  if (n > MAX_HEADER_SIZE) {
    throw new SafetensorsError("HeaderTooLarge", "output", {
      detail: `the header would be ${n} bytes; the limit is ${MAX_HEADER_SIZE}`,
      hint: "the metadata is too large to store in a safetensors header",
    });
  }
  const header = Buffer.allocUnsafe(N_LEN + n);
  header.writeBigUInt64LE(BigInt(n), 0);
  header.write(json, N_LEN, "utf8");
  header.fill(0x20, N_LEN + jsonLength);
  return { header, order, tensors, totalBytes: N_LEN + n + offset };
}

/**
 * Write a safetensors file to `sink`: the header, then each tensor in file order. `produce()` and
 * `pieces()` are called lazily in that order and their lengths checked; `copyFrom` tensors are
 * read whole into one buffer reused for the file (up to WHOLE_COPY_BYTES), larger ones streamed in chunks.
 */
export async function writeSafetensors(sink: ByteSink, specs: readonly TensorSpec[], metadata: Record<string, string> | null): Promise<void> {
  const { header, order, tensors } = layoutSafetensors(specs, metadata);
  const copyBuffer = growingBuffer(WHOLE_COPY_BYTES);
  await sink.write(header);
  for (let i = 0; i < order.length; i++) {
    const s = order[i];
    const size = tensors[i].end - tensors[i].begin;
    if (s.data !== undefined) {
      if (size > 0) await sink.write(s.data);
    } else if (s.produce !== undefined) {
      const data = await s.produce();
      if (!(data instanceof Uint8Array) || data.byteLength !== size) {
        throw internal(`produced ${data instanceof Uint8Array ? data.byteLength : String(data)} bytes for ${s.name}, expected ${size}`);
      }
      if (size > 0) await sink.write(data);
    } else if (s.pieces !== undefined) {
      let written = 0;
      for await (const piece of s.pieces()) {
        if (!(piece instanceof Uint8Array) || written + piece.byteLength > size) throw internal(`produced more than the ${size} bytes of ${s.name}`);
        written += piece.byteLength;
        if (piece.byteLength > 0) await sink.write(piece);
      }
      if (written !== size) throw internal(`produced ${written} bytes for ${s.name}, expected ${size}`);
    } else {
      const { file, tensor, check } = s.copyFrom!;
      if (size <= WHOLE_COPY_BYTES) {
        // read whole into this file's copy buffer, reused from tensor to tensor (a sink is done with
        // a chunk once its write resolves): no fresh pages to fault in for every tensor
        const bytes = await file.readRawShared(tensor, copyBuffer);
        if (bytes.byteLength !== size) throw internal(`copied ${bytes.byteLength} bytes for ${s.name}, expected ${size}`);
        check?.(bytes, 0);
        if (size > 0) await sink.write(bytes);
        continue;
      }
      let copied = 0;
      await file.copyRaw(tensor, async (chunk) => {
        check?.(chunk, copied);
        copied += chunk.byteLength;
        await sink.write(chunk);
      });
      if (copied !== size) throw internal(`copied ${copied} bytes for ${s.name}, expected ${size}`);
    }
  }
}

/** The whole file in memory (tests, small outputs). */
export async function serializeSafetensors(specs: readonly TensorSpec[], metadata: Record<string, string> | null): Promise<Buffer> {
  const { totalBytes } = layoutSafetensors(specs, metadata);
  const out = Buffer.allocUnsafeSlow(totalBytes);
  let at = 0;
  await writeSafetensors(
    {
      async write(chunk) {
        if (at + chunk.byteLength > totalBytes) throw internal(`serialized more than the ${totalBytes} bytes laid out`);
        out.set(chunk, at);
        at += chunk.byteLength;
      },
    },
    specs,
    metadata,
  );
  if (at !== totalBytes) throw internal(`serialized ${at} bytes, laid out ${totalBytes}`);
  return out;
}
