// The modules of an adapter described for another layout (lora convert): the same factors, byte
// for byte, with each module's scale s kept through alpha' = s·r (kohya, and PEFT/diffusers without
// rsLoRA) or s·√r (PEFT/diffusers with use_rslora).
import { alphaForScale, hasTextEncoder2, kohyaStemInSet, type Adapter, type AdapterFormat } from "../formats/adapter/index.js";
import type { OutModule } from "../formats/adapter/write.js";
import { kernelOf } from "./kernels.js";

export type TargetFormat = "peft" | "kohya" | "diffusers";

/** PEFT and diffusers files share key roles (lora_A/lora_B, lora_magnitude_vector, lora_B.bias). */
export function sameLayoutFamily(from: AdapterFormat, to: TargetFormat): boolean {
  const peftLike = (f: string) => f === "peft" || f === "diffusers";
  return from === to || (peftLike(from) && peftLike(to));
}

export function convertedModules(a: Adapter, to: TargetFormat, useRslora: boolean): OutModule[] {
  const te2 = hasTextEncoder2(a.modules.map((m) => m.path));
  return a.modules.map((m) => {
    const rs = to !== "kohya" && useRslora;
    const alpha = m.rslora === rs ? m.alpha : alphaForScale(m.scale, m.rank, rs);
    const kernel = kernelOf(m.A.shape);
    const extras: NonNullable<OutModule["extras"]> = {};
    for (const [role, t] of Object.entries(m.extras)) extras[role] = { file: a.file, tensor: t };
    return {
      path: m.path,
      ...(to === "kohya" ? { stem: a.format === "kohya" ? m.name : kohyaStemInSet(m.path, te2) } : {}),
      kind: m.kind,
      rank: m.rank,
      alpha,
      out: m.out,
      in: m.in,
      dtype: m.A.dtype,
      ...(kernel ? { kernel } : {}),
      rawFactors: { A: { file: a.file, tensor: m.A }, B: { file: a.file, tensor: m.B } },
      extras,
    };
  });
}
