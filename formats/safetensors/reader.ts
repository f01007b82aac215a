// Reading safetensors: a file (fs.open + positional reads: 8 bytes, then the header, then tensor
// bytes on demand, never the whole file; a small file of small tensors in one read) or an in-memory buffer (stdin, which must be buffered
// whole since the header offsets need random access).
import { closeSync, createReadStream, fstatSync, openSync, read as readAsync, readSync } from "node:fs";
import type { BufferPool } from "../../common/buffer-pool.js";
import { RuntimeFailure, UsageError } from "../../common/errors.js";
import { countRead } from "../../common/io-meter.js";
import { canDecode, decodeToFloat32, decodeToFloat64, DECODABLE_DTYPES, DTYPE_BITS, type DType } from "../../common/dtype.js";
import { SafetensorsError, UnsupportedDTypeError } from "./errors.js";
import { parseHeader, readHeaderLength, type Header, type TensorInfo } from "./header.js";
import {
  COPY_CHUNK_BYTES,
  MAX_BUFFER_BYTES,
  MAX_STREAM_BYTES,
  N_LEN,
  POOLED_WHOLE_READ_BYTES,
  READ_CHUNK_BYTES,
  SMALL_TENSOR_BYTES,
  SYNC_READ_BYTES,
  WHOLE_READ_BYTES,
} from "./limits.js";

type Source =
  | { kind: "file"; fd: number; path: string; inFlight: Set<Promise<unknown>> }
  | { kind: "buffer"; buf: Buffer; pool?: BufferPool }
  | { kind: "derived"; base: SafetensorsFile | null; produce: Map<string, Producer>; release?: () => Promise<void> };

/** A tensor of a derived file (SafetensorsFile.derived): its bytes computed on demand, or those of a tensor of the base file. */
/**
 * Computes a derived tensor's bytes. `take`, when given (readRawShared's), hands out buffers the
 * caller gives back to its pool once done with the bytes: a producer may build its result in them
 * instead of fresh memory; without it the result must be memory of its own.
 */
export type Producer = (take?: (bytes: number) => Uint8Array) => Promise<Uint8Array>;
export type DerivedTensor = { name: string; dtype: DType; shape: number[]; produce: Producer } | { name: string; from: TensorInfo };

export class SafetensorsFile {
  /** What messages call this file: the path as given, or "<stdin>". */
  readonly label: string;
  readonly header: Header;
  /** Length of the whole file in bytes. */
  readonly size: number;
  private source: Source | null;

  private constructor(label: string, header: Header, size: number, source: Source) {
    this.label = label;
    this.header = header;
    this.size = size;
    this.source = source;
  }

