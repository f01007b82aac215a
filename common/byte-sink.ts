// Where output bytes go: a file written in batches (with the test hook that fails like a full disk)
// or standard output with backpressure. I/O failures become RuntimeFailure (exit 1) naming the target.
import type { FileHandle } from "node:fs/promises";
import { LoraError, RuntimeFailure } from "./errors.js";

/** Writes to an output file are batched into buffers of this size. */
export const WRITE_BATCH_BYTES = 8 << 20;

/**
 * Every this many bytes written, the file's data so far is handed to the disk (an fdatasync left
 * running while the writer goes on), so that the fsync that ends every output finds little left:
 * on a large output the writeback then overlaps the computing instead of following it.
 */
export const WRITEBACK_BYTES = 64 << 20;

/** Where output bytes go: a temp file, stdout, memory. `write` resolves when the chunk may be reused. */
export interface ByteSink {
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Overwrite bytes already written, at `position` from the start (file sinks only; a stream has
   * none). The safetensors writer uses it to fill content hashes into the header once the data is
   * written (formats/safetensors/content-hash.ts).
   */
  rewrite?(position: number, bytes: Uint8Array): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Test hook: LORA_TEST=1 LORA_TEST_FAIL_WRITE_AFTER=<bytes> makes every sink fail with ENOSPC
// once that many bytes have been written to it.

function faultLimit(): number | null {
  if (process.env.LORA_TEST !== "1") return null;
  const v = process.env.LORA_TEST_FAIL_WRITE_AFTER;
  if (v === undefined || v === "") return null;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : null;
}

function injectedEnospc(): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error("ENOSPC: no space left on device, write (injected by LORA_TEST_FAIL_WRITE_AFTER)");
  e.code = "ENOSPC";
  e.errno = -28;
  e.syscall = "write";
  return e;
}

