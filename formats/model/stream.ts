// A model tensor's values, streamed: decoded to float32 one chunk at a time (F32/F16/BF16 exactly)
// and folded into a float32 array, so a caller can form tuned − base (or W + ΔW) without holding
// either tensor whole.
import { InvalidInputError } from "../errors.js";
import { decodeToFloat32, dtypeBits, type DType } from "../safetensors/index.js";
import type { BaseTensor } from "./base-model.js";

/** The float dtypes full models are read in. */
export const MODEL_DTYPES: readonly DType[] = ["F32", "F16", "BF16"];

const CHUNK_BYTES = 4 << 20;

/** How a tensor's values land in the destination: copied, added or subtracted. */
export type FoldOp = "set" | "add" | "sub";

/**
 * Fold a tensor's values into `out` (its element count long), chunk by chunk: out = v, out += v or
 * out −= v, in float32 (F16/BF16 decode exactly; each add rounds once). `onBytes(n)` after each
 * chunk. Refuses a NaN/Inf value (exit 3). Chunks are decoded into one reused scratch array.
 */
export async function foldInto(t: BaseTensor, label: string, out: Float32Array, op: FoldOp, onBytes?: (n: number) => void): Promise<void> {
  const dt = t.info.dtype;
  if (!MODEL_DTYPES.includes(dt)) throw new InvalidInputError(`${label}: tensor ${t.info.name} is ${dt}; only F32, F16 and BF16 weights are read`);
  const eb = dtypeBits(dt) / 8;
  const chunkBytes = Math.floor(CHUNK_BYTES / eb) * eb;
  const scratch = new Float32Array(chunkBytes / eb);
  const bits = new Uint32Array(scratch.buffer);
  let at = 0;
  await t.file.copyRaw(t.info, async (chunk) => {
    const n = chunk.byteLength / eb;
    let v: Float32Array;
    if (dt !== "BF16") v = decodeToFloat32(dt, chunk, { mayAlias: true });
    else {
      const h = chunk.byteOffset % 2 === 0 ? new Uint16Array(chunk.buffer, chunk.byteOffset, n) : new Uint16Array(Uint8Array.from(chunk).buffer);
      for (let i = 0; i < n; i++) bits[i] = h[i]! << 16;
      v = scratch;
    }
    let bad = -1;
    if (op === "set") for (let i = 0; i < n; i++) { const x = v[i]!; if (x - x !== 0) bad = i; out[at + i] = x; }
    else if (op === "add") for (let i = 0; i < n; i++) { const x = v[i]!; if (x - x !== 0) bad = i; out[at + i] = out[at + i]! + x; }
    else for (let i = 0; i < n; i++) { const x = v[i]!; if (x - x !== 0) bad = i; out[at + i] = out[at + i]! - x; }
    if (bad >= 0) throw new InvalidInputError(`${label}: tensor ${t.info.name} holds ${v[bad]} at index ${at + bad}`);
    at += n;
    onBytes?.(chunk.byteLength);
  }, chunkBytes);
}
