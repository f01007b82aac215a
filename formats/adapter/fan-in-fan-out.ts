// PEFT's fan_in_fan_out (GPT-2 Conv1D, whose weight is stored in×out): PEFT keeps lora_B·lora_A
// as out×in and adds its transpose to the weight (peft/tuners/lora/layer.py get_delta_weight:
// transpose(B @ A, fan_in_fan_out)). kohya applies lora_up·lora_down to the weight as stored
// (networks/lora.py merge_to: weight + up @ down), so a kohya file of such an adapter must hold
// up = Aᵀ (in×r) and down = Bᵀ (r×out): up·down = (B·A)ᵀ, the Conv1D layout. Our kohya writer marks
// such a file so that reading it back to PEFT transposes again (docs/formats.md "fan_in_fan_out").
import type { AdapterOutput, OutModule } from "./output.js";
import { decodeToFloat64 } from "../safetensors/index.js";

/** Metadata key our kohya writer sets when the factors are in the Conv1D weight's layout. */
export const WEIGHT_LAYOUT_KEY = "lora_weight_layout";
const WEIGHT_LAYOUT = "fan_in_fan_out";

/** Row-major r×c → c×r. */
function transpose(x: Float64Array, r: number, c: number): Float64Array {
  const o = new Float64Array(x.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) o[j * r + i] = x[i * c + j]!;
  return o;
}

function transposed(m: OutModule): OutModule {
  const { rawFactors, produce, kernel: _k, ...rest } = m;
  return {
    ...rest,
    out: m.in,
    in: m.out,
    produce: async () => {
      let A: Float64Array, B: Float64Array;
      if (rawFactors) {
        [A, B] = await Promise.all([rawFactors.A.file.readFloat64(rawFactors.A.tensor), rawFactors.B.file.readFloat64(rawFactors.B.tensor)]);
      } else {
        const f = await produce!();
        const dec = (x: Float32Array | Float64Array | Uint8Array) =>
          x instanceof Uint8Array ? decodeToFloat64(m.dtype, x) : x instanceof Float64Array ? x : Float64Array.from(x);
        A = dec(f.A);
        B = dec(f.B);
      }
      // new A (r×out) = Bᵀ, new B (in×r) = Aᵀ
      return { A: transpose(B, m.out, m.rank), B: transpose(A, m.rank, m.in) };
    },
  };
}

/**
 * The output with fan_in_fan_out modules in the layout the target format means: kohya holds the
 * weight's own layout (in×out), PEFT and diffusers PEFT's (out×in). Linear modules only.
 */
export function orientForTarget(out: AdapterOutput): AdapterOutput {
  const inWeightLayout = out.metadata[WEIGHT_LAYOUT_KEY] === WEIGHT_LAYOUT;
  const { [WEIGHT_LAYOUT_KEY]: _drop, ...metadata } = out.metadata;
  const ffo = out.baseConfig?.["fan_in_fan_out"] === true;
  const wantWeightLayout = ffo && out.format === "kohya";
  const flip = ffo && inWeightLayout !== wantWeightLayout;
  const modules = flip ? out.modules.map((m) => (m.kind === "linear" ? transposed(m) : m)) : out.modules;
  return {
    ...out,
    modules,
    metadata,
    ...(wantWeightLayout ? { extraMetadata: { ...(out.extraMetadata ?? {}), [WEIGHT_LAYOUT_KEY]: WEIGHT_LAYOUT } } : {}),
  };
}