/** Wrap a sink so it fails like a full disk after `limit` bytes (only when the test hook is set). */
function withFault(sink: ByteSink): ByteSink {
  const limit = faultLimit();
  if (limit === null) return sink;
  let written = 0;
  return {
    async write(chunk) {
      if (written + chunk.byteLength > limit) {
        const room = limit - written;
        if (room > 0) await sink.write(chunk.subarray(0, room));
        written = limit;
        throw injectedEnospc();
      }
      written += chunk.byteLength;
      await sink.write(chunk);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A batched file writer

// Batch buffers of finished writers, reused by the next ones: a catalog writes thousands of files,
// and a fresh 8 MB buffer for each counts against V8's external memory, which then schedules a
// full garbage collection every few files (docs/BENCHMARKS.md "catalog").
const spareBatches: Buffer[] = [];
const MAX_SPARE_BATCHES = 4;

export class FileWriter implements ByteSink {
  private batch: Buffer;
  private used = 0;
  private position = 0;
  /** The latest early writeback (settled or not), whether it still runs, its failure, and where the next one starts. */
  private writeback: Promise<void> = Promise.resolve();
  private writebackRunning = false;
  private writebackFailure: unknown = null;
  private nextWriteback = WRITEBACK_BYTES;
  constructor(private readonly fh: FileHandle) {
    this.batch = spareBatches.pop() ?? Buffer.allocUnsafeSlow(WRITE_BATCH_BYTES);
  }
  /** Hand the batch buffer on to the next writer; call once this writer is done (flushed or failed). */
  release(): void {
    if (this.batch.length === 0) return;
    if (spareBatches.length < MAX_SPARE_BATCHES) spareBatches.push(this.batch);
    this.batch = Buffer.alloc(0);
    this.used = 0;
  }
  async write(chunk: Uint8Array): Promise<void> {
    if (chunk.byteLength === 0) return;
    if (chunk.byteLength >= this.batch.length / 2) {
      // a large chunk goes out as it is (the caller keeps it until this resolves), not copied into the batch
      await this.flushBatch();
      await this.writeAll(chunk);
      return;
    }
    if (this.used + chunk.byteLength <= this.batch.length) {
      this.batch.set(chunk, this.used);
      this.used += chunk.byteLength;
      if (this.used === this.batch.length) await this.flushBatch();
      return;
    }
    await this.flushBatch();
    this.batch.set(chunk, 0);
    this.used = chunk.byteLength;
  }
  /** Write out the batch; also waits for a running early writeback (its failure is reported here). */
  async flush(): Promise<void> {
    await this.flushBatch();
    await this.settle();
  }
  private async flushBatch(): Promise<void> {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    await this.writeAll(this.batch.subarray(0, n));
  }
  private async settle(): Promise<void> {
    await this.writeback;
    const e = this.writebackFailure;
    this.writebackFailure = null;
    if (e !== null) throw e;
  }
  /** Overwrite `bytes` at `position` (everything batched is flushed first; the write position is kept). */
  async rewrite(position: number, bytes: Uint8Array): Promise<void> {
    await this.flush();
    if (position + bytes.byteLength > this.position) throw new RuntimeFailure("internal: rewrite past the bytes written");
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await this.fh.write(bytes, done, bytes.byteLength - done, position + done);
      done += bytesWritten;
    }
  }
  private async writeAll(data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.byteLength) {
      const { bytesWritten } = await this.fh.write(data, done, Math.min(data.byteLength - done, 1 << 30), this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
    if (this.position >= this.nextWriteback && !this.writebackRunning) {
      this.nextWriteback = this.position + WRITEBACK_BYTES;
      this.writebackRunning = true;
      // never rejects: a failure is kept for settle() to throw
      this.writeback = this.fh.datasync().then(
        () => {
          this.writebackRunning = false;
        },
        (e) => {
          this.writebackRunning = false;
          this.writebackFailure ??= e;
        },
      );
    }
  }
}

/** The sink handed to `fill`: batched writes, the test fault hook, I/O errors as RuntimeFailure. */
export function fileSink(writer: FileWriter, shown: string): ByteSink {
  const raw = withFault({ write: (chunk) => writer.write(chunk) });
  return {
    async write(chunk) {
      try {
        await raw.write(chunk);
      } catch (e) {
        throw writeFailure(shown, e);
      }
    },
    async rewrite(position, bytes) {
      try {
        await writer.rewrite(position, bytes);
      } catch (e) {
        throw writeFailure(shown, e);
      }
    },
  };
}

function describeIoError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ENOSPC") return "no space left on device";
  if (err?.code === "EDQUOT") return "disk quota exceeded";
  if (err?.code === "EACCES" || err?.code === "EPERM") return "permission denied";
  if (err?.code === "EROFS") return "read-only file system";
  return err?.message ?? String(e);
}

/** An I/O failure while writing `target`, as a RuntimeFailure (exit 1) naming it. */
export function writeFailure(target: string, e: unknown): LoraError {
  if (e instanceof LoraError) return e;
  return new RuntimeFailure(`cannot write ${target}: ${describeIoError(e)}`, { cause: e });
}
// ---------------------------------------------------------------------------------------------

/**
 * A sink over a writable stream (stdout): `write` resolves once the stream has handed the chunk on
 * (its callback), which also honours backpressure, so the caller may then reuse the chunk's
 * buffer; it rejects if the stream errors or is closed.
 */
export function stdoutSink(stream: NodeJS.WritableStream): ByteSink {
  const s = stream as NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean; errored?: Error | null };
  let failure: unknown = null;
  const sink: ByteSink = {
    write(chunk) {
      if (failure) return Promise.reject(failure);
      if (s.destroyed || s.writableEnded) return Promise.reject(s.errored ?? new RuntimeFailure("cannot write to standard output: it is closed"));
      if (chunk.byteLength === 0) return Promise.resolve();
      // Resolved by the write's callback, once the stream has handed the chunk on: until then a
      // stream may hold the chunk itself, and writers reuse a buffer once its write resolves.
      return new Promise<void>((resolvePromise, reject) => {
        const onError = (e: unknown): void => {
          failure ??= e;
        };
        const onClose = (): void => {
          cleanup();
          reject(failure ?? new RuntimeFailure("cannot write to standard output: it was closed"));
        };
        const cleanup = (): void => {
          s.removeListener("error", onError);
          s.removeListener("close", onClose);
        };
        s.once("error", onError);
        s.once("close", onClose);
        s.write(chunk, (e?: Error | null) => {
          cleanup();
          if (e) {
            failure ??= e;
            reject(failure);
          } else resolvePromise();
        });
      });
    },
  };
  const raw = withFault(sink);
  return {
    async write(chunk) {
      try {
        await raw.write(chunk);
      } catch (e) {
        // EPIPE stays as it is: bin/ ends quietly with status 0 when the reader went away
        if (e instanceof LoraError || (e as NodeJS.ErrnoException)?.code === "EPIPE") throw e;
        throw new RuntimeFailure(`cannot write to standard output: ${describeIoError(e)}`, { cause: e });
      }
    },
  };
}
