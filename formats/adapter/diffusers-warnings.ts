// Where diffusers (v0.40, measured by running its own loading code; docs/formats.md "Naming
// maps") would drop or mis-scale a module of a file we are about to write, so `convert` can say so.
// kohya files go through diffusers' kohya converters (lora_conversion_utils.py); our diffusers files
// are PEFT-style keys with lora_adapter_metadata, which diffusers reads as written except for the
// cases below (and refuses or ignores where the file is not a diffusers model's: unloadable).
import { pathFamily } from "./name-map.js";
import { outputNames } from "./split-fuse.js";
import type { AdapterOutput } from "./output.js";
import { COMPONENT_RE } from "./parse-diffusers.js";
import { diffusersKeyBase } from "./write-diffusers.js";

const list = (xs: string[]) => (xs.length > 3 ? `${xs.slice(0, 3).join(", ")} and ${xs.length - 3} more` : xs.join(", "));

/** Text-encoder groups: component → names of its modules. */
function byEncoder(names: string[], componentOf: (n: string) => string | undefined): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const n of names) {
    const c = componentOf(n);
    if (c) g.set(c, [...(g.get(c) ?? []), n]);
  }
  return g;
}

/**
 * What keeps diffusers from loading a diffusers file at all, whatever the model: a key without
 * "lora" (a passthrough such as a PEFT modules_to_save head) makes load_lora_weights refuse the
 * file (lora_pipeline.py: "Invalid LoRA checkpoint"), and a module without a pipeline component
 * prefix is loaded by no component (load_lora_adapter keeps only `<prefix>.` keys). lora itself
 * reads such a file back as written.
 */
function unloadable(out: AdapterOutput): string[] {
  const w: string[] = [];
  const extra = out.passthrough.map((p) => p.tensor.name).filter((n) => !n.includes("lora"));
  if (extra.length)
    w.push(
      `diffusers refuses the file: ${extra.length} passthrough tensor(s) have no "lora" in their names (${list(extra)}): "Invalid LoRA checkpoint"; --to peft keeps them where PEFT loads them`,
    );
  const bare = outputNames(out)
    .map((n) => diffusersKeyBase(n.name))
    .filter((p) => !COMPONENT_RE.test(p));
  if (bare.length)
    w.push(
      `no diffusers pipeline loads the ${bare.length} module(s) without a component prefix (unet., transformer., text_encoder., …) (${list(bare)}): not a diffusers model's modules`,
    );
  return w;
}

export function diffusersLoadWarnings(out: AdapterOutput): string[] {
  const family = pathFamily(out.modules.map((m) => m.path));
  const w: string[] = out.format === "diffusers" ? unloadable(out) : [];
  if (family === "other") return w;
  const names = outputNames(out);
  if (out.format === "kohya") {
    const stems = names.map((n) => n.name);
    if (family === "flux") {
      const outside = stems.filter((s) => /^lora_unet_(img_in|txt_in|time_in_|vector_in_|guidance_in_|final_layer_)/.test(s));
      if (outside.length)
        w.push(
          `diffusers drops ${outside.length} module(s) of a kohya Flux file (${list(outside)}): its converter names them without "transformer."; --to diffusers keeps them`,
        );
      const t5 = stems.filter((s) => s.startsWith("lora_te3_"));
      if (t5.length) w.push(`diffusers drops the ${t5.length} T5 (lora_te3_) module(s) of a kohya Flux file (${list(t5)})`);
    }
    const te = byEncoder(stems, (s) => /^lora_(te1?|te2)_/.exec(s)?.[1]);
    for (const [c, ns] of te) {
      const qkv = ns.filter((s) => /_self_attn_[qkv]_proj$/.test(s));
      if (qkv.length && !ns.some((s) => s.endsWith("_self_attn_out_proj"))) {
        w.push(
          qkv.length === ns.length
            ? `diffusers rejects the lora_${c}_ text-encoder modules: q/k/v without an out_proj LoRA ("Could not automatically infer state dict type")`
            : `diffusers does not load the ${qkv.length} lora_${c}_ q/k/v module(s) (${list(qkv)}): it converts q/k/v only when an out_proj LoRA is present`,
        );
      }
    }
    if (family !== "flux") {
      const comp = byEncoder(stems, (s) => /^lora_(unet|te1?|te2)_/.exec(s)?.[1]);
      const alphaOf = new Map(names.map((n) => [n.name, n.alpha]));
      for (const [c, ns] of comp) {
        const counts = new Map<number, number>();
        for (const s of ns) counts.set(alphaOf.get(s)!, (counts.get(alphaOf.get(s)!) ?? 0) + 1);
        if (counts.size < 2) continue;
        const common = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
        const attn = ns.filter((s) => /_(to_[qkv]|to_out_0|self_attn_[qkv]_proj|self_attn_out_proj)$/.test(s) && alphaOf.get(s) !== common);
        if (attn.length)
          w.push(
            `diffusers applies alpha ${common} (the most common) to ${attn.length} lora_${c}_ attention module(s) with another alpha (${list(attn)}): their ΔW would be mis-scaled; --to diffusers keeps every alpha`,
          );
      }
    }
  } else if (out.format === "diffusers") {
    const paths = names.map((n) => n.name);
    if (family === "flux") {
      const t5 = paths.filter((p) => p.startsWith("text_encoder_2."));
      if (t5.length) w.push(`diffusers' Flux pipeline loads no text_encoder_2 (T5) LoRA: ${t5.length} module(s) would be ignored (${list(t5)})`);
    }
    const te = byEncoder(paths, (p) => /^(text_encoder(?:_2)?)\./.exec(p)?.[1]);
    for (const [c, ps] of te) {
      if (family === "flux" && c === "text_encoder_2") continue;
      if (!ps.some((p) => p.includes(".self_attn.")))
        w.push(`diffusers rejects ${c} LoRAs without an attention module (${list(ps)}): "Could not automatically infer state dict type"`);
    }
  }
  return w;
}
