// Flux naming (docs/formats.md "Naming maps"): kohya sd-scripts names Flux modules after Black
// Forest Labs' model (`lora_unet_double_blocks_0_img_attn_qkv`, networks/lora_flux.py), diffusers
// after its FluxTransformer2DModel (`transformer.transformer_blocks.0.attn.to_q`). One BFL module can
// be several diffusers modules: the fused qkv (3 parts) and single-block linear1 (q, k, v, proj_mlp),
// whose output rows are the parts' rows stacked; final_layer.adaLN_modulation.1 is norm_out.linear
// with its two output halves swapped (BFL shift·scale, diffusers scale·shift). The table below is
// read in both directions; in the adapter model a kohya Flux module's path is the BFL path with the
// `transformer.` component in front, and writers turn it into diffusers names (split-fuse.ts).

export interface FluxEntry {
  /** BFL module path, `{n}` standing for the block index. */
  bfl: string;
  /** diffusers module path(s) under `transformer.`, in row order of the BFL output. */
  diffusers: string[];
  /** How the BFL output rows divide among the diffusers parts. */
  split?: "thirds" | "linear1";
  /** The diffusers module's output is the BFL one with its two halves swapped. */
  swapHalves?: boolean;
}

const DOUBLE = "transformer_blocks.{n}";
const SINGLE = "single_transformer_blocks.{n}";

export const FLUX_TABLE: FluxEntry[] = [
  { bfl: "double_blocks.{n}.img_attn.qkv", diffusers: [`${DOUBLE}.attn.to_q`, `${DOUBLE}.attn.to_k`, `${DOUBLE}.attn.to_v`], split: "thirds" },
  {
    bfl: "double_blocks.{n}.txt_attn.qkv",
    diffusers: [`${DOUBLE}.attn.add_q_proj`, `${DOUBLE}.attn.add_k_proj`, `${DOUBLE}.attn.add_v_proj`],
    split: "thirds",
  },
  { bfl: "double_blocks.{n}.img_attn.proj", diffusers: [`${DOUBLE}.attn.to_out.0`] },
  { bfl: "double_blocks.{n}.txt_attn.proj", diffusers: [`${DOUBLE}.attn.to_add_out`] },
  { bfl: "double_blocks.{n}.img_mlp.0", diffusers: [`${DOUBLE}.ff.net.0.proj`] },
  { bfl: "double_blocks.{n}.img_mlp.2", diffusers: [`${DOUBLE}.ff.net.2`] },
  { bfl: "double_blocks.{n}.txt_mlp.0", diffusers: [`${DOUBLE}.ff_context.net.0.proj`] },
  { bfl: "double_blocks.{n}.txt_mlp.2", diffusers: [`${DOUBLE}.ff_context.net.2`] },
  { bfl: "double_blocks.{n}.img_mod.lin", diffusers: [`${DOUBLE}.norm1.linear`] },
  { bfl: "double_blocks.{n}.txt_mod.lin", diffusers: [`${DOUBLE}.norm1_context.linear`] },
  {
    bfl: "single_blocks.{n}.linear1",
    diffusers: [`${SINGLE}.attn.to_q`, `${SINGLE}.attn.to_k`, `${SINGLE}.attn.to_v`, `${SINGLE}.proj_mlp`],
    split: "linear1",
  },
  { bfl: "single_blocks.{n}.linear2", diffusers: [`${SINGLE}.proj_out`] },
  { bfl: "single_blocks.{n}.modulation.lin", diffusers: [`${SINGLE}.norm.linear`] },
  { bfl: "img_in", diffusers: ["x_embedder"] },
  { bfl: "txt_in", diffusers: ["context_embedder"] },
  { bfl: "time_in.in_layer", diffusers: ["time_text_embed.timestep_embedder.linear_1"] },
  { bfl: "time_in.out_layer", diffusers: ["time_text_embed.timestep_embedder.linear_2"] },
  { bfl: "vector_in.in_layer", diffusers: ["time_text_embed.text_embedder.linear_1"] },
  { bfl: "vector_in.out_layer", diffusers: ["time_text_embed.text_embedder.linear_2"] },
  { bfl: "guidance_in.in_layer", diffusers: ["time_text_embed.guidance_embedder.linear_1"] },
  { bfl: "guidance_in.out_layer", diffusers: ["time_text_embed.guidance_embedder.linear_2"] },
  { bfl: "final_layer.linear", diffusers: ["proj_out"] },
  { bfl: "final_layer.adaLN_modulation.1", diffusers: ["norm_out.linear"], swapHalves: true },
];

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const pattern = (template: string, sep: string) => new RegExp(`^${esc(template.replace(/\./g, sep)).replace("\\{n\\}", "(\\d+)")}$`);

