// Module naming across formats. kohya stems are `lora_` + prefix + the module path with every
// `.` turned into `_` (cli.md "Adapters in and out"); the mapping is lossy, so writers keep the
// dotted names in metadata. matchKey pairs the same module across PEFT, kohya and diffusers files.

export const PEFT_PREFIX = "base_model.model.";

/** Component prefixes of diffusers/PEFT-style paths and the kohya stem prefix each becomes. */
const KOHYA_COMPONENT: [string, string][] = [
  ["text_encoder_2.", "te2_"],
  ["text_encoder_3.", "te3_"],
  ["text_encoder.", "te_"],
  ["unet.", "unet_"],
  ["transformer.", "unet_"],
];

/** kohya stem for a dotted module path. */
export function kohyaStemFor(path: string): string {
  for (const [from, to] of KOHYA_COMPONENT) {
    if (path.startsWith(from)) return "lora_" + to + path.slice(from.length).replace(/\./g, "_");
  }
  return "lora_" + path.replace(/\./g, "_");
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
