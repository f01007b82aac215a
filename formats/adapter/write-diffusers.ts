// Writing a diffusers LoRA file (issue 8): the PEFT-style layout diffusers saves today,
//   <component>.<module>.lora_A.weight  [r, in]      <component>.<module>.lora_B.weight  [out, r]
// with __metadata__ {"format": "pt", "lora_adapter_metadata": <JSON>}, the JSON holding one
// LoraConfig per component with prefixed keys ("unet.r", "unet.lora_alpha", "unet.rank_pattern",
// "unet.alpha_pattern", "unet.target_modules", …) as diffusers' save_lora_weights writes it, so
// diffusers (load_lora_weights) rebuilds exactly the intended scale alpha/r for every module.
//
// Attention-processor inputs are written in this layout too, never in the old one: the old
// layout cannot hold a per-module rank or alpha except through network-alpha tensors (which
// diffusers refuses next to lora_adapter_metadata), cannot name modules other than attention
// projections (a merge with a kohya file that also covers proj_in or ff would have nowhere to go),
// and diffusers itself converts it to this layout on load. Factors are written as they come (their
// bytes are copied when unchanged), so ΔW is the same either way.
import type { TensorSpec } from "../safetensors/index.js";
import { COMPONENT_RE, componentOf, DIFFUSERS_METADATA_KEY } from "./parse-diffusers.js";
import { peftPatterns, type PeftConfig } from "./peft-config.js";
import type { AdapterOutput, OutModule } from "./output.js";
import { moduleTensorSpecs } from "./module-specs.js";
import { sortedJson } from "./json.js";

/**
 * Metadata keys never carried over from the input: the ones the writer owns. kohya's fields are
 * carried and brought up to date by write.ts (kohya-metadata.ts).
 */
const MANAGED_META = ["format", "adapter_config", "lora_module_names", "lora_module_kinds", "lora_peft_config", DIFFUSERS_METADATA_KEY];

/**
 * The diffusers key base of a module: its dotted path with the pipeline component in front
 * (`unet.` added to UNet paths that lack it). Names are mapped before (split-fuse.ts).
 */
export function diffusersKeyBase(path: string): string {
  if (COMPONENT_RE.test(path)) return path;
  const c = componentOf(path);
  return c ? `${c}.${path}` : path;
}

/**
 * One LoraConfig per component ("" when the paths carry none), as diffusers stores them. An
 * OutModule's alpha means what it means for PEFT output: scale = alpha/√rank when
 * baseConfig.use_rslora is true (then every component says use_rslora), else alpha/rank.
 */
export function diffusersAdapterMetadata(out: AdapterOutput): Record<string, unknown> {
  const rslora = out.baseConfig?.["use_rslora"] === true;
  const byComp = new Map<string, { rel: string; m: OutModule }[]>();
  for (const m of out.modules) {
    const base = diffusersKeyBase(m.path);
    const hit = COMPONENT_RE.exec(base);
    const comp = hit ? hit[1]! : "";
    const list = byComp.get(comp) ?? [];
    list.push({ rel: hit ? base.slice(hit[0].length) : base, m });
    byComp.set(comp, list);
  }
  const meta: Record<string, unknown> = {};
  for (const [comp, list] of [...byComp].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const pat = peftPatterns(list.map(({ rel, m }) => ({ path: rel, rank: m.rank, alpha: m.alpha })));
    const cfg: PeftConfig = {
      peft_type: "LORA",
      r: pat.r,
      lora_alpha: pat.lora_alpha,
      rank_pattern: pat.rank_pattern,
      alpha_pattern: pat.alpha_pattern,
      target_modules: [...new Set(list.map((x) => x.rel))].sort(),
    };
    if (rslora) cfg["use_rslora"] = true;
    if (list.some(({ m }) => m.extras && "lora_magnitude_vector" in m.extras)) cfg["use_dora"] = true;
    if (list.some(({ m }) => m.extras && "lora_B.bias" in m.extras)) cfg["lora_bias"] = true;
    // What PEFT needs to load the modules back as they were: Conv1D layouts (GPT-2) and the
    // passthrough heads, so a conversion back to PEFT keeps them.
    const base = out.baseConfig ?? {};
    if (base["fan_in_fan_out"] === true) cfg["fan_in_fan_out"] = true;
    if (out.passthrough.length > 0 && Array.isArray(base["modules_to_save"]) && base["modules_to_save"].length > 0)
      cfg["modules_to_save"] = base["modules_to_save"];
    for (const [k, v] of Object.entries(cfg)) meta[comp ? `${comp}.${k}` : k] = v;
  }
  return meta;
}

function moduleSpecs(out: AdapterOutput): TensorSpec[] {
  const specs: TensorSpec[] = [];
  for (const m of out.modules) {
    const base = diffusersKeyBase(m.path);
    specs.push(
      ...moduleTensorSpecs(m, {
        A: base + (m.kind === "embedding" ? ".lora_embedding_A" : ".lora_A.weight"),
        B: base + (m.kind === "embedding" ? ".lora_embedding_B" : ".lora_B.weight"),
        extra: (role) => `${base}.${role}`,
      }),
    );
  }
  return specs;
}

/** Tensor specs and metadata of a diffusers output file (write.ts planAdapterFile dispatches here). */
export function planDiffusersFile(out: AdapterOutput): { specs: TensorSpec[]; metadata: Record<string, string>; config: PeftConfig | null } {
  const specs = moduleSpecs(out);
  for (const p of out.passthrough) specs.push({ name: p.tensor.name, dtype: p.tensor.dtype, shape: p.tensor.shape, copyFrom: p });
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(out.metadata)) if (!MANAGED_META.includes(k)) metadata[k] = v;
  metadata["format"] = "pt";
  metadata[DIFFUSERS_METADATA_KEY] = sortedJson(diffusersAdapterMetadata(out), 2);
  Object.assign(metadata, out.extraMetadata ?? {});
  return { specs, metadata, config: null };
}

/** File name of a diffusers adapter inside a directory output (what load.ts looks for). */
export const DIFFUSERS_FILE = "pytorch_lora_weights.safetensors";
