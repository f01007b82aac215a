// The modules of an adapter described for another layout (lora convert): the same factors, byte
// for byte, with each module's scale s kept through alpha' = s·r (kohya, and PEFT/diffusers without
// rsLoRA) or s·√r (PEFT/diffusers with use_rslora). A derived module (LoHa, AdaLoRA, …: its factors
// computed on read, docs/formats.md "Derived modules") is written as its exact factors in F32 at
// least, so the conversion stays within float32 rounding of the stored ΔW.
import { alphaForScale, checkableWhileCopied, finiteWhileCopied, readFactors, type Adapter, type AdapterFormat } from "../formats/adapter/index.js";
import type { CopySource, DType, TensorInfo } from "../formats/safetensors/index.js";
import type { OutModule } from "../formats/adapter/write.js";
import { kernelOf } from "./kernels.js";

export type TargetFormat = "peft" | "kohya" | "diffusers";

/** PEFT and diffusers files share key roles (lora_A/lora_B, lora_magnitude_vector, lora_B.bias). */
export function sameLayoutFamily(from: AdapterFormat, to: TargetFormat): boolean {
  const peftLike = (f: string) => f === "peft" || f === "diffusers";
  return from === to || (peftLike(from) && peftLike(to));
}

/**
 * checkWhileCopying: stored float factors are checked finite as they are copied (one read each;
 * for an atomic output, which a refusal leaves unwritten); the caller checks the other modules first.
 */
export function convertedModules(a: Adapter, to: TargetFormat, useRslora: boolean, checkWhileCopying = false): OutModule[] {
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
        : { rawFactors: { A: copied(a, m.A, checkWhileCopying && checkableWhileCopied(m)), B: copied(a, m.B, checkWhileCopying && checkableWhileCopied(m)) } }),
      extras,
    };
  });
}

function copied(a: Adapter, t: TensorInfo, check: boolean): CopySource {
  return { file: a.file, tensor: t, ...(check ? { check: finiteWhileCopied(a, t) } : {}) };
}

/** The dtype a derived module's exact factors are written in: the stored one when F32/F64, else F32. */
export function derivedOutputDtype(stored: DType): DType {
  return stored === "F64" ? "F64" : "F32";
}
