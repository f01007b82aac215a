// PEFT's fan_in_fan_out (GPT-2 Conv1D, whose weight is stored in×out): PEFT keeps lora_B·lora_A
// as out×in and adds its transpose to the weight (peft/tuners/lora/layer.py get_delta_weight:
// transpose(B @ A, fan_in_fan_out)). kohya applies lora_up·lora_down to the weight as stored
// (networks/lora.py merge_to: weight + up @ down), so a kohya file of such an adapter must hold
// up = Aᵀ (in×r) and down = Bᵀ (r×out): up·down = (B·A)ᵀ, the Conv1D layout. Our kohya writer marks
// such a file, and the kohya reader transposes its factors back on read, so every adapter model
// holds PEFT's out×in layout and pairs with the PEFT original (docs/formats.md "fan_in_fan_out").
import type { AdapterOutput, OutModule } from "./output.js";
import { decodeToFloat64, DTYPE_BITS, SafetensorsFile, type DerivedTensor, type TensorInfo } from "../safetensors/index.js";
import type { LoraModule } from "./types.js";
import { transpose } from "../../common/dense.js";

/** Metadata key our kohya writer sets when the factors are in the Conv1D weight's layout. */
export const WEIGHT_LAYOUT_KEY = "lora_weight_layout";
const WEIGHT_LAYOUT = "fan_in_fan_out";

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
 * weight's own layout (in×out), PEFT and diffusers PEFT's (out×in), which is the layout of every
 * adapter model (the kohya reader transposes a marked file on read: readWeightLayout). Linear
 * modules only.
 */
export function orientForTarget(out: AdapterOutput): AdapterOutput {
  const { [WEIGHT_LAYOUT_KEY]: _drop, ...metadata } = out.metadata;
  const ffo = out.baseConfig?.["fan_in_fan_out"] === true;
  const wantWeightLayout = ffo && out.format === "kohya";
  const modules = wantWeightLayout ? out.modules.map((m) => (m.kind === "linear" ? transposed(m) : m)) : out.modules;
  return {
    ...out,
    modules,
    metadata,
    ...(wantWeightLayout ? { extraMetadata: { ...(out.extraMetadata ?? {}), [WEIGHT_LAYOUT_KEY]: WEIGHT_LAYOUT } } : {}),
  };
}

/** Whether a kohya file's metadata says its factors are in the Conv1D weight's layout (our writer's mark). */
export function inWeightLayout(metadata: Record<string, string>): boolean {
  return metadata[WEIGHT_LAYOUT_KEY] === WEIGHT_LAYOUT;
}

/** A row-major r×c tensor's bytes transposed to c×r (any element size: the bytes move as they are). */
function transposeBytes(x: Uint8Array, r: number, c: number, size: number, out: Uint8Array): Uint8Array {
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out.set(x.subarray((i * c + j) * size, (i * c + j + 1) * size), (j * r + i) * size);
  return out;
}

/**
 * A kohya file in the Conv1D weight's layout read as PEFT's: each linear module's A = lora_upᵀ
 * (r×in) and B = lora_downᵀ (out×r), so ΔW = s·B·A is out×in like the PEFT original's and the
 * module pairs with it (diff, merge). The factors are the stored bytes moved, not recomputed; the
 * file's other tensors are read as they are. The derived file keeps the file's tensor names.
 */
export function readWeightLayout(
  file: SafetensorsFile,
  modules: LoraModule[],
  passthrough: TensorInfo[],
): { file: SafetensorsFile; modules: LoraModule[]; passthrough: TensorInfo[] } {
  // In the file: lora_down (the module's A as parsed) is r×out, lora_up (B) is in×r.
  const swap = new Map<string, { from: TensorInfo; rows: number; cols: number }>();
  const flipped = new Set<LoraModule>();
  for (const m of modules) {
    if (m.kind !== "linear") continue;
    flipped.add(m);
    swap.set(m.B.name, { from: m.B, rows: m.out, cols: m.rank }); // lora_up in×r → new A r×in
    swap.set(m.A.name, { from: m.A, rows: m.rank, cols: m.in }); // lora_down r×out → new B out×r
  }
  const tensors: DerivedTensor[] = file.header.tensors.map((t) => {
    const s = swap.get(t.name);
    if (!s) return { name: t.name, from: t };
    const size = DTYPE_BITS[t.dtype] / 8;
    return {
      name: t.name,
      dtype: t.dtype,
      shape: [s.cols, s.rows],
      produce: async (take) => {
        const raw = await file.readRaw(s.from);
        return transposeBytes(raw, s.rows, s.cols, size, take ? take(raw.byteLength) : new Uint8Array(raw.byteLength));
      },
    };
  });
  const derived = SafetensorsFile.derived(file.label, file, tensors, file.header.metadata);
  const same = (t: TensorInfo) => derived.tensor(t.name);
  return {
    file: derived,
    modules: modules.map((m) => ({
      ...m,
      // the parsed A is lora_down: after the transpose it is the B factor, and lora_up the A
      ...(flipped.has(m) ? { A: same(m.B), B: same(m.A), out: m.in, in: m.out } : { A: same(m.A), B: same(m.B) }),
      ...(m.alphaTensor ? { alphaTensor: same(m.alphaTensor) } : {}),
      extras: Object.fromEntries(Object.entries(m.extras).map(([k, t]) => [k, same(t)])),
    })),
    passthrough: passthrough.map(same),
  };
}
