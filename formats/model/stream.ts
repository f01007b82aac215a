// What apply and extract share about a model's weights: the dtypes they read and write, and the
// reused buffer (the decode/fold/encode loops are the backend's mergeWeight and weightDelta).
import type { DType } from "../safetensors/index.js";

/** The float dtypes full models are read in. */
export const MODEL_DTYPES: readonly DType[] = ["F32", "F16", "BF16"];

/**
 * One buffer reused for every tensor of a run, sized for the largest and touched once: on virtual
 * machines the first touch of fresh pages costs more than the arithmetic on them.
 */
export class Scratch {
  private buf = new ArrayBuffer(0);
  constructor(private readonly capacityBytes: number) {}
  bytes(n: number): Uint8Array {
    if (n > this.capacityBytes) throw new RangeError(`internal: scratch of ${this.capacityBytes} bytes asked for ${n}`);
    if (this.buf.byteLength === 0) this.buf = new ArrayBuffer(this.capacityBytes);
    return new Uint8Array(this.buf, 0, n);
  }
  floats(n: number): Float32Array {
    return new Float32Array(this.bytes(4 * n).buffer, 0, n);
  }
}
