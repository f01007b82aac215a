// diffusers LoRA files (docs/formats.md "diffusers"; issue 8). Two layouts, told apart by their keys:
//
// 1. The old "attention processor" layout (diffusers ≤ 0.20, `pytorch_lora_weights.safetensors`):
//      <block>.processor.<to_q|to_k|to_v|to_out>_lora.<down|up>.weight     (UNet)
//      <block>.<q|k|v|out>_proj.lora_linear_layer.<down|up>.weight          (text encoder)
//    and two close relatives diffusers still reads: `<block>.<to_q|…>_lora.<down|up>.weight`
//    without `.processor.` (the monkey-patched CLIP attention: to_q_lora → q_proj) and
//    `<module>.lora.<down|up>.weight` (LoRACompatibleLinear, diffusers 0.19–0.23).
//    Module path = the diffusers module path (`<block>.to_k`; to_out_lora → `<block>.to_out.0`),
//    A = down, B = up, scale 1 unless a network alpha is stored beside them as an `….alpha`
//    tensor (then alpha/rank, as LoRALinearLayer did).
// 2. The PEFT-style layout diffusers saves today: `<component>.<module>.lora_A.weight` /
//    `lora_B.weight` (component = unet, text_encoder, text_encoder_2, transformer, …), no
//    adapter_config.json. r/lora_alpha/rank_pattern/alpha_pattern come from
//    __metadata__["lora_adapter_metadata"] (keys prefixed per component: "unet.r",
//    "unet.lora_alpha", …) when present; otherwise from `<module>.alpha` network-alpha tensors;
//    otherwise alpha = rank for every module (diffusers' own default since PR #14409).
//
// Every module's `path` carries its component (`unet.down_blocks.0….to_k`), whether or not the
// file spells it: attention-processor keys without a prefix belong to the UNet (text-model keys to
// the text encoder). That makes matchKey (and kohya stems) `unet_down_blocks_0_…`, the way kohya
// and ComfyUI name them, so a diffusers file pairs with kohya and PEFT files of the same base.
import { InvalidInputError } from "../../common/errors.js";
import type { TensorInfo } from "../safetensors/index.js";
import type { Detected, DetectContext, Detector } from "./detector.js";
import { buildModule, type ModuleParts } from "./module.js";
import { DIT_ROOT_NAMES, matchKeyFor, PEFT_PREFIX } from "./names.js";
import { peftModuleScale, type PeftConfig } from "./peft-config.js";
import { groupPeftKeys } from "./parse-peft.js";
import type { LoraModule } from "./types.js";

/** The safetensors metadata key diffusers stores its LoraConfig kwargs under (lora_base.py). */
export const DIFFUSERS_METADATA_KEY = "lora_adapter_metadata";

/** Pipeline components whose name prefixes diffusers LoRA keys. */
export const COMPONENT_RE = /^(unet|transformer(?:_\d+)?|text_encoder(?:_\d+)?|prior|decoder|controlnet)\./;

/** Top-level UNet2DConditionModel children: keys starting here belong to `unet`. */
const UNET_ROOTS = new Set([
  "down_blocks",
  "up_blocks",
  "mid_block",
  "conv_in",
  "conv_out",
  "conv_norm_out",
  "time_embedding",
  "add_embedding",
  "class_embedding",
  "encoder_hid_proj",
]);
/** Top-level children of diffusers transformer models (SD3, Flux, PixArt, …). */
const TRANSFORMER_ROOTS = new Set(DIT_ROOT_NAMES);

/** The component a module name belongs to: its own prefix, or a guess from its root. */
export function componentOf(name: string, fallback?: string): string | undefined {
  const m = COMPONENT_RE.exec(name);
  if (m) return m[1];
  const root = name.split(".")[0]!;
  if (root === "text_model") return "text_encoder";
  if (UNET_ROOTS.has(root)) return "unet";
  if (TRANSFORMER_ROOTS.has(root)) return "transformer";
  return fallback;
}

/** The component-qualified path of a module name ("unet." added when the file left it out). */
function qualify(name: string, fallback?: string): { path: string; component: string | undefined; rel: string } {
  const m = COMPONENT_RE.exec(name);
  if (m) return { path: name, component: m[1], rel: name.slice(m[0].length) };
  const component = componentOf(name, fallback);
  return { path: component ? `${component}.${name}` : name, component, rel: name };
}

interface OldFamily {
  re: RegExp;
  /** The module name in the file's own namespace, from the match. */
  module(m: RegExpExecArray): string;
  /** Component when the name has no prefix and no recognisable root. */
  fallback: string;
}

const TO_PROJ: Record<string, string> = { to_q: "q_proj", to_k: "k_proj", to_v: "v_proj", to_out: "out_proj" };

