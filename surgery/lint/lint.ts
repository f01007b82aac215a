// lora lint: read an adapter leniently (key by key, never stopping at the first problem) and report
// every rule of rules.ts it breaks. The lenient view groups keys by the PEFT and kohya suffix tables
// the readers use; module shapes go through the readers' own buildModule, PEFT's config semantics
// through peft-config.ts, so lint and the readers cannot disagree on what a file means.
import {
  buildModule,
  KOHYA_ROLES,
  loadAdapter,
  type Adapter,
  kohyaStemFor,
  openAdapterSource,
  stripPeftPrefix,
  PEFT_ROLES,
  patternLookup,
  peftModuleScale,
  readAdapterConfig,
  type AdapterSource,
  type LoraModule,
  type ModuleParts,
  type PeftConfig,
} from "../../formats/adapter/index.js";
import { InvalidInputError, LoraError } from "../../common/errors.js";
import { allZeroFloats, decodeToFloat64, dtypeBits, firstNonFinite, isFloatDType } from "../../common/dtype.js";
import { growingBuffer } from "../../common/buffer-pool.js";
import type { TensorInfo } from "../../formats/safetensors/index.js";
import { RULES, type Loader, type Rule, type Severity } from "./rules.js";

export interface Finding {
  rule: string;
  severity: Severity;
  /** The module (as the file names it), or null for a file-level finding. */
  module: string | null;
  loader: Loader;
  message: string;
}

export interface LintReport {
  path: string;
  /** "peft", "kohya" or "diffusers" when the keys say so, else null. */
  format: string | null;
  modules: number;
  findings: Finding[];
  errors: number;
  warnings: number;
}

type Family = "peft" | "kohya";

interface Group {
  stem: string;
  family: Family;
  parts: ModuleParts;
  module?: LoraModule;
}

const DIFFUSERS_COMPONENTS = /^(unet|text_encoder(_2|_3)?|transformer)\./;

/** Group tensors into modules by the readers' suffix tables (PEFT first, then kohya). */
function groupKeys(tensors: TensorInfo[]): Group[] {
  const groups = new Map<string, Group>();
  const tables: [Family, readonly (readonly [string, string])[]][] = [
    ["peft", PEFT_ROLES],
    ["kohya", KOHYA_ROLES],
  ];
  for (const t of tensors) {
    for (const [family, roles] of tables) {
      const hit = roles.find(([suffix]) => t.name.endsWith(suffix));
      if (!hit) continue;
      const stem = t.name.slice(0, -hit[0].length);
      const g = groups.get(`${family}:${stem}`) ?? { stem, family, parts: { extras: {} } };
      const role = hit[1];
      if (role === "A" || role === "embA") {
        g.parts.A = t;
        if (role === "embA") g.parts.embedding = true;
      } else if (role === "B" || role === "embB") {
        g.parts.B = t;
        if (role === "embB") g.parts.embedding = true;
      } else if (role === "alpha") g.parts.alpha = t;
      else g.parts.extras[role] = t;
      groups.set(`${family}:${stem}`, g);
      break;
    }
  }
  return [...groups.values()];
}

/** PEFT's check_target_module_exists (peft/tuners/tuners_utils.py): full regex match for a string, else exact or ".name" suffix. */
function targetMatches(targets: unknown, key: string): boolean {
  if (typeof targets === "string") {
    if (targets === "all-linear") return true;
    try {
      return new RegExp(`^(?:${targets})$`).test(key);
    } catch {
      return false;
    }
  }
  if (Array.isArray(targets)) return targets.some((t) => typeof t === "string" && (key === t || key.endsWith(`.${t}`)));
  return false;
}

/**
 * Whether PEFT's layers_to_transform keeps the module at `key` (PEFT's check_target_module_exists,
 * applied to target_modules lists): the layer index is the number after the first `.<name>.` (or
 * `.<layers_pattern>.`) segment; a key without one is not kept.
 */
function layerSelected(config: PeftConfig, key: string): boolean {
  const which = config["layers_to_transform"];
  if (which === undefined || which === null || (Array.isArray(which) && which.length === 0)) return true;
  const raw = config["layers_pattern"] as string | string[] | null | undefined;
  const patterns: (string | null)[] = raw === undefined || raw === null || raw.length === 0 ? [null] : typeof raw === "string" ? [raw] : raw;
  let index: number | null = null;
  for (const p of patterns) {
    let m: RegExpExecArray | null = null;
    try {
      m = new RegExp(p === null ? "^.*?\\.[^.]*\\.(\\d+)\\." : `^.*?\\.${p}\\.(\\d+)\\.`).exec(key);
    } catch {
      return true; // an invalid pattern: not this rule's finding
    }
    if (m) {
      index = Number(m[1]);
      break;
    }
  }
  if (index === null) return false;
  return typeof which === "number" ? index === which : Array.isArray(which) && which.includes(index);
}

