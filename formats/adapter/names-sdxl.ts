// kohya stems of Stable Diffusion 1.x/2.x and SDXL ↔ diffusers module paths (docs/formats.md
// "Naming maps"). kohya names a module `lora_<prefix>_` + its path with every `.` turned into `_`:
// SD1 on the diffusers UNet (`lora_unet_down_blocks_0_attentions_0_…`), SDXL on its own sgm UNet
// (`lora_unet_input_blocks_4_1_…`, sd-scripts library/sdxl_model_util.py), text encoders as HF CLIP
// (`lora_te_`, SDXL `lora_te1_`/`lora_te2_`). Turning `_` back into `.` needs the identifiers that
// contain `_` themselves; a stem with a token no UNet or CLIP module has maps to nothing (undefined),
// so a caller can refuse it instead of inventing a name.
import { CLIP_IDENTIFIERS } from "./names.js";

/** Split `tokens` into identifiers: multi-token words first, then single known tokens or numbers. */
function joinTokens(tokens: string[], compounds: string[][], singles: ReadonlySet<string>): string[] | undefined {
  const parts: string[] = [];
  for (let i = 0; i < tokens.length; ) {
    const c = compounds.find((w) => w.every((t, k) => tokens[i + k] === t));
    if (c) {
      parts.push(c.join("_"));
      i += c.length;
      continue;
    }
    const t = tokens[i]!;
    if (!/^\d+$/.test(t) && !singles.has(t)) return undefined;
    parts.push(t);
    i++;
  }
  return parts;
}

const words = (list: string[]) => list.map((c) => c.split("_")).sort((a, b) => b.length - a.length);

/** Identifiers inside a diffusers Transformer2DModel / attention block (shared by both UNet namings). */
const TRANSFORMER_WORDS = ["transformer_blocks", "to_q", "to_k", "to_v", "to_out", "proj_in", "proj_out"];
const TRANSFORMER_SINGLES = ["attn1", "attn2", "ff", "net", "proj", "norm", "norm1", "norm2", "norm3"];

/** diffusers UNet2DConditionModel identifiers (SD1 kohya stems, SDXL diffusers-style stems). */
const UNET_WORDS = words([
  ...TRANSFORMER_WORDS,
  "down_blocks",
  "up_blocks",
  "mid_block",
  "conv_shortcut",
  "time_emb_proj",
  "conv_in",
  "conv_out",
  "conv_norm_out",
  "time_embedding",
  "add_embedding",
  "linear_1",
  "linear_2",
]);
const UNET_SINGLES = new Set([...TRANSFORMER_SINGLES, "attentions", "resnets", "downsamplers", "upsamplers", "conv", "conv1", "conv2"]);

/** sgm (SDXL original) UNet identifiers. */
const SGM_WORDS = words([
  ...TRANSFORMER_WORDS,
  "input_blocks",
  "middle_block",
  "output_blocks",
  "in_layers",
  "out_layers",
  "emb_layers",
  "skip_connection",
  "time_embed",
  "label_emb",
]);
const SGM_SINGLES = new Set([...TRANSFORMER_SINGLES, "op", "conv", "out"]);

/** HF CLIPTextModel(WithProjection) identifiers. */
const CLIP_WORDS = words(CLIP_IDENTIFIERS);
const CLIP_SINGLES = new Set(["encoder", "layers", "mlp", "fc1", "fc2", "embeddings"]);

/** HF T5EncoderModel identifiers (Flux / SD3 `lora_te3_`). */
const T5_WORDS = words(["wi_0", "wi_1"]);
const T5_SINGLES = new Set(["encoder", "block", "layer", "SelfAttention", "q", "k", "v", "o", "DenseReluDense", "wi", "wo"]);

/** The dotted CLIP module path of a kohya text-encoder stem body (`text_model_encoder_layers_0_self_attn_q_proj`). */
export function clipPathFromKohya(body: string): string | undefined {
  return joinTokens(body.split("_"), CLIP_WORDS, CLIP_SINGLES)?.join(".");
}

