// LyCORIS key layout (docs/formats.md "LyCORIS"; design: KohakuBlueleaf/LyCORIS lycoris/modules/*.py
// `weight_list` / `custom_state_dict`): kohya-style stems (`lora_unet_…`, `lora_te1_…`, `lycoris_…`)
// with the parameter after a dot. A stem's parameters tell its algorithm.
import type { TensorInfo } from "../../safetensors/index.js";

/** Parameter suffixes after the stem, longest first where one ends another. */
const PARAMS = [
  "hada_w1_a",
  "hada_w1_b",
  "hada_w2_a",
  "hada_w2_b",
  "hada_t1",
  "hada_t2",
  "lokr_w1_a",
  "lokr_w1_b",
  "lokr_w1",
  "lokr_w2_a",
  "lokr_w2_b",
  "lokr_w2",
  "lokr_t1",
  "lokr_t2",
  "lora_down.weight",
  "lora_up.weight",
  "lora_mid.weight",
  "lora_up.bias",
  "lora_mask",
  "alpha",
  "dora_scale",
  "diff_b",
  "diff",
  "on_input",
  "oft_blocks",
  "oft_diag",
  "oft_R",
] as const;
export type LycorisParam = (typeof PARAMS)[number] | "weight";

/** Keys only LyCORIS writes: one of them makes a file LyCORIS (a plain kohya LoRA has none). */
const CLAIMING = new Set<string>([
  "hada_w1_a",
  "hada_w1_b",
  "lokr_w1",
  "lokr_w1_a",
  "lokr_w2",
  "lokr_w2_a",
  "lora_mid.weight",
  "diff",
  "diff_b",
  "on_input",
  "oft_blocks",
  "oft_diag",
]);

function split(name: string): [stem: string, param: string] | null {
  for (const p of PARAMS) if (name.endsWith(`.${p}`)) return [name.slice(0, -p.length - 1), p];
  return null;
}

export function hasLycorisKeys(names: string[]): boolean {
  return names.some((n) => {
    const s = split(n);
    return s !== null && CLAIMING.has(s[1]);
  });
}

export type Group = Map<LycorisParam, TensorInfo>;

/** Tensors grouped by stem; `.weight` joins a stem only beside its (IA)³ `.on_input`. The rest are not module parameters. */
export function groupLycoris(tensors: readonly TensorInfo[]): { groups: Map<string, Group>; rest: TensorInfo[] } {
  const groups = new Map<string, Group>();
  const rest: TensorInfo[] = [];
  const weights: TensorInfo[] = [];
  for (const t of tensors) {
    const s = split(t.name);
    if (!s) {
      if (t.name.endsWith(".weight")) weights.push(t);
      else rest.push(t);
      continue;
    }
    const g = groups.get(s[0]) ?? new Map();
    g.set(s[1] as LycorisParam, t);
    groups.set(s[0], g);
  }
  for (const t of weights) {
    const g = groups.get(t.name.slice(0, -".weight".length));
    if (g?.has("on_input")) g.set("weight", t);
    else rest.push(t);
  }
  return { groups, rest };
}

export type Algo = "plain" | "loha" | "lokr" | "locon-tucker" | "full" | "bias-only" | "ia3" | "oft" | "none";

/** The algorithm a stem's parameters belong to (one per stem; a mixture is malformed). */
export function algoOf(g: Group): Algo | { mixed: string[] } {
  const has = (p: string) => [...g.keys()].some((k) => k.startsWith(p));
  const found: Algo[] = [];
  if (has("hada_")) found.push("loha");
  if (has("lokr_")) found.push("lokr");
  if (g.has("lora_mid.weight")) found.push("locon-tucker");
  else if (g.has("lora_down.weight") || g.has("lora_up.weight")) found.push("plain");
  if (g.has("diff")) found.push("full");
  else if (g.has("diff_b")) found.push("bias-only");
  if (g.has("on_input")) found.push("ia3");
  if (has("oft_")) found.push("oft");
  if (found.length > 1) return { mixed: found };
  return found[0] ?? "none";
}
