// A model tensor's values, streamed: decoded to float32 one chunk at a time (F32/F16/BF16 exactly)
// and folded into a float32 array, so a caller can form tuned − base (or W + ΔW) without holding
// either tensor whole.
import { InvalidInputError } from "../../common/errors.js";
import { decodeToFloat32, dtypeBits, f32BitsToBf16Bits, f32BitsToF16Bits, type DType } from "../safetensors/index.js";
import type { BaseTensor } from "./base-model.js";

/** The float dtypes full models are read in. */
export const MODEL_DTYPES: readonly DType[] = ["F32", "F16", "BF16"];

/** How a tensor's values land in the destination: copied, added or subtracted. */
export type FoldOp = "set" | "add" | "sub";

/**
 * Fold a tensor's values into `out` (its element count long): out = v, out += v or out −= v, in
 * float32 (F16/BF16 decode exactly; each add rounds once). The stored bytes are read whole into
 * `raw` (reused from tensor to tensor). `onBytes(n)` once read. Refuses a NaN/Inf value (exit 3).
 */
export async function foldInto(t: BaseTensor, label: string, out: Float32Array, op: FoldOp, raw: Scratch, onBytes?: (n: number) => void): Promise<void> {
  const dt = t.info.dtype;
  if (!MODEL_DTYPES.includes(dt)) throw new InvalidInputError(`${label}: tensor ${t.info.name} is ${dt}; only F32, F16 and BF16 weights are read`);
  const bytes = await t.file.readRawInto(t.info, raw.bytes(t.info.end - t.info.begin));
  onBytes?.(bytes.byteLength);
  const n = out.length;
  const eb = dtypeBits(dt) / 8;
  const tmp = new Float32Array(BLOCK),
    tmpBits = new Uint32Array(tmp.buffer);
  for (let b0 = 0; b0 < n; b0 += BLOCK) {
    const m = Math.min(BLOCK, n - b0);
    let v: Float32Array;
    if (dt === "BF16") {
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset + 2 * b0, m);
      for (let i = 0; i < m; i++) tmpBits[i] = h[i]! << 16;
      v = tmp;
    } else v = decodeToFloat32(dt, bytes.subarray(b0 * eb, (b0 + m) * eb), { mayAlias: true });
    let bad = -1;
    if (op === "set")
      for (let i = 0; i < m; i++) {
        const x = v[i]!;
        if (x - x !== 0) bad = i;
        out[b0 + i] = x;
      }
    else if (op === "add")
      for (let i = 0; i < m; i++) {
        const x = v[i]!;
        if (x - x !== 0) bad = i;
        out[b0 + i] = out[b0 + i]! + x;
      }
    else
      for (let i = 0; i < m; i++) {
        const x = v[i]!;
        if (x - x !== 0) bad = i;
        out[b0 + i] = out[b0 + i]! - x;
      }
    if (bad >= 0) throw new InvalidInputError(`${label}: tensor ${t.info.name} holds ${v[bad]} at index ${b0 + bad}`);
  }
}

/** Elements decoded at a time (stays in cache). */
const BLOCK = 16384;

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

/**
 * Float32 values → bytes of a model dtype (F32, or F16/BF16 rounded to nearest even), written in
 * place over the values' own buffer (element i's 2 bytes land on bytes already read): the result
 * aliases `v`, which must not be used afterwards.
 */
export function encodeInPlace(dtype: DType, v: Float32Array): Uint8Array {
  const n = v.length;
  if (dtype === "F32") return new Uint8Array(v.buffer, v.byteOffset, n * 4);
  const bits = new Uint32Array(v.buffer, v.byteOffset, n);
  const out = new Uint16Array(v.buffer, v.byteOffset, n);
  if (dtype === "BF16") for (let i = 0; i < n; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  else if (dtype === "F16") for (let i = 0; i < n; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  else throw new RangeError(`internal: encodeInPlace to ${dtype}`);
  return new Uint8Array(v.buffer, v.byteOffset, n * 2);
}
