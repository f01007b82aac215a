// The one entry point of the naming maps (docs/formats.md "Naming maps"): which model family a
// module set belongs to (SD 1.x/2.x, SDXL, Flux, or none of them: an LLM adapter), the adapter-model
// path of a kohya stem (readers), and the kohya stem of a path (writers). Paths carry the diffusers
// pipeline component (`unet.`, `text_encoder.`, `text_encoder_2.`, `transformer.`); kohya Flux
// modules keep their BFL names under `transformer.` (names-flux.ts), split or fused on write.
import { InvalidInputError } from "../../common/errors.js";
import { fluxFromBfl, fluxFromDiffusers, fluxFromKohya, looksFluxKohya } from "./names-flux.js";
import { clipPathFromKohya, isSgmStem, t5PathFromKohya, unetPathFromKohya } from "./names-sdxl.js";
import { isDiffusersTransformerPath, kohyaPrefixOf, kohyaStemFor, matchKeyFor } from "./names.js";

export type ModelFamily = "sd" | "sdxl" | "flux" | "dit" | "other";

/** Family of a kohya file from its tensor names or stems (`lora_unet_double_blocks_…` Flux; te1/te2 or sgm blocks SDXL). */
export function kohyaFamily(names: Iterable<string>): ModelFamily {
  const stems = [...new Set([...names].map((n) => n.split(".")[0]!))];
  if (looksFluxKohya(stems)) return "flux";
  if (stems.some((s) => s.startsWith("lora_te1_") || s.startsWith("lora_te2_") || (s.startsWith("lora_unet_") && isSgmStem(s.slice("lora_unet_".length)))))
    return "sdxl";
  if (stems.some((s) => kohyaPrefixOf(s) !== undefined)) return "sd";
  return "other";
}

export interface KohyaModuleId {
  path: string;
  matchKey: string;
  /** false: the stem has a Stable Diffusion prefix but no map covers it (path is the stem without `lora_`). */
  mapped: boolean;
}

/** Stems already mapped, per family: a catalog's adapters of one base repeat the same few hundred stems. */
const stemPaths = new Map<string, string | undefined>();
const STEM_CACHE_MAX = 1 << 16;

/** The dotted path of a kohya stem in a file of the given family, or undefined when no map covers it. */
export function pathOfKohyaStem(stem: string, family: ModelFamily): string | undefined {
  const key = `${family} ${stem}`;
  if (stemPaths.has(key)) return stemPaths.get(key);
  const p = mapKohyaStem(stem, family);
  if (stemPaths.size >= STEM_CACHE_MAX) stemPaths.clear();
  stemPaths.set(key, p);
  return p;
}

function mapKohyaStem(stem: string, family: ModelFamily): string | undefined {
  const s = stem.replace(/^lora_/, "");
  const prefix = kohyaPrefixOf("lora_" + s);
  if (prefix === undefined) return undefined;
  const body = s.slice(prefix.length + 1);
  if (prefix === "unet") {
    if (family === "flux") {
      const hit = fluxFromKohya(body);
      return hit ? `transformer.${hit.bfl}` : undefined;
    }
    const p = unetPathFromKohya(body);
    return p ? `unet.${p}` : undefined;
  }
  if (prefix === "te3") {
    const p = t5PathFromKohya(body);
    return p ? `${family === "flux" ? "text_encoder_2" : "text_encoder_3"}.${p}` : undefined;
  }
  if (prefix === "te2" && family === "flux") return undefined;
  const p = clipPathFromKohya(body);
  return p ? `${prefix === "te2" ? "text_encoder_2" : "text_encoder"}.${p}` : undefined;
}

/** Path and pairing key of a kohya stem: our lora_module_names map first, then the family's naming map. */
export function kohyaModuleId(stem: string, family: ModelFamily, names: Record<string, string>): KohyaModuleId {
  const named = names[stem];
  if (named !== undefined) return { path: named, matchKey: matchKeyFor(named), mapped: true };
  const p = pathOfKohyaStem(stem, family);
  if (p !== undefined) return { path: p, matchKey: matchKeyFor(p), mapped: true };
  const bare = stem.replace(/^lora_/, "");
  return { path: bare, matchKey: bare, mapped: kohyaPrefixOf(stem) === undefined };
}

/** A path the kohya reader left unmapped (an SD-prefixed stem without dots), for writers to refuse. */
export function isUnmappedKohyaPath(path: string): boolean {
  return !path.includes(".") && kohyaPrefixOf("lora_" + path) !== undefined;
}

const COMPONENT = /^(unet|transformer|text_encoder(?:_\d+)?)\./;

/** Family of an output module set from its paths. */
export function pathFamily(paths: readonly string[]): ModelFamily {
  const tr = paths.filter(isDiffusersTransformerPath);
  if (tr.length) return tr.every((p) => fluxFromBfl(p.slice(12)) || fluxFromDiffusers(p.slice(12))) ? "flux" : "dit";
  if (paths.some((p) => p.startsWith("text_encoder_2.") || p.startsWith("unet.") || p.startsWith("text_encoder."))) {
    return paths.some((p) => p.startsWith("text_encoder_2.")) ? "sdxl" : "sd";
  }
  return "other";
}

/**
 * The kohya stem of a module path in an output of the given family (Flux diffusers parts are fused
 * by the caller first): `unet.` → `lora_unet_`, text encoders `lora_te_` (SD) / `lora_te1_`,
 * `lora_te2_` (SDXL) / `lora_te1_`, `lora_te3_` (Flux: CLIP-L, T5), BFL paths `lora_unet_`.
 * Undefined when the path has a component no kohya naming covers (a non-Flux `transformer.`).
 */
export function kohyaStemOfPath(path: string, family: ModelFamily): string | undefined {
  const m = COMPONENT.exec(path);
  if (!m) return kohyaStemFor(path);
  const rest = path.slice(m[0].length).replace(/\./g, "_");
  switch (m[1]) {
    case "unet":
      return `lora_unet_${rest}`;
    case "transformer":
      if (!isDiffusersTransformerPath(path)) return kohyaStemFor(path); // an LLM's transformer.h.… (GPT-2, Falcon): lora_transformer_h_…
      return family === "flux" && fluxFromBfl(path.slice(m[0].length)) ? `lora_unet_${rest}` : undefined;
    case "text_encoder":
      return `lora_${family === "sdxl" || family === "flux" ? "te1" : "te"}_${rest}`;
    case "text_encoder_2":
      return `lora_${family === "flux" ? "te3" : "te2"}_${rest}`;
    case "text_encoder_3":
      return family === "flux" ? undefined : `lora_te3_${rest}`;
    default:
      return undefined;
  }
}

/** exit 3 for a module that no naming map covers, naming it. */
export function unmappedName(name: string, family: ModelFamily, to: string): InvalidInputError {
  const fam = { sd: "Stable Diffusion 1.x/2.x", sdxl: "SDXL", flux: "Flux", dit: "diffusers transformer (not Flux)", other: "Stable Diffusion" }[family];
  return new InvalidInputError(`module "${name}": no ${to} name: it is no module the ${fam} naming maps know`, {
    hint: 'docs/formats.md "Naming maps" lists the module names read and written; convert within the same format keeps names as they are',
  });
}
