// LyCORIS files (docs/formats.md "LyCORIS"; KohakuBlueleaf/LyCORIS lycoris/modules/): LoHa, LoKr,
// LoCon with a Tucker core and full/diff modules are read as derived modules (derived.ts: exact
// factors computed on read, scale folded in); plain lora_down/lora_up modules of the same file go
// through the kohya reader unchanged. (IA)³, bias-only diff and OFT need the base weight: listed in
// Adapter.baseDependent. Naming is kohya's (`lora_unet_…`), so the format is "kohya".
import { InvalidInputError } from "../../common/errors.js";
import type { TensorInfo } from "../safetensors/index.js";
import { buildDerivedAdapterParts, type DerivedModuleSpec } from "./derived.js";
import type { DetectContext, Detected, Detector } from "./detector.js";
import { algoOf, type Group, groupLycoris, hasLycorisKeys } from "./lycoris/keys.js";
import { lohaSpec } from "./lycoris/loha.js";
import type { ModuleId, ScaleOf } from "./lycoris/module-id.js";
import { lokrSpec } from "./lycoris/lokr.js";
import { fullSpec, loconTuckerSpec } from "./lycoris/locon.js";
import { kohyaPrefixOf } from "./names.js";
import { kohyaFamily, kohyaModuleId, type ModelFamily } from "./name-map.js";
import { parseKohya } from "./parse-kohya.js";
import type { BaseDependentModule } from "./types.js";

/** Why each base-dependent algorithm cannot be read from the file alone (docs/formats.md "LyCORIS"). */
const BASE_REASON = {
  ia3: "(IA)³ scales the base weight: ΔW = W ⊙ w per output row (per input column with on_input)",
  "bias-only": "bias-only full module (diff_b without diff): no weight ΔW, and a bias delta is not a LoRA factor",
  oft: "OFT rotates the base weight: ΔW = (R − I)·W",
} as const;

/** The same naming as the kohya reader's for a stem without our lora_module_names map. */
function idOf(stem: string, names: Record<string, string>, family: ModelFamily): ModuleId {
  const prefix = kohyaPrefixOf(stem);
  const { path, matchKey } = kohyaModuleId(stem, family, names);
  return { name: stem, path, matchKey, ...(prefix !== undefined ? { kohyaStem: prefix } : {}) };
}

function moduleNames(meta: Record<string, string>): Record<string, string> {
  try {
    const v = JSON.parse(meta["lora_module_names"] ?? "{}") as unknown;
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, string>) : {};
  } catch {
    return {};
  }
}

/** alpha / dim with kohya's rule: a missing or 0 alpha means alpha = dim (docs/formats.md "LyCORIS"). */
function scaleReader(ctx: DetectContext, g: Group): ScaleOf {
  const t = g.get("alpha");
  return async (dim: number) => {
    if (!t) return { scale: 1, alpha: dim, dim };
    if (t.shape.reduce((x, y) => x * y, 1) !== 1) throw new InvalidInputError(`${ctx.label}: ${t.name} must hold one value, has shape [${t.shape}]`);
    const v = (await ctx.file.readFloat64(t))[0]!;
    if (!Number.isFinite(v)) throw new InvalidInputError(`${ctx.label}: ${t.name} is ${v}; alpha must be finite`);
    const alpha = v === 0 ? dim : v;
    return { scale: alpha / dim, alpha, dim };
  };
}

export async function parseLycoris(ctx: DetectContext): Promise<Detected> {
  const { groups, rest } = groupLycoris(ctx.file.header.tensors);
  const names = moduleNames(ctx.metadata);
  const family = kohyaFamily(ctx.file.header.tensors.map((t) => t.name));
  const c = { file: ctx.file, label: ctx.label };
  const specs: DerivedModuleSpec[] = [];
  const plainTensors: TensorInfo[] = [];
  const baseDependent: BaseDependentModule[] = [];
  const counts = new Map<string, number>();
  for (const [stem, g] of groups) {
    const algo = algoOf(g);
    if (typeof algo !== "string") throw new InvalidInputError(`${ctx.label}: module "${stem}" mixes LyCORIS algorithms (${algo.mixed.join(", ")})`);
    if (algo === "none" || algo === "plain") {
      plainTensors.push(...g.values());
      continue;
    }
    counts.set(algo, (counts.get(algo) ?? 0) + 1);
    const id = idOf(stem, names, family);
    if (algo === "ia3" || algo === "bias-only" || algo === "oft") {
      baseDependent.push({ name: stem, path: id.path, type: algo, tensors: [...g.values()], reason: BASE_REASON[algo] });
      continue;
    }
    const scaleOf = scaleReader(ctx, g);
    const spec =
      algo === "loha"
        ? lohaSpec(c, id, g, scaleOf)
        : algo === "lokr"
          ? lokrSpec(c, id, g, scaleOf)
          : algo === "locon-tucker"
            ? loconTuckerSpec(c, id, g, scaleOf)
            : fullSpec(c, id, g);
    const dora = g.get("dora_scale");
    if (dora) spec.extras = { ...spec.extras, dora_scale: dora };
    specs.push(spec);
  }
  const plain = await parseKohya(ctx.file, ctx.metadata, ctx.label, ctx.notes, plainTensors);
  const inferred = specs.filter((s) => s.kernel && !s.family.stored.some((t) => t.shape.length > 2)).length;
  const summary = [...counts].map(([k, v]) => `${v} ${k}`).join(", ");
  ctx.notes.push(`LyCORIS modules: ${summary}${plain.modules.length ? `, ${plain.modules.length} plain LoRA` : ""} (docs/formats.md "LyCORIS")`);
  if (inferred) ctx.notes.push(`${inferred} LyCORIS conv module(s) store flattened factors: kernel 3×3 taken from the module name`);
  if (baseDependent.length)
    ctx.notes.push(`${baseDependent.length} module(s) need the base model's weights for ΔW (${[...new Set(baseDependent.map((b) => b.type))].join(", ")})`);
  const parts = buildDerivedAdapterParts(ctx.file, specs, plain.modules, [...rest, ...plain.passthrough]);
  return {
    format: "kohya",
    modules: parts.modules,
    passthrough: parts.passthrough,
    file: parts.file,
    config: null,
    configSource: "kohya .alpha tensors (LyCORIS rules)",
    ...(baseDependent.length ? { baseDependent } : {}),
  };
}

export const lycorisDetector: Detector = {
  format: "kohya",
  claims: (names) => hasLycorisKeys(names),
  parse: parseLycoris,
};
