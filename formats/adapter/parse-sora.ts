// SoRA checkpoints (docs/algorithms.md §4.1; docs/formats.md "SoRA checkpoints"; TsinghuaC3I/SoRA src/lora.py): OpenDelta parallel modules
// under the attribute `lora`, so a module's tensors are `<linear>.lora.lora_A` [r, in],
// `<linear>.lora.lora_B` [out, r] and `<linear>.lora.gate` [1, r], with any prefix (the HF Trainer
// saves the backbone and the classifier head in the same file: those are passthrough). Also a
// PEFT-layout adapter carrying one gate per module (`<module>.lora_gate`, `.lora_gate.weight` or
// `.gate` beside `<module>.lora_A.weight`). ΔW = s·B·diag(g)·A with s = lora_alpha / r_max; a file
// without a config gets SoRA's own default lora_alpha = 16 (prune --lora-alpha overrides it).
import { InvalidInputError } from "../../common/errors.js";
import { elementCount, type TensorInfo } from "../safetensors/index.js";
import { registerDetector } from "./detect.js";
import type { DetectContext, Detected, Detector } from "./detector.js";
import { buildModule, groupByRole } from "./module.js";
import { matchKeyFor, stripPeftPrefix } from "./names.js";
import { groupPeftKeys } from "./parse-peft.js";
import { peftModuleScale, scaleFor } from "./peft-config.js";
import type { LoraModule } from "./types.js";

/** SoRA's own default (LowRankLinear(r=8, lora_alpha=16), config/lora_config.json). */
export const SORA_DEFAULT_ALPHA = 16;

const NATIVE: [suffix: string, role: "A" | "B" | "gate"][] = [
  [".lora.lora_A", "A"],
  [".lora.lora_B", "B"],
  [".lora.gate", "gate"],
];

/** Gate tensor names accepted beside PEFT-layout factors. */
const PEFT_GATE_SUFFIXES = [".lora_gate.weight", ".lora_gate", ".gate"];

export function hasNativeSoraKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(".lora.lora_A"));
}

/** PEFT-layout gate tensors: name → module base (the key without .lora_A.weight). */
function peftGates(names: string[]): Map<string, string> {
  const bases = new Set<string>();
  for (const n of names) if (n.endsWith(".lora_A.weight")) bases.add(n.slice(0, -".lora_A.weight".length));
  const gates = new Map<string, string>();
  if (bases.size === 0) return gates;
  for (const n of names) {
    for (const s of PEFT_GATE_SUFFIXES) {
      if (n.endsWith(s) && bases.has(n.slice(0, -s.length))) {
        gates.set(n, n.slice(0, -s.length));
        break;
      }
    }
  }
  return gates;
}

function checkGate(gate: TensorInfo, mod: LoraModule, label: string): void {
  if (!["F64", "F32", "F16", "BF16"].includes(gate.dtype)) {
    throw new InvalidInputError(`${label}: SoRA gate ${gate.name} has dtype ${gate.dtype}; gates must be floating point`);
  }
  const n = elementCount(gate.shape);
  const shapeOk = (gate.shape.length === 2 && gate.shape[0] === 1) || gate.shape.length === 1;
  if (!shapeOk || n !== mod.rank) {
    throw new InvalidInputError(
      `${label}: SoRA gate ${gate.name} has shape [${gate.shape.join(", ")}]; module "${mod.name}" has rank ${mod.rank}, so the gate must be [1, ${mod.rank}]`,
    );
  }
}

/** Scale rule for one module: the config's when it names lora_alpha, else SoRA's default alpha / r_max. */
function applyScale(mod: LoraModule, ctx: DetectContext): boolean {
  const cfg = ctx.config;
  if (cfg && (cfg["lora_alpha"] !== undefined || cfg["alpha_pattern"] !== undefined)) {
    const sc = peftModuleScale({ ...cfg, r: mod.rank, rank_pattern: {} }, mod.path, ctx.label);
    Object.assign(mod, { alpha: sc.alpha, scale: sc.scale, rslora: sc.rslora });
    return true;
  }
  Object.assign(mod, { alpha: SORA_DEFAULT_ALPHA, scale: scaleFor(SORA_DEFAULT_ALPHA, mod.rank, false), rslora: false });
  return false;
}

