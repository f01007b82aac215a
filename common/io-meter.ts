// Bytes read from input files so far in this process: the safetensors reader counts every read,
// and progress lines divide by the elapsed time to show the read rate of any command.
let readBytes = 0;

/** Count `n` bytes as read (formats/safetensors/reader.ts, after each read). */
export function countRead(n: number): void {
  readBytes += n;
}

/** Bytes read so far. */
export function bytesRead(): number {
  return readBytes;
}
