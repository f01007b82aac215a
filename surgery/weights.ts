// Which tensors of a full model a LoRA can stand for, and how its ΔW (out×in, conv kernels
// flattened into in) lies in the stored tensor: nn.Linear and convolutions store out×in(×kh×kw);
// GPT-2's Conv1D stores in×out (PEFT's fan_in_fan_out); embedding tables and 1-D tensors (biases,
// norms) are not LoRA targets here. Shared by extract and apply.
import type { ModuleKind } from "../formats/adapter/index.js";
import type { Model } from "../formats/model/base-model.js";

export interface WeightTarget {
  /** Module path: the tensor name without ".weight". */
  path: string;
  kind: Extract<ModuleKind, "linear" | "conv">;
  out: number;
  /** in, times the kernel size for a conv. */
  in: number;
  /** Trailing kernel dims of a conv weight. */
  kernel?: number[];
  /** Stored as in×out (GPT-2 Conv1D): ΔW is the transpose of the stored difference. */
  transposed: boolean;
}

const EMBEDDING = /(^|\.)(embed_tokens|embed_positions|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|shared|embeddings)\.weight$/;
const GPT2_CONV1D = /(^|\.)h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;

/** Whether the model is GPT-2-like (Conv1D layers, weights stored in×out). */
export function usesConv1D(m: Model): boolean {
  const mt = m.config?.["model_type"];
  if (typeof mt === "string") return mt === "gpt2";
  for (const n of m.tensors.keys()) if (GPT2_CONV1D.test(n)) return true;
  return false;
}

/** The LoRA target a tensor is, or null (embedding, bias, norm, buffer…). */
export function weightTarget(name: string, shape: readonly number[], conv1d: boolean): WeightTarget | null {
  if (!name.endsWith(".weight") || EMBEDDING.test(name)) return null;
  const path = name.slice(0, -".weight".length);
  if (shape.length === 2) {
    const transposed = conv1d && GPT2_CONV1D.test(name);
    return { path, kind: "linear", out: transposed ? shape[1]! : shape[0]!, in: transposed ? shape[0]! : shape[1]!, transposed };
  }
  if (shape.length === 4) {
    return { path, kind: "conv", out: shape[0]!, in: shape[1]! * shape[2]! * shape[3]!, kernel: shape.slice(2), transposed: false };
  }
  return null;
}

/** kohya stem of a module of this model: lora_unet_… for a diffusers UNet, lora_… otherwise. */
export function kohyaStemOf(m: Model, path: string): string {
  return (m.stem === "diffusion_pytorch_model" ? "lora_unet_" : "lora_") + path.replace(/\./g, "_");
}