  /**
   * Open a file and validate its header, reading only 8 + N bytes (a file of at most
   * `opts.wholeReadBytes`, by default WHOLE_READ_BYTES, whose tensors average at most
   * SMALL_TENSOR_BYTES, or with `opts.buffers` any file of at most POOLED_WHOLE_READ_BYTES, is read
   * whole, in one more read: into a buffer of `opts.buffers` when given,
   * which close() gives back, so nothing may use the file's bytes after close). A FIFO or character device
   * (`<(…)`, /dev/stdin) cannot be read positionally and is buffered like a stream instead.
   */
  static async open(path: string, label: string = path, opts: { wholeReadBytes?: number; buffers?: BufferPool } = {}): Promise<SafetensorsFile> {
    // Opening, the header and small reads are synchronous: from the page cache they take
    // microseconds, while each thread-pool round trip costs two thread wake-ups (catalog mode
    // opens thousands of files; docs/BENCHMARKS.md "catalog").
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw openError(e, label);
    }
    try {
      const st = fstatSync(fd);
      if (st.isDirectory()) throw new UsageError(`${label}: is a directory, expected a .safetensors file`);
      if (!st.isFile()) {
        const stream = createReadStream("", { fd, autoClose: false });
        const f = await SafetensorsFile.fromStream(stream, label);
        closeSync(fd);
        return f;
      }
      const size = st.size;
      const prefix = Buffer.alloc(Math.min(N_LEN, size));
      await readFully(fd, prefix, 0, label, "the header length");
      const n = readHeaderLength(prefix, size, label);
      const head = Buffer.allocUnsafe(N_LEN + n);
      prefix.copy(head, 0);
      await readFully(fd, head.subarray(N_LEN), N_LEN, label, "the header");
      const header = parseHeader(head, size, label);
      const count = header.tensors.length;
      if (
        size <= (opts.wholeReadBytes ?? WHOLE_READ_BYTES) &&
        count > 0 &&
        ((opts.buffers && size <= POOLED_WHOLE_READ_BYTES) || (size - head.length) / count <= SMALL_TENSOR_BYTES)
      ) {
        // Many small tensors (a LyCORIS or kohya SD file): the rest of the file in one read, since
        // hundreds of positional reads of a few KB each cost more than their bytes.
        const pool = opts.buffers;
        const buf = pool ? pool.take(size) : Buffer.allocUnsafeSlow(size);
        try {
          head.copy(buf, 0);
          await readFully(fd, buf.subarray(head.length), head.length, label, "the tensors");
        } catch (e) {
          pool?.give(buf);
          throw e;
        }
        closeSync(fd);
        return new SafetensorsFile(label, header, size, pool ? { kind: "buffer", buf, pool } : { kind: "buffer", buf });
      }
      return new SafetensorsFile(label, header, size, { kind: "file", fd, path, inFlight: new Set() });
    } catch (e) {
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
      throw e;
    }
  }

  /** Validate a whole file held in memory. The buffer must not be modified afterwards. */
  static fromBuffer(buf: Buffer, label: string): SafetensorsFile {
    const header = parseHeader(buf, buf.length, label);
    return new SafetensorsFile(label, header, buf.length, { kind: "buffer", buf });
  }

  /**
   * A file whose tensors are computed (adapter families stored as something other than B·A: their
   * exact factors are derived on read; docs/formats.md "Derived modules") or taken from `base`. It
   * has no bytes of its own: offsets are virtual, `size` is the base's, and close() closes the base.
   * A producer is called on every read of its tensor and must return exactly the tensor's bytes.
   * `opts.close` releases what the producers read from (a PyTorch checkpoint's file) and
   * `opts.size` is that file's length.
   */
  static derived(
    label: string,
    base: SafetensorsFile | null,
    tensors: readonly DerivedTensor[],
    metadata: Record<string, string> | null,
    opts: { size?: number; close?: () => Promise<void> } = {},
  ): SafetensorsFile {
    const produce = new Map<string, Producer>();
    const infos: TensorInfo[] = [];
    const byName = new Map<string, TensorInfo>();
    let at = 0;
    for (const t of tensors) {
      if (byName.has(t.name)) throw new RuntimeFailure(`internal: derived file ${label} names tensor ${t.name} twice`);
      const dtype = "from" in t ? t.from.dtype : t.dtype;
      const shape = "from" in t ? t.from.shape : t.shape;
      const bytes = "from" in t ? t.from.end - t.from.begin : (shape.reduce((x, y) => x * y, 1) * DTYPE_BITS[dtype]) / 8;
      const info: TensorInfo = { name: t.name, dtype, shape: [...shape], begin: at, end: at + bytes };
      at += bytes;
      infos.push(info);
      byName.set(t.name, info);
      if ("from" in t) {
        if (!base) throw new RuntimeFailure(`internal: derived file ${label} copies ${t.name} without a base file`);
        const src = t.from;
        produce.set(t.name, () => base.readRaw(src));
      } else produce.set(t.name, t.produce);
    }
    const header: Header = { headerSize: 0, dataStart: 0, tensors: infos, byName, metadata };
    return new SafetensorsFile(label, header, opts.size ?? base?.size ?? at, {
      kind: "derived",
      base,
      produce,
      ...(opts.close ? { release: opts.close } : {}),
    });
  }

  /** Whether this file's tensors are computed (SafetensorsFile.derived) rather than stored. */
  get isDerived(): boolean {
    return this.source?.kind === "derived";
  }

  /**
   * Buffer a whole stream (stdin), up to `maxBytes` (StreamTooLarge beyond), then validate it.
   * A header length over the limit is refused as soon as the first 8 bytes arrive.
   */
  static async fromStream(stream: NodeJS.ReadableStream, label: string, maxBytes: number = MAX_STREAM_BYTES): Promise<SafetensorsFile> {
    const limit = Math.min(maxBytes, MAX_BUFFER_BYTES);
    const chunks: Buffer[] = [];
    let total = 0;
    let checkedPrefix = false;
    for await (const chunk of stream as AsyncIterable<Buffer | string>) {
      if (typeof chunk === "string") throw new RuntimeFailure(`internal: ${label} was opened in text mode; safetensors is binary`);
      total += chunk.length;
      if (total > limit) {
        throw new SafetensorsError("StreamTooLarge", label, {
          detail: `more than ${limit} bytes arrived; a stream is buffered whole and this is the limit`,
          hint: "save the stream to a file and pass its path instead of -",
        });
      }
      chunks.push(chunk);
      if (!checkedPrefix && total >= N_LEN) {
        checkedPrefix = true;
        const prefix = Buffer.concat(chunks, total).subarray(0, N_LEN);
        readHeaderLength(prefix, Number.MAX_SAFE_INTEGER, label); // HeaderTooLarge without waiting for the rest
      }
    }
    // a fresh, unpooled buffer: offset 0, so tensor views are aligned
    const buf = Buffer.allocUnsafeSlow(total);
    let at = 0;
    for (const c of chunks) {
      c.copy(buf, at);
      at += c.length;
    }
    return SafetensorsFile.fromBuffer(buf, label);
  }

  /** Every tensor, in file-offset order. */
  get tensors(): readonly TensorInfo[] {
    return this.header.tensors;
  }

  get metadata(): Record<string, string> | null {
    return this.header.metadata;
  }

  has(name: string): boolean {
    return this.header.byName.has(name);
  }

  tensor(name: string): TensorInfo {
    const t = this.header.byName.get(name);
    if (!t) throw new SafetensorsError("TensorNotFound", this.label, { tensor: name, detail: `the file has ${this.header.tensors.length} tensors` });
    return t;
  }

  private resolve(t: string | TensorInfo): TensorInfo {
    return typeof t === "string" ? this.tensor(t) : t;
  }

  private live(): Source {
    if (!this.source) throw new RuntimeFailure(`internal: ${this.label} was read after close()`);
    return this.source;
  }

  /** The exact bytes of a tensor, in a fresh buffer the caller owns (aligned: byteOffset 0). */
  async readRaw(t: string | TensorInfo): Promise<Buffer> {
    const info = this.resolve(t);
    const out = Buffer.allocUnsafeSlow(this.rawLength(info));
    await this.readRawInto(info, out);
    return out;
  }

  /**
   * The exact bytes of a tensor into `out` (exactly its byte length), which is returned: lets a
   * caller reuse buffers instead of touching fresh pages for every tensor.
   */
  async readRawInto(t: string | TensorInfo, out: Uint8Array): Promise<Uint8Array> {
    const info = this.resolve(t);
    const len = this.rawLength(info);
    if (out.byteLength !== len) throw new RuntimeFailure(`internal: readRawInto ${info.name} with ${out.byteLength} bytes for ${len}`);
    const src = this.live();
    if (src.kind === "buffer") {
      src.buf.copy(out, 0, this.header.dataStart + info.begin, this.header.dataStart + info.end);
      return out;
    }
    if (src.kind === "derived") {
      out.set(await this.produced(src, info));
      return out;
    }
    await readFully(src.fd, out, this.header.dataStart + info.begin, this.label, `tensor ${JSON.stringify(info.name)}`, info.name, src.inFlight);
    return out;
  }

  /**
   * The bytes of a tensor for reading only: a computed tensor's bytes as its producer returned
   * them (no copy: the derived LyCORIS factors are the largest buffers of their commands; the
   * producer may build them in buffers from `take`, which the caller gives back), a view
   * of a file held in memory (possibly unaligned), any other tensor read into the buffer `take`
   * gives (exactly its byte length) as readRawInto does.
   * The caller must not write to the result.
   */
  async readRawShared(t: string | TensorInfo, take: (bytes: number) => Uint8Array): Promise<Uint8Array> {
    const info = this.resolve(t);
    const src = this.live();
    if (src.kind === "derived") return this.produced(src, info, take);
    if (src.kind === "buffer") return src.buf.subarray(this.header.dataStart + info.begin, this.header.dataStart + info.end);
    return this.readRawInto(info, take(this.rawLength(info)));
  }

  /** Bytes [from, from + out.byteLength) of a tensor's stored data into `out` (streamed reads in chunks of reused buffers). */
  async readRawRangeInto(t: string | TensorInfo, from: number, out: Uint8Array): Promise<Uint8Array> {
    const info = this.resolve(t);
    const len = this.rawLength(info);
    if (!(from >= 0 && from + out.byteLength <= len))
      throw new RuntimeFailure(`internal: readRawRangeInto ${info.name} [${from}, +${out.byteLength}) of ${len}`);
    const src = this.live();
    const at = this.header.dataStart + info.begin + from;
    if (src.kind === "buffer") src.buf.copy(out, 0, at, at + out.byteLength);
    else if (src.kind === "derived") out.set((await this.produced(src, info)).subarray(from, from + out.byteLength));
    else await readFully(src.fd, out, at, this.label, `tensor ${JSON.stringify(info.name)}`, info.name, src.inFlight);
    return out;
  }

  private rawLength(info: TensorInfo): number {
    const len = info.end - info.begin;
    if (len > MAX_BUFFER_BYTES) {
      throw new RuntimeFailure(
        `${this.label}: tensor ${JSON.stringify(info.name)} is ${len} bytes, more than the largest buffer Node can allocate (${MAX_BUFFER_BYTES} bytes)`,
        { hint: "tensors this large can only be copied through, not computed on" },
      );
    }
    return len;
  }

  /** A tensor decoded to Float32Array (F16/BF16 exactly; F64 and 64-bit integers rounded). */
  async readFloat32(t: string | TensorInfo): Promise<Float32Array> {
    const info = this.decodable(t);
    return decodeToFloat32(info.dtype, await this.readRaw(info), { mayAlias: true });
  }

  /**
   * A tensor decoded to Float64Array: a fresh one (never sharing the file's memory), or `into`
   * (exactly the tensor's element count; a pooled scratch array) when given.
   */
  async readFloat64(t: string | TensorInfo, into?: Float64Array): Promise<Float64Array> {
    const info = this.decodable(t);
    const src = this.live();
    // a file held in memory is decoded from its own bytes (no copy first)
    if (src.kind === "buffer")
      return decodeToFloat64(info.dtype, src.buf.subarray(this.header.dataStart + info.begin, this.header.dataStart + info.end), into ? { into } : {});
    return decodeToFloat64(info.dtype, await this.readRaw(info), into ? { into } : { mayAlias: true });
  }

  private decodable(t: string | TensorInfo): TensorInfo {
    const info = this.resolve(t);
    if (!canDecode(info.dtype)) throw new UnsupportedDTypeError(info.dtype, DECODABLE_DTYPES, { file: this.label, tensor: info.name });
    return info;
  }

  /**
   * Stream the bytes of a tensor to `write` in chunks of at most `chunkSize` bytes (the last one
   * shorter), awaiting each write. Each chunk is a fresh buffer (or a view of the immutable input
   * buffer), so a consumer may keep it. Passthrough tensors of many GB never sit in memory whole.
   */
  async copyRaw(t: string | TensorInfo, write: (chunk: Uint8Array) => Promise<void>, chunkSize: number = COPY_CHUNK_BYTES): Promise<void> {
    const info = this.resolve(t);
    if (!(chunkSize >= 1)) throw new RangeError(`internal: copyRaw chunk size ${chunkSize}`);
    const step = Math.min(Math.floor(chunkSize), READ_CHUNK_BYTES);
    const src = this.live();
    if (src.kind === "derived") {
      const bytes = await this.produced(src, info);
      for (let at = 0; at < bytes.byteLength; at += step) await write(bytes.subarray(at, Math.min(at + step, bytes.byteLength)));
      return;
    }
    const base = this.header.dataStart + info.begin;
    const len = info.end - info.begin;
    for (let at = 0; at < len; at += step) {
      const n = Math.min(step, len - at);
      if (src.kind === "buffer") {
        await write(src.buf.subarray(base + at, base + at + n));
      } else {
        const chunk = Buffer.allocUnsafeSlow(n);
        await readFully(src.fd, chunk, base + at, this.label, `tensor ${JSON.stringify(info.name)}`, info.name, src.inFlight);
        await write(chunk);
      }
    }
  }

  private async produced(src: Extract<Source, { kind: "derived" }>, info: TensorInfo, take?: (bytes: number) => Uint8Array): Promise<Uint8Array> {
    const bytes = await src.produce.get(info.name)!(take);
    if (bytes.byteLength !== info.end - info.begin)
      throw new RuntimeFailure(`internal: derived tensor ${info.name} of ${this.label} produced ${bytes.byteLength} bytes, expected ${info.end - info.begin}`);
    return bytes;
  }

  /** Release the file descriptor (idempotent). */
  async close(): Promise<void> {
    const src = this.source;
    this.source = null;
    if (src?.kind === "file") {
      // A read still in flight on the thread pool would otherwise read whatever file reuses the descriptor.
      await Promise.allSettled(src.inFlight);
      closeSync(src.fd);
    }
    if (src?.kind === "buffer") src.pool?.give(src.buf);
    if (src?.kind === "derived") {
      await src.base?.close();
      await src.release?.();
    }
  }
}

