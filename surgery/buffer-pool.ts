// Byte buffers reused by exact size: a command streaming many equally shaped tensors reads each
// into a buffer taken here and gives it back when done, instead of touching fresh pages per tensor.
export class BufferPool {
  private readonly free = new Map<number, Uint8Array[]>();

  /** A buffer of exactly n bytes (contents undefined). */
  take(n: number): Uint8Array {
    return this.free.get(n)?.pop() ?? Buffer.allocUnsafeSlow(n);
  }

  /** Back to the pool; the caller no longer touches it. */
  give(b: Uint8Array): void {
    const list = this.free.get(b.byteLength);
    if (list) list.push(b);
    else this.free.set(b.byteLength, [b]);
  }
}
