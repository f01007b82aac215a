// The kohya LoRA key suffixes and the check that claims a file for the kohya reader
// (parse-kohya.ts, loaded only for a file claimed here: docs/formats.md "kohya").
/** kohya key suffixes and the role each plays in a module. */
export const KOHYA_ROLES: [string, string][] = [
  [".lora_down.weight", "A"],
  [".lora_up.weight", "B"],
  [".alpha", "alpha"],
  [".dora_scale", "dora_scale"],
  [".lora_up.bias", "lora_B.bias"],
  [".lora_mask", "lora_mask"],
];

export function hasKohyaKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(".lora_down.weight") || n.endsWith(".lora_up.weight"));
}
