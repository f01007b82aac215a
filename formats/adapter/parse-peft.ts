// PEFT key layout (docs/formats.md "PEFT"): base_model.model.<module>.lora_A.weight / lora_B.weight,
// lora_embedding_A / lora_embedding_B (no .weight), lora_magnitude_vector (DoRA), lora_B.bias,
// plus LoRAPrune's lora_mask. Every other tensor is passthrough.
import { InvalidInputError } from "../../common/errors.js";
import type { TensorInfo } from "../safetensors/index.js";
import { matchKeyFor, stripPeftPrefix } from "./names.js";
import { peftModuleScale, type PeftConfig } from "./peft-config.js";
import { buildModule, groupByRole, partsOf, type ModuleParts } from "./module.js";
import type { LoraModule } from "./types.js";

/** PEFT key suffixes and the role each plays in a module. */
export const PEFT_ROLES: [suffix: string, role: keyof ModuleParts | string][] = [
  [".lora_A.weight", "A"],
  [".lora_B.weight", "B"],
  [".lora_embedding_A", "embA"],
  [".lora_embedding_B", "embB"],
  [".lora_magnitude_vector", "lora_magnitude_vector"],
  [".lora_B.bias", "lora_B.bias"],
  [".lora_mask", "lora_mask"],
];

export function hasPeftKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(".lora_A.weight") || n.endsWith(".lora_B.weight") || n.endsWith(".lora_embedding_A") || n.endsWith(".lora_embedding_B"));
}

/** Group PEFT-style keys into modules; stripPrefix removes base_model.model. when present. */
export function groupPeftKeys(tensors: TensorInfo[], label: string): { groups: Map<string, ModuleParts>; rest: TensorInfo[] } {
  const found = groupByRole(tensors, PEFT_ROLES);
  const rest = found.rest;
  const groups = new Map([...found.groups].map(([base, roles]) => [base, partsOf(roles)]));
  // Extras without factors (e.g. a lone lora_mask) are not modules: an up without its down is an error.
  for (const [base, g] of groups) {
    if (!g.A && !g.B) {
      rest.push(...Object.values(g.extras));
      groups.delete(base);
      continue;
    }
    if (!g.A || !g.B) {
      throw new InvalidInputError(
        `${label}: module "${base}" has ${g.A ? "lora_A" : "lora_B"} but no ${g.A ? "lora_B" : "lora_A"} tensor (${(g.A ?? g.B)!.name})`,
      );
    }
  }
  return { groups, rest };
}

export function parsePeft(
  tensors: TensorInfo[],
  config: PeftConfig | null,
  label: string,
  notes: string[],
): { modules: LoraModule[]; passthrough: TensorInfo[] } {
  if (config) {
    const pt = config["peft_type"];
    if (pt !== undefined && pt !== "LORA") {
      throw new InvalidInputError(`${label}: peft_type ${JSON.stringify(pt)} is not supported (only LORA adapters)`, {
        hint: "AdaLoRA, LoHa, LoKr, VeRA … files are not LoRA factor pairs",
      });
    }
  } else {
    notes.push("no adapter_config found: alpha = rank assumed for every module (scale 1)");
  }
  const { groups, rest } = groupPeftKeys(tensors, label);
  const modules: LoraModule[] = [];
  for (const [base, parts] of groups) {
    const path = stripPeftPrefix(base);
    const mod = buildModule(parts, { name: path, path, matchKey: matchKeyFor(path), label });
    if (config) {
      const sc = peftModuleScale(config, path, label);
      if (sc.rank !== mod.rank) {
        throw new InvalidInputError(`${label}: config says rank ${sc.rank} for module "${path}" but its tensors have rank ${mod.rank}`, {
          hint: "adapter_config.json (r / rank_pattern) contradicts the tensor shapes; PEFT would refuse to load it",
        });
      }
      Object.assign(mod, { alpha: sc.alpha, scale: sc.scale, rslora: sc.rslora });
    } else {
      Object.assign(mod, { alpha: mod.rank, scale: 1, rslora: false });
    }
    modules.push(mod);
  }
  return { modules, passthrough: rest };
}