const COMPILED = FLUX_TABLE.map((e) => ({
  e,
  bfl: pattern(e.bfl, "."),
  kohya: pattern(e.bfl, "_"),
  diffusers: e.diffusers.map((d) => pattern(d, ".")),
}));

const fill = (template: string, n: string | undefined) => (n === undefined ? template : template.replace("{n}", n));

/** A module of the table, with its block index. */
export interface FluxHit {
  entry: FluxEntry;
  block: string | undefined;
  /** BFL path (without the component). */
  bfl: string;
}

/** The BFL path of a kohya `lora_unet_` Flux stem body (`double_blocks_0_img_attn_qkv` → `double_blocks.0.img_attn.qkv`). */
export function fluxFromKohya(body: string): FluxHit | undefined {
  for (const c of COMPILED) {
    const m = c.kohya.exec(body);
    if (m) return { entry: c.e, block: m[1], bfl: fill(c.e.bfl, m[1]) };
  }
  return undefined;
}

/** The table entry of a BFL path (without `transformer.`). */
export function fluxFromBfl(path: string): FluxHit | undefined {
  for (const c of COMPILED) {
    const m = c.bfl.exec(path);
    if (m) return { entry: c.e, block: m[1], bfl: path };
  }
  return undefined;
}

/** The BFL module and part index of a diffusers Flux path (without `transformer.`). */
export function fluxFromDiffusers(path: string): (FluxHit & { part: number }) | undefined {
  for (const c of COMPILED) {
    for (let part = 0; part < c.diffusers.length; part++) {
      const m = c.diffusers[part]!.exec(path);
      if (m) return { entry: c.e, block: m[1], bfl: fill(c.e.bfl, m[1]), part };
    }
  }
  return undefined;
}

/** diffusers paths (without `transformer.`) of a BFL module. */
export function fluxDiffusersPaths(hit: FluxHit): string[] {
  return hit.entry.diffusers.map((d) => fill(d, hit.block));
}

/**
 * Output rows of each diffusers part of a fused BFL module with `out` rows: qkv in thirds; linear1
 * as q, k, v of hidden size h and proj_mlp of 4h (Flux's mlp_ratio 4, so out = 7h: 21504 = 7·3072
 * for Flux-dev, the dims diffusers splits on). Undefined when `out` does not divide so.
 */
export function fluxSplitRows(entry: FluxEntry, out: number): number[] | undefined {
  if (entry.split === "thirds") return out % 3 === 0 ? [out / 3, out / 3, out / 3] : undefined;
  if (entry.split === "linear1") return out % 7 === 0 ? [out / 7, out / 7, out / 7, (4 * out) / 7] : undefined;
  return [out];
}

/** The rows of every part of a linear1/qkv module from one part's rows (the others may be missing). */
export function fluxRowsFromPart(entry: FluxEntry, part: number, rows: number): number[] {
  if (entry.split === "thirds") return [rows, rows, rows];
  if (entry.split === "linear1") {
    const h = part === 3 ? rows / 4 : rows;
    return [h, h, h, 4 * h];
  }
  return [rows];
}

/** Whether any kohya stem (with or without `lora_`) names a Flux module (BFL block names). */
export function looksFluxKohya(stems: Iterable<string>): boolean {
  for (const s of stems) {
    const body = s.replace(/^lora_/, "");
    if (body.startsWith("unet_") && fluxFromKohya(body.slice("unet_".length))) return true;
  }
  return false;
}
