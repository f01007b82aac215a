// Which files each adapter family claims, from the tensor names (and AdaLoRA's config) alone: what
// detection needs before any family's reader is loaded (index.ts loads a reader only for a file
// its family claims, so that reading a plain LoRA never loads them).
import type { DetectContext } from "../detector.js";

/** LoRA-XS/SB's core (PEFT 0.10 glues `<m>_lora_latent_mapping`) and NLoRA/SLoRA's. */
export const XS = "_lora_latent_mapping.weight";
export const N = ".lora_N.weight";
/** MiSS and Bone blocks. */
export const MISS_SUFFIXES = [".miss_block", ".bone_block"];
/** MeteoRA's router. */
export const GATE = ".moe_gate.weight";

export function hasAdaloraKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(".lora_E"));
}

/** AdaLoRA: its lora_E keys, or a PEFT config that says ADALORA over lora_A tensors. */
export function claimsAdalora(names: string[], ctx: DetectContext): boolean {
  return hasAdaloraKeys(names) || (ctx.config?.["peft_type"] === "ADALORA" && names.some((n) => n.endsWith(".lora_A")));
}

export function hasIncreloraKeys(names: string[]): boolean {
  return names.some((n) => /\.lora_E\.\d+$/.test(n));
}

export function hasThreeMatrixKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(XS) || n.endsWith(N));
}

export function hasMissKeys(names: string[]): boolean {
  return names.some((n) => MISS_SUFFIXES.some((s) => n.endsWith(s)));
}

export function hasMeteoraKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(GATE));
}
