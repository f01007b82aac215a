// Byte buffers reused by size class: a command streaming many tensors (or a catalog reading
// thousands of files) reads each into a buffer taken here and gives it back when done, instead of
// touching fresh pages for every one; on these machines the page faults of fresh memory cost more
// than the reads themselves (docs/BENCHMARKS.md "catalog").
export class BufferPool {
  /** Free ArrayBuffers by byte length (a size class). */
  private readonly free = new Map<number, ArrayBuffer[]>();
  private held = 0;

  /** @param maxHeldBytes bytes kept for reuse at most; a buffer given back beyond that is dropped. */
  constructor(private readonly maxHeldBytes = Infinity) {}

  /**
   * A buffer of exactly n bytes (contents undefined) at offset 0 of an ArrayBuffer of n's size
   * class (so that buffers of nearby sizes are shared; pages beyond n are not touched).
   */
  take(n: number): Buffer {
    const size = classOf(n);
    const ab = this.free.get(size)?.pop();
    if (ab) {
      this.held -= size;
      return Buffer.from(ab, 0, n);
    }
    return Buffer.from(Buffer.allocUnsafeSlow(size).buffer, 0, n);
  }

  /** Back to the pool (any view that take returned, or one over the same ArrayBuffer); the caller no longer touches it. */
  give(b: Uint8Array): void {
    const ab = b.buffer as ArrayBuffer;
    const size = ab.byteLength;
    if (size !== classOf(size) || this.held + size > this.maxHeldBytes) return; // not one of ours, or over the cap
    const list = this.free.get(size);
    if (list) list.push(ab);
    else this.free.set(size, [ab]);
    this.held += size;
  }
}

/** n rounded up to a multiple of an eighth of the power of two ≥ n (at least 64 bytes): less than 25% more. */
function classOf(n: number): number {
  let p = 64;
  while (p < n) p *= 2;
  const step = Math.max(64, p / 8);
  return Math.ceil(n / step) * step;
}

/**
 * take(n) for one user at a time: a view of n bytes of one buffer, reused by every call and grown
 * when n does not fit (to n, or twice its size up to `growTo`); a caller is done with one view
 * before it takes the next.
 */
export function growingBuffer(growTo = Infinity): (n: number) => Buffer {
  let buf: Buffer | null = null;
  return (n) => {
    if (!buf || buf.length < n) buf = Buffer.allocUnsafeSlow(Math.max(n, Math.min(2 * (buf?.length ?? 0), growTo)));
    return buf.subarray(0, n);
  };
}
