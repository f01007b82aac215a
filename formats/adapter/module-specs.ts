// One output module's tensors (factors + extras) as writer specs, whatever the key layout: the
// factors are computed lazily (once per module, released after both are written) or copied raw.
import { dtypeBits, encodeFloats, type TensorSpec } from "../safetensors/index.js";
import type { OutFactors, OutModule } from "./output.js";

export interface ModuleKeys {
  A: string;
  B: string;
  /** Key of an extra tensor by role ("lora_B.bias", "lora_magnitude_vector", …). */
  extra: (role: string) => string;
}

export function moduleTensorSpecs(m: OutModule, keys: ModuleKeys): TensorSpec[] {
  let cached: Promise<OutFactors> | null = null;
  let taken = 0;
  const get = async (which: "A" | "B"): Promise<Uint8Array> => {
    cached ??= m.produce!();
    const f = await cached;
    if (++taken === 2) cached = null;
    const data = which === "A" ? f.A : f.B;
    const want = which === "A" ? m.rank * m.in : m.out * m.rank;
    const got = data instanceof Uint8Array ? (data.byteLength * 8) / dtypeBits(m.dtype) : data.length;
    if (got !== want) throw new Error(`internal: module ${m.path} produced ${got} values for ${which}, expected ${want}`);
    return data instanceof Uint8Array ? data : encodeFloats(m.dtype, data);
  };
  // Conv: A is [r, in/(kh·kw), kh, kw], B is [out, r, 1, 1].
  const k = m.kernel ?? [];
  const kprod = k.reduce((x, y) => x * y, 1);
  const aShape = m.kind === "conv" ? [m.rank, m.in / kprod, ...k] : [m.rank, m.in];
  const bShape = m.kind === "conv" ? [m.out, m.rank, ...k.map(() => 1)] : [m.out, m.rank];
  const specs: TensorSpec[] = m.rawFactors
    ? [
        { name: keys.A, dtype: m.rawFactors.A.tensor.dtype, shape: aShape, copyFrom: m.rawFactors.A },
        { name: keys.B, dtype: m.rawFactors.B.tensor.dtype, shape: bShape, copyFrom: m.rawFactors.B },
      ]
    : [
        { name: keys.A, dtype: m.dtype, shape: aShape, produce: () => get("A") },
        { name: keys.B, dtype: m.dtype, shape: bShape, produce: () => get("B") },
      ];
  for (const [role, src] of Object.entries(m.extras ?? {})) {
    specs.push({ name: keys.extra(role), dtype: src.tensor.dtype, shape: src.tensor.shape, copyFrom: src });
  }
  return specs;
}
