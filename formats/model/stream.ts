// A model tensor's values, streamed: decoded to float32 one chunk at a time (F32/F16/BF16 exactly),
// so a caller can fold two models' tensors into one float32 array without holding either whole.
import { InvalidInputError } from "../errors.js";
import { decodeToFloat32, dtypeBits, type DType } from "../safetensors/index.js";
import type { BaseTensor } from "./base-model.js";

/** The float dtypes full models are read in. */
export const MODEL_DTYPES: readonly DType[] = ["F32", "F16", "BF16"];

const CHUNK_BYTES = 8 << 20;

/**
 * Call `fn(values, at)` for consecutive chunks of the tensor's values (`at` = index of values[0]),
 * in order; `onBytes(n)` after each chunk with its size in bytes. Refuses a NaN/Inf value (exit 3).
 */
export async function forEachChunk(t: BaseTensor, label: string, fn: (values: Float32Array, at: number) => void, onBytes?: (n: number) => void): Promise<void> {
  const dt = t.info.dtype;
  if (!MODEL_DTYPES.includes(dt)) throw new InvalidInputError(`${label}: tensor ${t.info.name} is ${dt}; only F32, F16 and BF16 weights are read`);
  const eb = dtypeBits(dt) / 8;
  let at = 0;
  await t.file.copyRaw(t.info, async (chunk) => {
    const v = decodeToFloat32(dt, chunk, { mayAlias: true });
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i]!)) throw new InvalidInputError(`${label}: tensor ${t.info.name} holds ${v[i]} at index ${at + i}`);
    }
    fn(v, at);
    at += v.length;
    onBytes?.(chunk.byteLength);
  }, Math.floor(CHUNK_BYTES / eb) * eb);
}