class Findings {
  readonly list: Finding[] = [];
  add(rule: Rule, module: string | null, message: string): void {
    this.list.push({ rule: rule.id, severity: rule.severity, module, loader: rule.loader, message });
  }
}

function allZero(x: Float64Array): boolean {
  for (let i = 0; i < x.length; i++) if (x[i] !== 0) return false;
  return true;
}

/**
 * NaN/±Inf (its index and value) or all zeros in a factor: float factors from their stored bytes
 * (exponent and value bits tested, nothing decoded; read into one reused buffer); others decoded,
 * which refuses an undecodable dtype, and integers are always finite.
 */
async function factorValues(src: AdapterSource, t: TensorInfo, take: (n: number) => Uint8Array): Promise<{ bad: number; value: number; zero: boolean }> {
  if (isFloatDType(t.dtype)) {
    const bytes = await src.file.readRawShared(t, take);
    const bad = firstNonFinite(t.dtype, bytes);
    if (bad >= 0) {
      const size = dtypeBits(t.dtype) / 8;
      return { bad, value: decodeToFloat64(t.dtype, bytes.subarray(bad * size, (bad + 1) * size))[0]!, zero: false };
    }
    return { bad: -1, value: 0, zero: allZeroFloats(t.dtype, bytes) };
  }
  return { bad: -1, value: 0, zero: allZero(await src.file.readFloat64(t)) };
}

/** Shapes, dtypes and values of every module. */
/** A module as every finding names it: its path in the model (PEFT's base_model.model. prefix dropped; kohya stems as they are). */
function moduleName(g: Group): string {
  return stripPeftPrefix(g.stem);
}

async function checkModules(src: AdapterSource, groups: Group[], f: Findings): Promise<void> {
  const take = growingBuffer();
  for (const g of groups) {
    const { A, B } = g.parts;
    if (!A && !B) continue;
    if (!A || !B) {
      const have = (A ?? B)!.name;
      f.add(
        RULES.unpaired,
        moduleName(g),
        `${have} has no ${g.family === "peft" ? (A ? "lora_B" : "lora_A") : A ? "lora_up" : "lora_down"} partner; loaders reject or skip the module`,
      );
      continue;
    }
    try {
      g.module = buildModule(g.parts, { name: g.stem, path: g.stem, matchKey: g.stem, label: src.label });
    } catch (e) {
      if (!(e instanceof InvalidInputError)) throw e;
      f.add(/dtype/.test(e.message) ? RULES.factorDtype : RULES.rankMismatch, moduleName(g), e.message);
      continue;
    }
    for (const t of [A, B]) {
      const { bad, value, zero } = await factorValues(src, t, take);
      if (bad >= 0) f.add(RULES.nonFinite, moduleName(g), `${t.name} holds ${value} at element ${bad}`);
      else if (zero)
        f.add(RULES.zeroModule, moduleName(g), `${t.name} is all zeros, so ΔW = 0${t === B ? " (an untrained PEFT initialisation leaves B = 0)" : ""}`);
    }
  }
  const dtypes = new Set(groups.flatMap((g) => [g.parts.A?.dtype, g.parts.B?.dtype]).filter((d) => d !== undefined));
  if (dtypes.size > 1) f.add(RULES.mixedDtypes, null, `factors in ${[...dtypes].sort().join(", ")}; loaders cast them to the model's dtype one by one`);
}