async function parseNative(ctx: DetectContext): Promise<Detected> {
  const { groups, rest } = groupByRole(ctx.file.header.tensors, NATIVE);
  const modules: LoraModule[] = [];
  let fromConfig = false,
    ungated = 0;
  for (const [base, g] of groups) {
    if (!g.A || !g.B) {
      const have = g.A ?? g.B ?? g.gate!;
      throw new InvalidInputError(`${ctx.label}: SoRA module "${base}" lacks its ${!g.A ? "lora.lora_A" : "lora.lora_B"} tensor (found ${have.name})`);
    }
    const path = stripPeftPrefix(base);
    const extras: Record<string, TensorInfo> = {};
    if (g.gate) extras["gate"] = g.gate;
    else ungated++;
    const mod = buildModule({ A: g.A, B: g.B, extras }, { name: path, path, matchKey: matchKeyFor(path), label: ctx.label });
    if (g.gate) checkGate(g.gate, mod, ctx.label);
    fromConfig = applyScale(mod, ctx) || fromConfig;
    modules.push(mod);
  }
  if (ungated) ctx.notes.push(`${ungated} SoRA module(s) without a gate tensor: read as plain LoRA (every rank kept)`);
  if (!fromConfig)
    ctx.notes.push(
      `SoRA checkpoint without a config: lora_alpha = ${SORA_DEFAULT_ALPHA} (SoRA's default), scale = ${SORA_DEFAULT_ALPHA}/r_max (prune --lora-alpha changes it)`,
    );
  if (rest.length) ctx.notes.push(`${rest.length} other tensor(s) (backbone, classifier, …) are not part of the adapter (prune --keep-other carries them)`);
  return {
    format: "sora",
    modules,
    passthrough: rest,
    config: ctx.config,
    configSource: fromConfig ? ctx.configSource : `SoRA default lora_alpha ${SORA_DEFAULT_ALPHA}`,
  };
}

async function parsePeftGated(ctx: DetectContext): Promise<Detected> {
  const gates = peftGates(ctx.file.header.tensors.map((t) => t.name));
  const byBase = new Map<string, TensorInfo>();
  for (const t of ctx.file.header.tensors) {
    const base = gates.get(t.name);
    if (base === undefined) continue;
    if (byBase.has(base)) throw new InvalidInputError(`${ctx.label}: module "${base}" has two gate tensors (${byBase.get(base)!.name}, ${t.name})`);
    byBase.set(base, t);
  }
  const cfg = ctx.config;
  if (cfg && cfg["peft_type"] !== undefined && cfg["peft_type"] !== "LORA") {
    throw new InvalidInputError(`${ctx.label}: peft_type ${JSON.stringify(cfg["peft_type"])} is not supported (only LORA adapters)`);
  }
  const { groups, rest } = groupPeftKeys(
    ctx.file.header.tensors.filter((t) => !gates.has(t.name)),
    ctx.label,
  );
  const modules: LoraModule[] = [];
  let fromConfig = false;
  for (const [base, parts] of groups) {
    const path = stripPeftPrefix(base);
    const gate = byBase.get(base);
    if (gate) parts.extras["gate"] = gate;
    const mod = buildModule(parts, { name: path, path, matchKey: matchKeyFor(path), label: ctx.label });
    if (gate) checkGate(gate, mod, ctx.label);
    if (cfg && cfg["r"] !== undefined) {
      const sc = peftModuleScale(cfg, path, ctx.label);
      if (sc.rank !== mod.rank)
        throw new InvalidInputError(`${ctx.label}: config says rank ${sc.rank} for module "${path}" but its tensors have rank ${mod.rank}`);
    }
    fromConfig = applyScale(mod, ctx) || fromConfig;
    modules.push(mod);
  }
  if (!fromConfig)
    ctx.notes.push(`gated adapter without lora_alpha in a config: lora_alpha = ${SORA_DEFAULT_ALPHA} (SoRA's default) assumed (prune --lora-alpha changes it)`);
  return {
    format: "sora",
    modules,
    passthrough: rest,
    config: cfg,
    configSource: fromConfig ? ctx.configSource : `SoRA default lora_alpha ${SORA_DEFAULT_ALPHA}`,
  };
}

export const soraDetector: Detector = {
  format: "sora",
  claims: (names) => hasNativeSoraKeys(names) || peftGates(names).size > 0,
  parse: (ctx) => (hasNativeSoraKeys(ctx.file.header.tensors.map((t) => t.name)) ? parseNative(ctx) : parsePeftGated(ctx)),
};

let registered = false;
/** Put the SoRA detector in front of the generic ones (idempotent). */
export function registerSoraDetector(): void {
  if (registered) return;
  registered = true;
  registerDetector(soraDetector);
}

registerSoraDetector();