/** The dotted T5 module path of a kohya `lora_te3_` stem body (`encoder_block_0_layer_0_SelfAttention_q`). */
export function t5PathFromKohya(body: string): string | undefined {
  return joinTokens(body.split("_"), T5_WORDS, T5_SINGLES)?.join(".");
}

/** sgm → diffusers for one dotted sgm path (make_unet_conversion_map; layers_per_block 2, SDXL). */
function sgmToDiffusers(parts: string[]): string[] | undefined {
  const [root, a, b, ...rest] = parts;
  const lpb = 2;
  const resnetInner = (r: string[]): string[] | undefined => {
    const s = r.join(".");
    const m: Record<string, string> = { "in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj", skip_connection: "conv_shortcut" };
    return m[s] !== undefined ? [m[s]] : undefined;
  };
  const num = (s: string | undefined) => (s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined);
  if (root === "time_embed" && parts.length === 2 && (a === "0" || a === "2")) return ["time_embedding", a === "0" ? "linear_1" : "linear_2"];
  if (root === "label_emb" && parts.length === 3 && a === "0" && (b === "0" || b === "2")) return ["add_embedding", b === "0" ? "linear_1" : "linear_2"];
  if (root === "out" && parts.length === 2 && a === "2") return ["conv_out"];
  const n = num(a),
    inner = num(b);
  if (root === "middle_block" && n !== undefined) {
    // middle_block.N has no inner index: 0 and 2 are resnets, 1 the attention.
    const body = parts.slice(2);
    if (n === 1 && body.length) return ["mid_block", "attentions", "0", ...body];
    const r = n === 0 || n === 2 ? resnetInner(body) : undefined;
    return r ? ["mid_block", "resnets", String(n / 2), ...r] : undefined;
  }
  if (n === undefined || inner === undefined) return undefined;
  if (root === "input_blocks") {
    if (n === 0) return inner === 0 && rest.length === 0 ? ["conv_in"] : undefined;
    const block = Math.floor((n - 1) / (lpb + 1)),
      layer = (n - 1) % (lpb + 1);
    if (rest[0] === "op" && rest.length === 1 && inner === 0) return layer === lpb ? ["down_blocks", String(block), "downsamplers", "0", "conv"] : undefined;
    if (layer === lpb) return undefined;
    if (inner === 0) {
      const r = resnetInner(rest);
      return r ? ["down_blocks", String(block), "resnets", String(layer), ...r] : undefined;
    }
    if (inner === 1 && rest.length) return ["down_blocks", String(block), "attentions", String(layer), ...rest];
    return undefined;
  }
  if (root === "output_blocks") {
    const block = Math.floor(n / (lpb + 1)),
      layer = n % (lpb + 1);
    if (inner === 0) {
      const r = resnetInner(rest);
      return r ? ["up_blocks", String(block), "resnets", String(layer), ...r] : undefined;
    }
    if (inner === 1 && rest.length) return ["up_blocks", String(block), "attentions", String(layer), ...rest];
    if (inner === 2 && rest.length === 1 && rest[0] === "conv") return ["up_blocks", String(block), "upsamplers", "0", "conv"];
    return undefined;
  }
  return undefined;
}

/**
 * The dotted diffusers UNet path (without `unet.`) of a kohya `lora_unet_` stem body, in either
 * naming: diffusers-style (`down_blocks_0_attentions_0_…`) or sgm (`input_blocks_4_1_…`,
 * `middle_block_1_…`, `output_blocks_2_2_conv`, `time_embed_0`, `label_emb_0_0`, `out_2`).
 */
export function unetPathFromKohya(body: string): string | undefined {
  const tokens = body.split("_");
  const sgm = joinTokens(tokens, SGM_WORDS, SGM_SINGLES);
  if (sgm && ["input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out"].includes(sgm[0]!)) {
    return sgmToDiffusers(sgm)?.join(".");
  }
  return joinTokens(tokens, UNET_WORDS, UNET_SINGLES)?.join(".");
}

/** Whether a `lora_unet_` stem body uses sgm block names (SDXL as kohya trains it). */
export function isSgmStem(body: string): boolean {
  return /^(input_blocks|middle_block|output_blocks|time_embed|label_emb)_/.test(body) || body === "out_2";
}
