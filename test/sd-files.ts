// Generated kohya files of the Stable Diffusion families (SD 1.5, SDXL with sgm or diffusers-style
// stems, Flux with BFL names) for the naming-map tests, with each module's dense ΔW formed here in
// float64 from the values as stored (read back), by kohya's rule ΔW = (alpha/rank)·up·down.
import { encodeFloats, SafetensorsFile, serializeSafetensors, type DType, type TensorSpec } from "../formats/safetensors/index.js";
import type { Rng } from "../linalg/random.js";

export interface KohyaSpec {
  stem: string;
  out: number;
  in: number;
  r: number;
  alpha?: number;
  /** Conv kernel (down is [r, in/(kh·kw), kh, kw]). */
  kernel?: number[];
  /** Block-diagonal up (kohya split_qkv): output rows of each part, r divisible by their count. */
  blocks?: number[];
}

export interface Dense {
  out: number;
  in: number;
  D: Float64Array;
}

/** C = s·B·A (B out×r, A r×in), float64. */
export function product(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inn: number, s: number): Float64Array {
  const C = new Float64Array(out * inn);
  for (let i = 0; i < out; i++)
    for (let p = 0; p < r; p++) {
      const b = B[i * r + p]! * s;
      if (b !== 0) for (let j = 0; j < inn; j++) C[i * inn + j]! += b * A[p * inn + j]!;
    }
  return C;
}

/** Rows [r0, r0+n) of a dense ΔW. */
export function rows(d: Dense, r0: number, n: number): Dense {
  return { out: n, in: d.in, D: d.D.slice(r0 * d.in, (r0 + n) * d.in) };
}

/** The two row halves swapped. */
export function swapped(d: Dense): Dense {
  const h = (d.out / 2) * d.in;
  const D = new Float64Array(d.D.length);
  D.set(d.D.subarray(h), 0);
  D.set(d.D.subarray(0, h), h);
  return { out: d.out, in: d.in, D };
}

/** A kohya file of these modules in `dtype` (alpha 0-d F32 when given) and each module's ΔW. */
export async function kohyaFile(rng: Rng, specs: KohyaSpec[], dtype: DType): Promise<{ bytes: Uint8Array; dense: Map<string, Dense> }> {
  const ts: TensorSpec[] = [];
  for (const s of specs) {
    const K = (s.kernel ?? []).reduce((x, y) => x * y, 1);
    const inCh = s.in / K;
    const down = rng.normals(s.r * s.in, 1 / Math.sqrt(s.in));
    const up = rng.normals(s.out * s.r, 1 / Math.sqrt(s.r));
    if (s.blocks) {
      const ar = s.r / s.blocks.length;
      let r0 = 0;
      s.blocks.forEach((n, j) => {
        for (let i = r0; i < r0 + n; i++) for (let c = 0; c < s.r; c++) if (Math.floor(c / ar) !== j) up[i * s.r + c] = 0;
        r0 += n;
      });
    }
    ts.push({ name: `${s.stem}.lora_down.weight`, dtype, shape: s.kernel ? [s.r, inCh, ...s.kernel] : [s.r, s.in], data: encodeFloats(dtype, down) });
    ts.push({ name: `${s.stem}.lora_up.weight`, dtype, shape: s.kernel ? [s.out, s.r, 1, 1] : [s.out, s.r], data: encodeFloats(dtype, up) });
    if (s.alpha !== undefined) ts.push({ name: `${s.stem}.alpha`, dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(s.alpha)) });
  }
  const bytes = await serializeSafetensors(ts, { ss_network_module: "networks.lora" });
  const f = SafetensorsFile.fromBuffer(bytes, "gen");
  const dense = new Map<string, Dense>();
  for (const s of specs) {
    const A = await f.readFloat64(`${s.stem}.lora_down.weight`);
    const B = await f.readFloat64(`${s.stem}.lora_up.weight`);
    const alpha = s.alpha === undefined || s.alpha === 0 ? s.r : Math.fround(s.alpha);
    dense.set(s.stem, { out: s.out, in: s.in, D: product(B, A, s.out, s.r, s.in, alpha / s.r) });
  }
  await f.close();
  return { bytes, dense };
}

/** A diffusers PEFT-style file (`<path>.lora_A/B.weight`, network alphas as `<path>.alpha`) and each module's ΔW. */
export async function diffusersFile(
  rng: Rng,
  specs: { path: string; out: number; in: number; r: number; alpha?: number }[],
  dtype: DType,
): Promise<{ bytes: Uint8Array; dense: Map<string, Dense> }> {
  const ts: TensorSpec[] = [];
  for (const s of specs) {
    ts.push({ name: `${s.path}.lora_A.weight`, dtype, shape: [s.r, s.in], data: encodeFloats(dtype, rng.normals(s.r * s.in, 1 / Math.sqrt(s.in))) });
    ts.push({ name: `${s.path}.lora_B.weight`, dtype, shape: [s.out, s.r], data: encodeFloats(dtype, rng.normals(s.out * s.r, 1 / Math.sqrt(s.r))) });
    if (s.alpha !== undefined) ts.push({ name: `${s.path}.alpha`, dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(s.alpha)) });
  }
  const bytes = await serializeSafetensors(ts, null);
  const f = SafetensorsFile.fromBuffer(bytes, "gen");
  const dense = new Map<string, Dense>();
  for (const s of specs) {
    const A = await f.readFloat64(`${s.path}.lora_A.weight`);
    const B = await f.readFloat64(`${s.path}.lora_B.weight`);
    const alpha = s.alpha === undefined ? s.r : Math.fround(s.alpha);
    dense.set(s.path, { out: s.out, in: s.in, D: product(B, A, s.out, s.r, s.in, alpha / s.r) });
  }
  await f.close();
  return { bytes, dense };
}
