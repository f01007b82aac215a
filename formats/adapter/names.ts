// Module naming across formats. kohya stems are `lora_` + prefix + the module path with every
// `.` turned into `_` (docs/cli.md "Adapters in and out"); the mapping is lossy, so writers keep the
// dotted names in metadata. matchKey pairs the same module across PEFT, kohya and diffusers files.

export const PEFT_PREFIX = "base_model.model.";

/** A PEFT key's module path in the model: PEFT_PREFIX dropped where it is there. */
export function stripPeftPrefix(key: string): string {
  return key.startsWith(PEFT_PREFIX) ? key.slice(PEFT_PREFIX.length) : key;
}

/** Component prefixes of diffusers/PEFT-style paths and the kohya stem prefix each becomes. */
const KOHYA_COMPONENT: [string, string][] = [
  ["text_encoder_2.", "te2_"],
  ["text_encoder_3.", "te3_"],
  ["text_encoder.", "te_"],
  ["unet.", "unet_"],
  ["transformer.", "unet_"],
];

/**
 * kohya stem for a dotted module path. `transformer.` is the diffusers pipeline component only
 * when a diffusers/BFL transformer root follows (Flux, SD3, PixArt: `lora_unet_…`); an LLM's own
 * top module `transformer.` (GPT-2 `transformer.h.0.attn.c_attn`, Falcon, Bloom, GPT-J) is a plain
 * module path, `lora_transformer_h_0_attn_c_attn` (docs/formats.md "kohya").
 */
export function kohyaStemFor(path: string): string {
  for (const [from, to] of KOHYA_COMPONENT) {
    if (!path.startsWith(from)) continue;
    if (from === "transformer." && !isDiffusersTransformerPath(path)) break;
    return "lora_" + to + path.slice(from.length).replace(/\./g, "_");
  }
  return "lora_" + path.replace(/\./g, "_");
}

/** Whether a `transformer.…` path is a diffusers transformer's module (its next component a DiT root), not an LLM's. */
export function isDiffusersTransformerPath(path: string): boolean {
  return path.startsWith("transformer.") && DIT_ROOTS.has(path.split(".")[1]!);
}

/** Format-independent pairing key: the kohya stem without `lora_`. */
export function matchKeyFor(path: string): string {
  return kohyaStemFor(path).slice("lora_".length);
}

/** Known kohya stem prefixes (longest first). */
export const KOHYA_PREFIXES = ["lora_unet_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_te_"];

export function kohyaPrefixOf(stem: string): string | undefined {
  const p = KOHYA_PREFIXES.find((x) => stem.startsWith(x));
  return p ? p.slice("lora_".length, -1) : undefined;
}

/** Escape a string for use inside a regular expression (PEFT rank_pattern keys). */
export function regexEscape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Whether a module set is SDXL-like (two text encoders), where kohya names the first `lora_te1_`. */
export function hasTextEncoder2(paths: Iterable<string>): boolean {
  for (const p of paths) if (p.startsWith("text_encoder_2.")) return true;
  return false;
}

/**
 * kohya stem of a module within its set: kohyaStemFor, except that in a set with a second text
 * encoder (SDXL) the first one is `lora_te1_` (kohya sd-scripts and ComfyUI), not `lora_te_`.
 */
export function kohyaStemInSet(path: string, textEncoder2: boolean): string {
  const stem = kohyaStemFor(path);
  return textEncoder2 && path.startsWith("text_encoder.") ? "lora_te1_" + stem.slice("lora_te_".length) : stem;
}

/** Component of a diffusers pipeline for each kohya stem prefix. */
const KOHYA_TO_COMPONENT: [string, string][] = [
  ["unet_", "unet"],
  ["te1_", "text_encoder"],
  ["te2_", "text_encoder_2"],
  ["te3_", "text_encoder_3"],
  ["te_", "text_encoder"],
];

/** Multi-word identifiers of HF CLIP text models (CLIPTextModel, …WithProjection). */
export const CLIP_IDENTIFIERS = [
  "text_model",
  "self_attn",
  "q_proj",
  "k_proj",
  "v_proj",
  "out_proj",
  "final_layer_norm",
  "layer_norm1",
  "layer_norm2",
  "token_embedding",
  "position_embedding",
  "text_projection",
];

/** Top-level children of diffusers transformer models (SD3, Flux, PixArt, …). */
export const DIT_ROOT_NAMES = [
  "transformer_blocks",
  "single_transformer_blocks",
  "x_embedder",
  "context_embedder",
  "time_text_embed",
  "pos_embed",
  "norm_out",
  "proj_out",
  "caption_projection",
  "adaln_single",
];

/**
 * Top-level children of diffusers transformer models and of BFL's Flux (kohya's names for it):
 * `transformer.<root>.…` is one of those, not an LLM's `transformer.h.…`.
 */
export const DIT_ROOTS: ReadonlySet<string> = new Set([
  ...DIT_ROOT_NAMES,
  "double_blocks",
  "single_blocks",
  "img_in",
  "txt_in",
  "time_in",
  "vector_in",
  "guidance_in",
  "final_layer",
]);

/** Multi-word identifiers of diffusers UNets/transformers and CLIP text models (kohya flattens their `_`). */
const COMPOUNDS = [
  "single_transformer_blocks",
  "transformer_blocks",
  "down_blocks",
  "up_blocks",
  "mid_block",
  "time_emb_proj",
  "time_embedding",
  "add_embedding",
  "conv_norm_out",
  "conv_shortcut",
  "conv_in",
  "conv_out",
  "proj_in",
  "proj_out",
  "proj_mlp",
  "to_q",
  "to_k",
  "to_v",
  "to_out",
  "to_add_out",
  "add_q_proj",
  "add_k_proj",
  "add_v_proj",
  "norm_out",
  "norm1_context",
  "ff_context",
  "linear_1",
  "linear_2",
  "context_embedder",
  "x_embedder",
  "time_text_embed",
  "timestep_embedder",
  "guidance_embedder",
  "text_embedder",
  ...CLIP_IDENTIFIERS,
]
  .map((c) => c.split("_"))
  .sort((a, b) => b.length - a.length);

/**
 * The dotted diffusers path of a module known only by its kohya stem (`lora_unet_down_blocks_0_…`
 * or the stem without `lora_`): component from the prefix, `_` turned back into `.` except inside
 * the multi-word identifiers diffusers and CLIP use (as diffusers' own kohya converter does).
 * Returns undefined when the stem has no SD-style prefix.
 */
export function diffusersPathFromKohya(stem: string): string | undefined {
  const s = stem.startsWith("lora_") ? stem.slice("lora_".length) : stem;
  const hit = KOHYA_TO_COMPONENT.find(([p]) => s.startsWith(p));
  if (!hit) return undefined;
  const tokens = s.slice(hit[0].length).split("_");
  const parts: string[] = [];
  for (let i = 0; i < tokens.length; ) {
    const c = COMPOUNDS.find((w) => w.every((t, k) => tokens[i + k] === t));
    const n = c ? c.length : 1;
    parts.push(tokens.slice(i, i + n).join("_"));
    i += n;
  }
  return `${hit[1]}.${parts.join(".")}`;
}