function checkPeft(config: PeftConfig | null, configProblem: string | null, groups: Group[], f: Findings, label: string): void {
  const mods = groups.filter((g) => g.module).map((g) => ({ g, path: moduleName(g) }));
  if (!config) {
    f.add(RULES.peftNoConfig, null, configProblem ?? "no adapter_config.json beside the weights (nor adapter_config in the file's metadata)");
    return;
  }
  const targets = config["target_modules"];
  if (targets === undefined || targets === null || (Array.isArray(targets) && targets.length === 0)) {
    f.add(RULES.peftNoTargets, null, "adapter_config.json has no target_modules");
  }
  for (const { g, path } of mods) {
    try {
      const sc = peftModuleScale(config, path, label);
      if (sc.rank !== g.module!.rank) f.add(RULES.peftRank, path, `config gives rank ${sc.rank}, the tensors have rank ${g.module!.rank}`);
    } catch (e) {
      if (!(e instanceof LoraError)) throw e;
      f.add(RULES.peftRank, path, e.message);
    }
    if (targets !== undefined && targets !== null && !targetMatches(targets, path))
      f.add(RULES.peftTarget, path, `"${path}" is not matched by target_modules ${JSON.stringify(targets)}`);
    else if (Array.isArray(targets) && !targets.includes(path) && !layerSelected(config, path))
      f.add(
        RULES.peftTarget,
        path,
        `"${path}" is outside layers_to_transform ${JSON.stringify(config["layers_to_transform"])}${config["layers_pattern"] ? ` (layers_pattern ${JSON.stringify(config["layers_pattern"])})` : ""}`,
      );
    const excl = config["exclude_modules"];
    if (excl !== undefined && excl !== null && targetMatches(excl, path))
      f.add(RULES.peftTarget, path, `"${path}" is excluded by exclude_modules ${JSON.stringify(excl)}`);
  }
  for (const which of ["rank_pattern", "alpha_pattern"] as const) {
    const pat = config[which];
    if (!pat || typeof pat !== "object" || Array.isArray(pat)) continue;
    for (const key of Object.keys(pat)) {
      let used = false;
      try {
        used = mods.some(({ path }) => patternLookup({ [key]: 1 }, path, label) !== undefined);
      } catch {
        /* an invalid regex: peft-config-rank reports it */
      }
      if (!used) f.add(RULES.peftPattern, null, `${which} key ${JSON.stringify(key)} matches no module`);
    }
  }
  const bias = mods.filter(({ g }) => "lora_B.bias" in g.parts.extras);
  if (bias.length && config["lora_bias"] !== true)
    f.add(RULES.peftBias, bias[0]!.path, `${bias.length} module(s) have lora_B.bias but the config does not set lora_bias: true`);
  const dora = config["use_dora"] === true;
  for (const { g, path } of mods) {
    const mag = g.parts.extras["lora_magnitude_vector"];
    if (mag && !dora) f.add(RULES.peftDora, path, "a lora_magnitude_vector without use_dora: true in the config (PEFT ignores it: plain LoRA, a different ΔW)");
    if (!mag && dora) f.add(RULES.peftDora, path, "use_dora is true but the module has no lora_magnitude_vector");
    if (mag) {
      const n = mag.shape.reduce((x, y) => x * y, 1);
      if (n !== g.module!.out) f.add(RULES.doraShape, path, `lora_magnitude_vector has ${n} entries, the layer ${g.module!.out} output features`);
    }
  }
}

async function checkKohya(src: AdapterSource, groups: Group[], f: Findings): Promise<void> {
  const mods = groups.filter((g) => g.module);
  // sd-scripts sizes 3×3 conv modules by conv_dim/conv_alpha (ss_network_args), the rest by
  // ss_network_dim/alpha (docs/formats.md "kohya metadata"): those are checked against the rest.
  const kernelConv = (g: Group) => {
    const s = g.module!.A.shape;
    return s.length === 4 && s[2]! * s[3]! > 1;
  };
  const sized = mods.some((g) => !kernelConv(g)) ? mods.filter((g) => !kernelConv(g)) : mods;
  const sizedSet = new Set(sized);
  const alphas: number[] = [];
  for (const g of mods) {
    if (!g.parts.alpha) {
      f.add(RULES.kohyaNoAlpha, g.stem, "no .alpha tensor: alpha = rank is assumed (scale 1)");
      continue;
    }
    const a = (await src.file.readFloat64(g.parts.alpha))[0]!;
    if (!Number.isFinite(a)) f.add(RULES.nonFinite, g.stem, `${g.parts.alpha.name} is ${a}`);
    else if (sizedSet.has(g)) alphas.push(a);
  }
  const meta = src.file.header.metadata ?? {};
  const dim = Number(meta["ss_network_dim"]);
  if (meta["ss_network_dim"] !== undefined && Number.isFinite(dim)) {
    const ranks = new Set(sized.map((g) => g.module!.rank));
    if (ranks.size > 0 && Math.max(...ranks) !== dim)
      f.add(RULES.kohyaDim, null, `ss_network_dim is ${dim} but the factor ranks are ${[...ranks].sort((a, b) => a - b).join(", ")}`);
  }
  const alpha = Number(meta["ss_network_alpha"]);
  if (meta["ss_network_alpha"] !== undefined && Number.isFinite(alpha) && alphas.some((a) => Math.abs(a - alpha) > 1e-3 * Math.max(1, Math.abs(alpha)))) {
    f.add(
      RULES.kohyaAlpha,
      null,
      `ss_network_alpha is ${alpha} but the .alpha tensors hold ${[...new Set(alphas)]
        .sort((a, b) => a - b)
        .slice(0, 5)
        .join(", ")}`,
    );
  }
}

