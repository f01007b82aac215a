// kohya sd-scripts / LyCORIS LoRA layout (docs/formats.md "kohya"): <stem>.lora_down.weight [r,in(,kh,kw)],
// <stem>.lora_up.weight [out,r(,1,1)], <stem>.alpha (0-d, any float dtype). scale = alpha/r, with
// alpha missing or 0 ⇒ alpha = r (networks/lora.py). Our own writer keeps the dotted module paths in
// __metadata__["lora_module_names"] so a conversion back restores them.
import { InvalidInputError } from "../../common/errors.js";
import type { SafetensorsFile, TensorInfo } from "../safetensors/index.js";
import { buildModule, groupByRole, partsOf } from "./module.js";
import { kohyaPrefixOf } from "./names.js";
import { kohyaFamily, kohyaModuleId } from "./name-map.js";
import type { LoraModule } from "./types.js";
import { KOHYA_ROLES } from "./kohya-keys.js";

function jsonMap(meta: Record<string, string>, key: string, label: string): Record<string, string> {
  const raw = meta[key];
  if (raw === undefined) return {};
  try {
    const v = JSON.parse(raw) as unknown;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string")) return v as Record<string, string>;
  } catch {
    /* fall through */
  }
  throw new InvalidInputError(`${label}: metadata "${key}" is not a JSON object of strings`);
}

export async function parseKohya(
  file: SafetensorsFile,
  meta: Record<string, string>,
  label: string,
  notes: string[],
  /** The tensors to read (default: all of the file's; the LyCORIS reader passes its plain modules'). */
  tensors: readonly TensorInfo[] = file.header.tensors,
): Promise<{ modules: LoraModule[]; passthrough: TensorInfo[] }> {
  const names = jsonMap(meta, "lora_module_names", label);
  const kinds = jsonMap(meta, "lora_module_kinds", label);
  const { groups: found, rest } = groupByRole(tensors, KOHYA_ROLES);
  const groups = new Map([...found].map(([stem, roles]) => [stem, partsOf(roles)]));
  const modules: LoraModule[] = [];
  let defaulted = 0;
  const family = kohyaFamily(file.header.tensors.map((t) => t.name));
  const unmapped: string[] = [];
  for (const [stem, g] of groups) {
    if (!g.A && !g.B) {
      rest.push(...(g.alpha ? [g.alpha] : []), ...Object.values(g.extras));
      continue;
    }
    if (!g.A || !g.B)
      throw new InvalidInputError(
        `${label}: module "${stem}" has ${g.A ? "lora_down" : "lora_up"} but no ${g.A ? "lora_up" : "lora_down"} tensor (${(g.A ?? g.B)!.name})`,
      );
    if (kinds[stem] === "embedding") g.embedding = true;
    const { path, matchKey, mapped } = kohyaModuleId(stem, family, names);
    if (!mapped) unmapped.push(stem);
    const prefix = kohyaPrefixOf(stem);
    const mod = buildModule(g, { name: stem, path, matchKey, label, ...(prefix !== undefined ? { kohyaStem: prefix } : {}) });
    let alpha = mod.rank;
    if (g.alpha) {
      if (g.alpha.shape.reduce((x, y) => x * y, 1) !== 1)
        throw new InvalidInputError(`${label}: ${g.alpha.name} must hold one value, has shape [${g.alpha.shape}]`);
      const v = (await file.readFloat64(g.alpha))[0]!;
      if (!Number.isFinite(v)) throw new InvalidInputError(`${label}: ${g.alpha.name} is ${v}; alpha must be finite`);
      if (v !== 0) alpha = v;
      else defaulted++;
    } else defaulted++;
    Object.assign(mod, { alpha, scale: alpha / mod.rank });
    modules.push(mod);
  }
  if (unmapped.length) notes.push(unmappedNote(unmapped, family));
  if (defaulted) notes.push(`${defaulted} module(s) without alpha (or alpha 0): alpha = rank, scale 1 (kohya's rule)`);
  return { modules, passthrough: rest };
}

/** What inspect says about kohya stems the naming maps do not cover (a conversion refuses them). */
export function unmappedNote(stems: string[], family: string): string {
  const shown = stems.slice(0, 3).join(", ") + (stems.length > 3 ? ` and ${stems.length - 3} more` : "");
  return `${stems.length} module(s) no ${family} naming map covers (${shown}): names kept as kohya stems; --to peft/diffusers refuses them`;
}