/** Old-layout key families: groups [1] = the layer key (shared by down/up), [last] = down|up. */
const OLD_FAMILIES: OldFamily[] = [
  {
    re: /^((.*)\.processor\.(to_q|to_k|to_v|to_out)_lora)\.(down|up)\.weight$/,
    module: (m) => `${m[2]}.${m[3] === "to_out" ? "to_out.0" : m[3]}`,
    fallback: "unet",
  },
  {
    re: /^((.*)\.lora_linear_layer)\.(down|up)\.weight$/,
    module: (m) => m[2]!,
    fallback: "text_encoder",
  },
  {
    // CLIP attention monkey-patched by diffusers ≤ 0.16: self_attn.to_q_lora → self_attn.q_proj.
    re: /^((.*)\.(to_q|to_k|to_v|to_out)_lora)\.(down|up)\.weight$/,
    module: (m) => (/(^|\.)self_attn$/.test(m[2]!) ? `${m[2]}.${TO_PROJ[m[3]!]}` : `${m[2]}.${m[3] === "to_out" ? "to_out.0" : m[3]}`),
    fallback: "unet",
  },
  {
    re: /^((.*)\.lora)\.(down|up)\.weight$/,
    module: (m) => m[2]!,
    fallback: "unet",
  },
];

function oldMatch(name: string): { fam: OldFamily; m: RegExpExecArray } | undefined {
  for (const fam of OLD_FAMILIES) {
    const m = fam.re.exec(name);
    if (m) return { fam, m };
  }
  return undefined;
}

const isPeftFactor = (n: string) =>
  n.endsWith(".lora_A.weight") || n.endsWith(".lora_embedding_A") || n.endsWith(".lora_B.weight") || n.endsWith(".lora_embedding_B");

/**
 * Does this key set look like a diffusers LoRA file (either layout)? The LoRA factors decide: a
 * passthrough tensor keeps its PEFT name in our diffusers output
 * (`base_model.model.classifier.modules_to_save.default.weight`), and such a file is still read
 * with its lora_adapter_metadata.
 */
export function hasDiffusersKeys(names: string[], ctx: Pick<DetectContext, "metadata" | "config">): boolean {
  if (names.some((n) => oldMatch(n) !== undefined)) return true;
  if (!names.some(isPeftFactor)) return false;
  if (names.some((n) => isPeftFactor(n) && n.startsWith(PEFT_PREFIX))) return false;
  if (ctx.metadata[DIFFUSERS_METADATA_KEY] !== undefined) return true;
  if (ctx.config) return false; // an adapter_config beside it: PEFT's rules apply
  return names.some((n) => isPeftFactor(n) && COMPONENT_RE.test(n));
}