/** Two module paths that become the same kohya stem (a conversion to kohya would lose one). */
function checkCollisions(groups: Group[], f: Findings): void {
  const seen = new Map<string, string>();
  for (const g of groups) {
    if (!g.module || g.family !== "peft") continue;
    const path = moduleName(g);
    const stem = kohyaStemFor(path);
    const other = seen.get(stem);
    if (other !== undefined) f.add(RULES.kohyaCollision, path, `"${path}" and "${other}" both become ${stem}`);
    else seen.set(stem, path);
  }
}

/** A file the readers refuse must not pass: their refusal is a finding when no rule explained it. */
async function readersAgree(arg: string, opts: { stdin?: NodeJS.ReadableStream }, f: Findings): Promise<void> {
  if (arg === "-") return; // standard input cannot be read twice
  try {
    const a = await loadAdapter(arg, opts);
    await a.file.close();
  } catch (e) {
    if (!(e instanceof InvalidInputError)) throw e;
    f.add(RULES.unreadable, null, e.message);
  }
}

/**
 * Files without PEFT/kohya factor keys (diffusers' attention-processor layout, …): lint what the
 * readers make of them (values of each module), or report why they refuse.
 */
async function readerView(arg: string, src: AdapterSource, f: Findings, report: (format: string | null, modules: number) => LintReport): Promise<LintReport> {
  let a: Adapter;
  try {
    a = await loadAdapter(arg);
  } catch (e) {
    if (!(e instanceof InvalidInputError)) throw e;
    f.add(/not a LoRA adapter/.test(e.message) ? RULES.notLora : RULES.unreadable, null, e.message);
    return report(null, 0);
  }
  try {
    const groups: Group[] = a.modules.map((m) => ({ stem: m.name, family: "peft", parts: { A: m.A, B: m.B, extras: m.extras } }));
    // The adapter's own file: for a derived one (AdaLoRA, LoHa, …) the factors are computed, not stored.
    await checkModules({ ...src, file: a.file }, groups, f);
    if (a.format === "diffusers") {
      const bare = a.modules.filter((m) => !DIFFUSERS_COMPONENTS.test(m.A.name));
      if (bare.length)
        f.add(
          RULES.diffusersPrefix,
          bare[0]!.name,
          `${bare.length} of ${a.modules.length} modules have keys without a component prefix (e.g. ${bare[0]!.A.name}); diffusers ≥ 0.33 loads none of them (lora convert --to diffusers writes prefixed keys)`,
        );
    }
    return report(a.format, a.modules.length);
  } finally {
    await a.file.close();
  }
}

/** Lint one adapter argument. I/O failures (no such file) are thrown; everything about the content is a finding. */
export async function lintAdapter(arg: string, opts: { stdin?: NodeJS.ReadableStream } = {}): Promise<LintReport> {
  const f = new Findings();
  const report = (format: string | null, modules: number): LintReport => ({
    path: arg,
    format,
    modules,
    findings: f.list,
    errors: f.list.filter((x) => x.severity === "error").length,
    warnings: f.list.filter((x) => x.severity === "warning").length,
  });
  let src: AdapterSource;
  try {
    src = await openAdapterSource(arg, opts);
  } catch (e) {
    if (!(e instanceof InvalidInputError)) throw e;
    f.add(RULES.safetensors, null, e.message);
    return report(null, 0);
  }
  try {
    let config: PeftConfig | null = null,
      configProblem: string | null = null;
    try {
      config = (await readAdapterConfig(src)).config;
    } catch (e) {
      if (!(e instanceof InvalidInputError)) throw e;
      configProblem = e.message;
    }
    const groups = groupKeys(src.file.header.tensors);
    if (!groups.some((g) => g.parts.A || g.parts.B)) return await readerView(arg, src, f, report);
    await checkModules(src, groups, f);
    const peft = groups.filter((g) => g.family === "peft");
    const kohya = groups.filter((g) => g.family === "kohya");
    const diffusers = peft.length > 0 && !config && peft.every((g) => DIFFUSERS_COMPONENTS.test(g.stem));
    if (peft.length && !diffusers) checkPeft(config, configProblem, peft, f, src.label);
    if (kohya.length) await checkKohya(src, kohya, f);
    checkCollisions(peft, f);
    const format = kohya.length >= peft.length ? "kohya" : diffusers ? "diffusers" : "peft";
    if (f.list.every((x) => x.severity !== "error")) await readersAgree(arg, opts, f);
    return report(format, groups.filter((g) => g.module).length);
  } finally {
    await src.file.close();
  }
}
