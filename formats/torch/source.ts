// Random access to the bytes of a checkpoint: a file read with positional reads (the file stays
// open until close()) or a buffer already in memory. Every read is checked against the length.
import { open, type FileHandle } from "node:fs/promises";
import { InvalidInputError, RuntimeFailure, UsageError } from "../../common/errors.js";

export interface ByteSource {
  readonly label: string;
  readonly size: number;
  /** Exactly `length` bytes from `position` (a fresh buffer); exit 3 when the range passes the end. */
  read(position: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

function checkRange(label: string, size: number, position: number, length: number, what: string): void {
  if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0 || position + length > size) {
    throw new InvalidInputError(`${label}: ${what} lies outside the file (bytes ${position}…${position + length} of ${size})`, {
      hint: "the file is truncated or corrupt",
    });
  }
}

export function bufferSource(buf: Uint8Array, label: string): ByteSource {
  return {
    label,
    size: buf.byteLength,
    async read(position, length) {
      checkRange(label, buf.byteLength, position, length, "a read");
      return buf.slice(position, position + length);
    },
    async close() {},
  };
}

export async function fileSource(path: string, label: string = path): Promise<ByteSource> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new UsageError(`${label}: no such file`, { cause: e });
    throw new RuntimeFailure(`${label}: cannot open: ${(e as Error).message}`, { cause: e });
  }
  const size = (await fh.stat()).size;
  let closed = false;
  return {
    label,
    size,
    async read(position, length) {
      checkRange(label, size, position, length, "a read");
      if (closed) throw new RuntimeFailure(`internal: ${label} was read after close()`);
      const out = Buffer.allocUnsafeSlow(length);
      let done = 0;
      while (done < length) {
        const want = Math.min(length - done, 1 << 30);
        let bytesRead: number;
        try {
          ({ bytesRead } = await fh.read(out, done, want, position + done));
        } catch (e) {
          throw new RuntimeFailure(`${label}: cannot read: ${(e as Error).message}`, { cause: e });
        }
        if (bytesRead === 0) throw new InvalidInputError(`${label}: the file ended at byte ${position + done}; it was truncated while being read`);
        done += bytesRead;
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}