/** lora_adapter_metadata split into one LoraConfig per component ("" = unprefixed keys). */
export function splitAdapterMetadata(raw: string, label: string): Map<string, PeftConfig> {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new InvalidInputError(`${label}: __metadata__.${DIFFUSERS_METADATA_KEY} is not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new InvalidInputError(`${label}: __metadata__.${DIFFUSERS_METADATA_KEY} must be a JSON object`);
  const out = new Map<string, PeftConfig>();
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const m = COMPONENT_RE.exec(k);
    const comp = m ? m[1]! : "";
    const field = m ? k.slice(m[0].length) : k;
    const cfg = out.get(comp) ?? {};
    cfg[field] = val;
    out.set(comp, cfg);
  }
  for (const [comp, cfg] of out) {
    const pt = cfg["peft_type"];
    if (pt !== undefined && pt !== null && pt !== "LORA") {
      throw new InvalidInputError(
        `${label}: ${DIFFUSERS_METADATA_KEY}: ${comp ? comp + "." : ""}peft_type ${JSON.stringify(pt)} is not supported (only LORA adapters)`,
      );
    }
  }
  return out;
}

interface Group {
  /** Module name in the file's namespace (shown to users). */
  name: string;
  fallback: string | undefined;
  parts: ModuleParts;
  /** The key that first formed the group, for error messages. */
  firstKey: string;
  /** Layer keys an alpha tensor may be named after. */
  alphaBases: string[];
  layout: "old" | "peft";
}

export interface DiffusersParse {
  modules: LoraModule[];
  passthrough: TensorInfo[];
  config: PeftConfig | null;
  configSource: string;
}

export async function parseDiffusers(ctx: DetectContext): Promise<DiffusersParse> {
  const { file, label, metadata, notes } = ctx;
  const tensors = file.header.tensors;
  const groups: Group[] = [];
  const rest: TensorInfo[] = [];
  const oldByLayer = new Map<string, Group>();
  const alphas: TensorInfo[] = [];
  const peftTensors: TensorInfo[] = [];
  for (const t of tensors) {
    if (t.name.endsWith(".alpha")) {
      alphas.push(t);
      continue;
    }
    const hit = oldMatch(t.name);
    if (hit) {
      const layer = hit.m[1]!;
      let g = oldByLayer.get(layer);
      if (!g) {
        g = {
          name: hit.fam.module(hit.m),
          fallback: hit.fam.fallback,
          parts: { extras: {} },
          firstKey: t.name,
          alphaBases: [layer, `${layer}.down.weight`, `${layer}.up.weight`],
          layout: "old",
        };
        oldByLayer.set(layer, g);
        groups.push(g);
      }
      const role = hit.m[hit.m.length - 1] === "down" ? "A" : "B";
      if (g.parts[role])
        throw new InvalidInputError(
          `${label}: tensor ${t.name} duplicates ${g.parts[role]!.name} (both are the ${role === "A" ? "down" : "up"} factor of module "${g.name}")`,
        );
      g.parts[role] = t;
      continue;
    }
    peftTensors.push(t);
  }
  // An up without its down (or the reverse) is a broken or half-converted file: exit 3, naming
  // the key. Old-layout groups are checked first so that a factor already renamed to the PEFT-style
  // layout while its partner was not is reported as what it is.
  const present = new Set(tensors.map((t) => t.name));
  for (const g of groups) {
    if (g.parts.A && g.parts.B) continue;
    const have = (g.parts.A ?? g.parts.B)!;
    const missing = g.parts.A ? have.name.replace(/\.down\.weight$/, ".up.weight") : have.name.replace(/\.up\.weight$/, ".down.weight");
    const role = g.parts.A ? "lora_B.weight" : "lora_A.weight";
    const moved = [g.name, qualify(g.name, g.fallback).path].map((n) => `${n}.${role}`).find((n) => present.has(n));
    if (moved) {
      throw new InvalidInputError(
        `${label}: half-converted module "${g.name}": ${have.name} is in the old attention-processor layout but its ${g.parts.A ? "up" : "down"} factor is ${moved}, in the PEFT-style layout`,
        { hint: "convert the whole file with diffusers (or keep it unconverted); one module cannot mix layouts" },
      );
    }
    throw new InvalidInputError(
      `${label}: module "${g.name}" has ${g.parts.A ? "a down" : "an up"} factor but no ${g.parts.A ? "up" : "down"} factor: ${have.name} is present, ${missing} is missing`,
      { hint: "the file is truncated or half-converted; re-export it with diffusers" },
    );
  }
  // PEFT-style keys: grouped (and checked for lone lora_A / lora_B) the way PEFT files are.
  const peft = groupPeftKeys(peftTensors, label);
  rest.push(...peft.rest);
  for (const [base, parts] of peft.groups) {
    groups.push({ name: base, fallback: undefined, parts, firstKey: (parts.A ?? parts.B)!.name, alphaBases: [], layout: "peft" });
  }

  // Paths, and modules that two key families both claim (a half-converted file).
  const byPath = new Map<string, Group>();
  const qual = new Map<Group, ReturnType<typeof qualify>>();
  let guessed = 0;
  for (const g of groups) {
    const q = qualify(g.name, g.fallback);
    if (!COMPONENT_RE.test(g.name) && q.component) guessed++;
    qual.set(g, q);
    const prev = byPath.get(q.path);
    if (prev) {
      throw new InvalidInputError(`${label}: module "${q.path}" is stored twice, as ${prev.firstKey} and as ${g.firstKey}`, {
        hint: "a half-converted file: keep one layout per module",
      });
    }
    byPath.set(q.path, g);
    const bases = [...g.alphaBases, g.name];
    g.alphaBases = q.path === g.name ? bases : [...bases, ...bases.map((b) => `${q.component}.${b}`)];
  }

  // Network alphas: `<layer>.alpha`, `<layer>.down.weight.alpha` or `<module>.alpha`.
  const alphaFor = new Map<Group, TensorInfo>();
  const byAlphaBase = new Map<string, Group>();
  for (const g of groups) for (const b of g.alphaBases) if (!byAlphaBase.has(b)) byAlphaBase.set(b, g);
  for (const t of alphas) {
    const base = t.name.slice(0, -".alpha".length);
    const g = byAlphaBase.get(base);
    if (!g) {
      rest.push(t);
      continue;
    }
    if (alphaFor.has(g)) throw new InvalidInputError(`${label}: module "${g.name}" has two alpha tensors: ${alphaFor.get(g)!.name} and ${t.name}`);
    alphaFor.set(g, t);
  }
  const orphanAlphas = alphas.filter((t) => rest.includes(t)).length;
  if (orphanAlphas) notes.push(`${orphanAlphas} .alpha tensor(s) name no LoRA module: carried as passthrough`);

  // The scale rule.
  const rawMeta = metadata[DIFFUSERS_METADATA_KEY];
  const configs = rawMeta !== undefined ? splitAdapterMetadata(rawMeta, label) : null;
  if (configs && alphaFor.size) {
    const t = [...alphaFor.values()][0]!;
    throw new InvalidInputError(
      `${label}: both __metadata__.${DIFFUSERS_METADATA_KEY} and network-alpha tensors (${t.name}) give the scale; diffusers refuses such a file`,
    );
  }

  const modules: LoraModule[] = [];
  let byAlpha = 0,
    byConfig = 0,
    byDefault = 0;
  const usedComponents = new Set<string>();
  for (const g of groups) {
    const q = qual.get(g)!;
    const mod = buildModule(g.parts, { name: g.name, path: q.path, matchKey: matchKeyFor(q.path), label });
    const at = alphaFor.get(g);
    const cfg = configs ? configs.get(q.component && configs.has(q.component) ? q.component : "") : undefined;
    if (at) {
      if (at.shape.reduce((x, y) => x * y, 1) !== 1) throw new InvalidInputError(`${label}: ${at.name} must hold one value, has shape [${at.shape}]`);
      const v = (await file.readFloat64(at))[0]!;
      if (!Number.isFinite(v)) throw new InvalidInputError(`${label}: ${at.name} is ${v}; alpha must be finite`);
      const alpha = v !== 0 ? v : mod.rank;
      Object.assign(mod, { alpha, scale: alpha / mod.rank, alphaTensor: at });
      byAlpha++;
    } else if (cfg) {
      const sc = peftModuleScale(cfg, q.rel, `${label} (__metadata__.${DIFFUSERS_METADATA_KEY})`);
      if (sc.rank !== mod.rank) {
        throw new InvalidInputError(`${label}: ${DIFFUSERS_METADATA_KEY} says rank ${sc.rank} for module "${g.name}" but ${mod.A.name} has rank ${mod.rank}`, {
          hint: "the metadata (r / rank_pattern) contradicts the tensor shapes; diffusers would refuse to load it",
        });
      }
      Object.assign(mod, { alpha: sc.alpha, scale: sc.scale, rslora: sc.rslora });
      byConfig++;
      if (q.component) usedComponents.add(q.component);
    } else {
      byDefault++;
    }
    modules.push(mod);
  }

  const nOld = groups.filter((g) => g.layout === "old").length;
  const layout =
    nOld === groups.length
      ? "attention-processor keys"
      : nOld === 0
        ? "PEFT-style keys"
        : `attention-processor keys (${nOld} modules) and PEFT-style keys (${groups.length - nOld})`;
  notes.push(`diffusers ${layout}`);
  if (guessed)
    notes.push(
      `${guessed} module(s) without a component prefix: taken as ${[...new Set(groups.filter((g) => !COMPONENT_RE.test(g.name)).map((g) => qual.get(g)!.component ?? "(none)"))].join(", ")} modules`,
    );
  const parts: string[] = [];
  if (byConfig) parts.push(`__metadata__.${DIFFUSERS_METADATA_KEY}${byConfig < modules.length ? ` (${byConfig} modules)` : ""}`);
  if (byAlpha) parts.push(`network alphas (.alpha tensors; scale = alpha/rank)${byAlpha < modules.length ? ` (${byAlpha} modules)` : ""}`);
  if (byDefault) {
    const rule = nOld === groups.length ? "no network alpha: scale 1 (attention-processor rule)" : "alpha = rank (diffusers' default, scale 1)";
    parts.push(byDefault < modules.length ? `${rule} for the other ${byDefault} modules` : `none: ${rule}`);
  }
  const configSource = parts.join("; ");
  if (byDefault && byDefault < modules.length) notes.push(`${byDefault} module(s) without alpha information: alpha = rank, scale 1 (diffusers' rule)`);
  if (configs && byDefault) notes.push(`${DIFFUSERS_METADATA_KEY} has no config for ${byDefault} module(s)' component: alpha = rank assumed for them`);

  // The config shown by inspect and used as the base of PEFT output: the LoraConfig of the one
  // component the metadata describes, when there is exactly one (prefixed keys stay in metadata).
  let config: PeftConfig | null = null;
  if (configs) {
    const keys = [...configs.keys()];
    if (keys.length === 1) config = configs.get(keys[0]!)!;
    else if (usedComponents.size === 1) config = configs.get([...usedComponents][0]!) ?? null;
  }
  return { modules, passthrough: rest, config, configSource };
}

export const diffusersDetector: Detector = {
  format: "diffusers",
  claims: (names, ctx) => hasDiffusersKeys(names, ctx),
  async parse(ctx): Promise<Detected> {
    const r = await parseDiffusers(ctx);
    return { format: "diffusers", ...r };
  },
};
