// The naming maps one name at a time (docs/formats.md "Naming maps"): kohya stems of each family to
// diffusers paths, written out by hand from sd-scripts' and diffusers' conventions, and back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { kohyaFamily, kohyaStemOfPath, pathFamily, pathOfKohyaStem } from "./name-map.js";
import { FLUX_TABLE, fluxFromBfl, fluxFromDiffusers, fluxFromKohya, fluxSplitRows } from "./names-flux.js";
import { kohyaStemFor, matchKeyFor } from "./names.js";

test("kohya stems → diffusers paths per family, and the family from the stems", () => {
  const cases: [string, "sd" | "sdxl" | "flux", string | undefined][] = [
    ["lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0", "sd", "unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0"],
    ["lora_unet_up_blocks_3_resnets_2_conv_shortcut", "sd", "unet.up_blocks.3.resnets.2.conv_shortcut"],
    ["lora_unet_time_embedding_linear_2", "sd", "unet.time_embedding.linear_2"],
    ["lora_te_text_model_encoder_layers_7_mlp_fc2", "sd", "text_encoder.text_model.encoder.layers.7.mlp.fc2"],
    ["lora_unet_input_blocks_0_0", "sdxl", "unet.conv_in"],
    ["lora_unet_input_blocks_7_1_transformer_blocks_3_attn1_to_k", "sdxl", "unet.down_blocks.2.attentions.0.transformer_blocks.3.attn1.to_k"],
    ["lora_unet_input_blocks_6_0_op", "sdxl", "unet.down_blocks.1.downsamplers.0.conv"],
    ["lora_unet_middle_block_0_out_layers_3", "sdxl", "unet.mid_block.resnets.0.conv2"],
    ["lora_unet_output_blocks_8_0_skip_connection", "sdxl", "unet.up_blocks.2.resnets.2.conv_shortcut"],
    ["lora_unet_output_blocks_4_1_proj_out", "sdxl", "unet.up_blocks.1.attentions.1.proj_out"],
    ["lora_unet_label_emb_0_2", "sdxl", "unet.add_embedding.linear_2"],
    ["lora_unet_time_embed_0", "sdxl", "unet.time_embedding.linear_1"],
    ["lora_unet_out_2", "sdxl", "unet.conv_out"],
    ["lora_te2_text_model_encoder_layers_31_self_attn_out_proj", "sdxl", "text_encoder_2.text_model.encoder.layers.31.self_attn.out_proj"],
    ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "sdxl", "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"],
    ["lora_unet_input_blocks_3_1_proj_in", "sdxl", undefined], // input block 3 is SDXL's first downsampler: no attention
    ["lora_unet_double_blocks_18_txt_mod_lin", "flux", "transformer.double_blocks.18.txt_mod.lin"],
    ["lora_unet_final_layer_adaLN_modulation_1", "flux", "transformer.final_layer.adaLN_modulation.1"],
    ["lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0", "flux", "text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wi_0"],
    ["lora_unet_double_blocks_0_img_attn_norm_query_norm", "flux", undefined],
    ["lora_unet_down_blocks_0_img_attn_qkv", "sd", undefined],
  ];
  for (const [stem, fam, want] of cases) assert.equal(pathOfKohyaStem(stem, fam), want, stem);
  assert.equal(kohyaFamily(["lora_unet_single_blocks_0_linear1.lora_down.weight", "lora_te1_x.alpha"]), "flux");
  assert.equal(kohyaFamily(["lora_unet_output_blocks_0_1_proj_in.lora_up.weight"]), "sdxl");
  assert.equal(kohyaFamily(["lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"]), "sdxl");
  assert.equal(kohyaFamily(["lora_unet_mid_block_attentions_0_proj_in.alpha"]), "sd");
  assert.equal(kohyaFamily(["lora_model_layers_0_q_proj.alpha"]), "other");
});