function openError(e: unknown, label: string): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === "ENOENT" || code === "ENOTDIR") return new UsageError(`${label}: no such file`, { cause: e });
  if (code === "EISDIR") return new UsageError(`${label}: is a directory, expected a .safetensors file`, { cause: e });
  return new RuntimeFailure(`${label}: cannot open: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

/**
 * Fill `buf` from `position`, in reads of at most READ_CHUNK_BYTES. A read that comes back empty
 * means the file is shorter than its header said (truncated after it was opened).
 */
async function readFully(
  fd: number,
  buf: Uint8Array,
  position: number,
  label: string,
  what: string,
  tensor?: string,
  /** The file's reads on the thread pool, which close() waits for (a reused descriptor must not be read). */
  inFlight?: Set<Promise<unknown>>,
): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(buf.length - done, READ_CHUNK_BYTES);
    let bytesRead: number;
    try {
      if (want <= SYNC_READ_BYTES) bytesRead = readSync(fd, buf, done, want, position + done);
      else {
        const read = readAt(fd, buf, done, want, position + done);
        inFlight?.add(read);
        try {
          bytesRead = await read;
        } finally {
          inFlight?.delete(read);
        }
      }
    } catch (e) {
      throw new RuntimeFailure(`${label}: cannot read ${what}: ${(e as Error).message}`, { cause: e });
    }
    if (bytesRead === 0) {
      throw new SafetensorsError("MetadataIncompleteBuffer", label, {
        ...(tensor !== undefined ? { tensor } : {}),
        detail: `the file ended at byte ${position + done} while reading ${what} (${buf.length - done} bytes short)`,
        hint: "the file was truncated or replaced while it was being read",
      });
    }
    done += bytesRead;
    countRead(bytesRead);
  }
}

function readAt(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => readAsync(fd, buf, offset, length, position, (e, n) => (e ? reject(e) : resolve(n))));
}
