// Recognising a torch.save file from its first bytes (docs/formats.md "PyTorch checkpoints"),
// apart from the readers: the adapter loader asks this of every input and loads the checkpoint
// readers only for a file that is one.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** A zip local file header's signature "PK\x03\x04" (APPNOTE.TXT §4.3.7). */
export function isZipHead(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}

export type CheckpointKind = "zip" | "legacy" | "pickle";

/** torch/serialization.py MAGIC_NUMBER 0x1950a86a20f9469cfc6c as pickled by protocol ≥ 2 (PROTO n, LONG1 10 bytes). */
const LEGACY_MAGIC = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/**
 * What the first bytes of a file say it is: a zip (torch.save), torch's legacy stream, some other
 * pickle, or null (safetensors or anything else). A safetensors file has "{" at byte 8, which
 * neither a zip local header (compression method) nor a pickle has there.
 */
export function sniffCheckpoint(head: Uint8Array): CheckpointKind | null {
  if (head.length >= 9 && head[8] === 0x7b) return null;
  if (isZipHead(head)) return "zip";
  if (head.length >= 2 + LEGACY_MAGIC.length && head[0] === 0x80 && LEGACY_MAGIC.every((b, i) => head[2 + i] === b)) return "legacy";
  if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5) return "pickle";
  return null;
}

/**
 * sniffCheckpoint on the first 16 bytes of a regular file (a FIFO is never sniffed: it would lose
 * them). Synchronous: 16 bytes cost less than a thread-pool round trip.
 */
export async function sniffCheckpointFile(path: string): Promise<CheckpointKind | null> {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    if (!fstatSync(fd).isFile()) return null;
    const head = Buffer.alloc(16);
    const n = readSync(fd, head, 0, 16, 0);
    return sniffCheckpoint(head.subarray(0, n));
  } catch {
    return null; // the safetensors reader reports it
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
