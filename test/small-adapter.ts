// Writing a small F32 adapter from given factors, for the catalog tests: a PEFT directory (with
// rank/alpha patterns so each module's scale is 2) or a kohya file (alpha = rank/2, scale 0.5);
// module i is `blk.i.proj` (kohya `lora_unet_blk_i_proj`).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../formats/safetensors/index.js";
import type { Rng } from "../linalg/random.js";

export interface SmallModule {
  B: Float64Array;
  A: Float64Array;
  out: number;
  inn: number;
  r: number;
  /** 2 for PEFT, 0.5 for kohya (what the file's alpha says). */
  scale: number;
}

/** Factors with shapes drawn in [minDim, minDim + spread) and ranks 1..maxRank, rounded to F32 as stored. */
export function smallModules(
  rng: Rng,
  count: number,
  kohya: boolean,
  o: { minDim: number; spread: number; maxRank: number; bScale?: () => number },
): SmallModule[] {
  return Array.from({ length: count }, () => {
    const r = 1 + rng.int(o.maxRank),
      out = o.minDim + rng.int(o.spread),
      inn = o.minDim + rng.int(o.spread);
    return {
      B: Float64Array.from(Float32Array.from(rng.normals(out * r, o.bScale?.() ?? 1))),
      A: Float64Array.from(Float32Array.from(rng.normals(r * inn))),
      out,
      inn,
      r,
      scale: kohya ? 0.5 : 2,
    };
  });
}

/** Writes the modules (plus the given passthrough tensors) as a kohya file or a PEFT directory at `path`. */
export async function writeSmallAdapter(path: string, kohya: boolean, mods: SmallModule[], passthrough: TensorSpec[] = []): Promise<void> {
  const specs: TensorSpec[] = mods.flatMap((m, i) => {
    const names = kohya
      ? [`lora_unet_blk_${i}_proj.lora_down.weight`, `lora_unet_blk_${i}_proj.lora_up.weight`]
      : [`base_model.model.blk.${i}.proj.lora_A.weight`, `base_model.model.blk.${i}.proj.lora_B.weight`];
    return [
      { name: names[0]!, dtype: "F32" as const, shape: [m.r, m.inn], data: encodeFloats("F32", m.A) },
      { name: names[1]!, dtype: "F32" as const, shape: [m.out, m.r], data: encodeFloats("F32", m.B) },
      ...(kohya ? [{ name: `lora_unet_blk_${i}_proj.alpha`, dtype: "F32" as const, shape: [], data: encodeFloats("F32", Float64Array.of(0.5 * m.r)) }] : []),
    ];
  });
  const body = await serializeSafetensors([...specs, ...passthrough], null);
  if (kohya) {
    writeFileSync(path, body);
    return;
  }
  mkdirSync(path);
  writeFileSync(join(path, "adapter_model.safetensors"), body);
  writeFileSync(
    join(path, "adapter_config.json"),
    JSON.stringify({
      peft_type: "LORA",
      r: 1,
      lora_alpha: 2,
      target_modules: ["proj"],
      rank_pattern: Object.fromEntries(mods.map((m, i) => [`blk.${i}.proj`, m.r])),
      alpha_pattern: Object.fromEntries(mods.map((m, i) => [`blk.${i}.proj`, 2 * m.r])),
    }),
  );
}