test("paths → kohya stems: te1/te2 for SDXL, te1/te3 for Flux, LLM paths plain, other DiTs refused", () => {
  const sdxl = ["unet.a.to_q", "text_encoder.text_model.x", "text_encoder_2.text_model.x"];
  assert.equal(pathFamily(sdxl), "sdxl");
  assert.deepEqual(
    sdxl.map((p) => kohyaStemOfPath(p, "sdxl")),
    ["lora_unet_a_to_q", "lora_te1_text_model_x", "lora_te2_text_model_x"],
  );
  assert.equal(kohyaStemOfPath("text_encoder.text_model.x", "sd"), "lora_te_text_model_x");
  const flux = [
    "transformer.double_blocks.0.img_attn.qkv",
    "transformer.single_transformer_blocks.0.proj_mlp",
    "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q",
  ];
  assert.equal(pathFamily(flux), "flux");
  assert.equal(kohyaStemOfPath(flux[0]!, "flux"), "lora_unet_double_blocks_0_img_attn_qkv");
  assert.equal(kohyaStemOfPath(flux[2]!, "flux"), "lora_te3_encoder_block_0_layer_0_SelfAttention_q");
  assert.equal(pathFamily(["transformer.h.0.attn.c_attn"]), "other");
  assert.equal(kohyaStemOfPath("transformer.h.0.attn.c_attn", "other"), "lora_transformer_h_0_attn_c_attn");
  assert.equal(pathFamily(["transformer.pos_embed.proj", "transformer.transformer_blocks.0.attn.to_q"]), "dit");
  assert.equal(kohyaStemOfPath("transformer.pos_embed.proj", "dit"), undefined);
});

test("the Flux table reads both ways: kohya stem → BFL path → diffusers parts → the same BFL module", () => {
  for (const e of FLUX_TABLE) {
    const bfl = e.bfl.replace("{n}", "7");
    const k = fluxFromKohya(bfl.replace(/\./g, "_"));
    assert.equal(k?.bfl, bfl, bfl);
    assert.equal(fluxFromBfl(bfl)?.entry, e);
    e.diffusers.forEach((d, part) => {
      const hit = fluxFromDiffusers(d.replace("{n}", "7"));
      assert.equal(hit?.bfl, bfl, d);
      assert.equal(hit?.part, part);
    });
  }
  assert.deepEqual(fluxSplitRows(FLUX_TABLE.find((e) => e.split === "linear1")!, 21504), [3072, 3072, 3072, 12288]);
  assert.deepEqual(fluxSplitRows(FLUX_TABLE.find((e) => e.split === "thirds")!, 9216), [3072, 3072, 3072]);
  assert.equal(fluxSplitRows(FLUX_TABLE.find((e) => e.split === "linear1")!, 20), undefined);
});

test("an LLM's own top module transformer. (GPT-2, Falcon, Bloom) is a plain path, not the diffusers component: lora_transformer_…", () => {
  // kohya stem "lora_" + the path with dots as underscores (docs/formats.md "kohya"); the pairing key is the stem less "lora_".
  for (const p of ["transformer.h.0.attn.c_attn", "transformer.h.11.mlp.c_proj", "transformer.word_embeddings"]) {
    const plain = "lora_" + p.replace(/\./g, "_");
    assert.equal(kohyaStemFor(p), plain, p);
    assert.equal(matchKeyFor(p), plain.slice("lora_".length), p);
    assert.equal(pathFamily([p]), "other");
    assert.equal(kohyaStemOfPath(p, "other"), plain, p);
  }
  // diffusers / BFL transformers keep the component (Flux, SD3, PixArt): lora_unet_…
  assert.equal(kohyaStemFor("transformer.double_blocks.0.img_attn.qkv"), "lora_unet_double_blocks_0_img_attn_qkv");
  assert.equal(kohyaStemFor("transformer.transformer_blocks.0.attn.to_q"), "lora_unet_transformer_blocks_0_attn_to_q");
  assert.equal(kohyaStemOfPath("transformer.single_blocks.3.linear2", "flux"), "lora_unet_single_blocks_3_linear2");
  assert.equal(kohyaStemOfPath("transformer.transformer_blocks.0.attn.to_q", "dit"), undefined, "SD3: no kohya name");
  assert.equal(matchKeyFor("transformer.proj_out"), "unet_proj_out");
});
