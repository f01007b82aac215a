// The modules of an adapter described for another layout (lora convert): the same factors, byte
// for byte, with each module's scale s kept through alpha' = s·r (kohya, and PEFT/diffusers without
// rsLoRA) or s·√r (PEFT/diffusers with use_rslora). A derived module (LoHa, AdaLoRA, …: its factors
// computed on read, docs/formats.md "Derived modules") is written as its exact factors in F32 at
// least, so the conversion stays within float32 rounding of the stored ΔW.
import { alphaForScale, readFactors, type Adapter, type AdapterFormat } from "../formats/adapter/index.js";
import type { DType } from "../formats/safetensors/index.js";
import type { OutModule } from "../formats/adapter/write.js";
import { kernelOf } from "./kernels.js";

export type TargetFormat = "peft" | "kohya" | "diffusers";

/** PEFT and diffusers files share key roles (lora_A/lora_B, lora_magnitude_vector, lora_B.bias). */
export function sameLayoutFamily(from: AdapterFormat, to: TargetFormat): boolean {
  const peftLike = (f: string) => f === "peft" || f === "diffusers";
  return from === to || (peftLike(from) && peftLike(to));
}

export function convertedModules(a: Adapter, to: TargetFormat, useRslora: boolean): OutModule[] {
  return a.modules.map((m) => {
    const rs = to !== "kohya" && useRslora;
    const alpha = m.rslora === rs ? m.alpha : alphaForScale(m.scale, m.rank, rs);
    const kernel = kernelOf(m.A.shape);
    const extras: NonNullable<OutModule["extras"]> = {};
    for (const [role, t] of Object.entries(m.extras)) extras[role] = { file: a.file, tensor: t };
    return {
      path: m.path,
      ...(to === "kohya" && a.format === "kohya" ? { stem: m.name } : {}),
      kind: m.kind,
      rank: m.rank,
      alpha,
      out: m.out,
      in: m.in,
      dtype: m.family ? derivedOutputDtype(m.family.dtype) : m.A.dtype,
      ...(kernel ? { kernel } : {}),
      ...(m.family
        ? { produce: async () => readFactors(a, m, "f64").then((f) => ({ A: f.A.data, B: f.B.data })) }
        : { rawFactors: { A: { file: a.file, tensor: m.A }, B: { file: a.file, tensor: m.B } } }),
      extras,
    };
  });
}

/** The dtype a derived module's exact factors are written in: the stored one when F32/F64, else F32. */
export function derivedOutputDtype(stored: DType): DType {
  return stored === "F64" ? "F64" : "F32";
}
