// PEFT's adapter_config.json semantics (peft/tuners/lora/config.py, utils/other.py):
// r and lora_alpha per module from rank_pattern / alpha_pattern, where the first key k for which
// re.match(rf"(.*\.)?({k})$", module_name) succeeds wins; scale = alpha/r, or alpha/√r with use_rslora.
import { InvalidInputError } from "../../common/errors.js";
import { regexEscape } from "./names.js";

export type PeftConfig = Record<string, unknown>;

function num(v: unknown, what: string, source: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    // JSON.parse reads a number past the float64 range (1e400) as ±Infinity, which JSON.stringify would print as null.
    const found = typeof v === "number" ? `${v} (a number beyond the float64 range, such as 1e400)` : JSON.stringify(v);
    throw new InvalidInputError(`${source}: ${what} must be a finite number, found ${found}`);
  }
  return v;
}

/** A boolean field (absent or null: false). Python's `if config.use_rslora:` takes any non-empty string or non-zero number as true, so such a value is refused rather than guessed. */
function flag(v: unknown, what: string, source: string): boolean {
  if (v === undefined || v === null || typeof v === "boolean") return v === true;
  // Python's truth: "" and 0 and empty lists or dicts are false, anything else true.
  const truthy = Array.isArray(v) ? v.length > 0 : typeof v === "object" ? Object.keys(v as object).length > 0 : !!v;
  throw new InvalidInputError(`${source}: ${what} must be true or false, found ${JSON.stringify(v)} (PEFT would take it as ${truthy ? "true" : "false"})`);
}

function compilePattern(key: string, source: string): RegExp {
  try {
    return new RegExp(`^(?:.*\\.)?(?:${key})$`);
  } catch {
    throw new InvalidInputError(`${source}: rank_pattern/alpha_pattern key is not a valid regular expression: ${JSON.stringify(key)}`);
  }
}

/** The value of the first pattern key matching the module name (PEFT's get_pattern_key), or undefined. */
export function patternLookup(pattern: unknown, moduleName: string, source: string): number | undefined {
  if (pattern === null || pattern === undefined) return undefined;
  if (typeof pattern !== "object" || Array.isArray(pattern)) {
    throw new InvalidInputError(`${source}: rank_pattern/alpha_pattern must be an object`);
  }
  for (const [key, value] of Object.entries(pattern as Record<string, unknown>)) {
    if (compilePattern(key, source).test(moduleName)) return num(value, `pattern value for "${key}"`, source);
  }
  return undefined;
}

export interface ModuleScale {
  rank: number;
  alpha: number;
  scale: number;
  rslora: boolean;
}

export function scaleFor(alpha: number, rank: number, rslora: boolean): number {
  if (rank <= 0) return 0;
  return rslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/** alpha that gives the wanted scale at this rank (inverse of scaleFor). */
export function alphaForScale(scale: number, rank: number, rslora: boolean): number {
  return rslora ? scale * Math.sqrt(rank) : scale * rank;
}

/** r, alpha and scale of one module under PEFT's rules. */
export function peftModuleScale(config: PeftConfig, moduleName: string, source: string): ModuleScale {
  const r = patternLookup(config["rank_pattern"], moduleName, source) ?? num(config["r"] ?? 8, "r", source);
  const alpha = patternLookup(config["alpha_pattern"], moduleName, source) ?? num(config["lora_alpha"] ?? 8, "lora_alpha", source);
  const rslora = flag(config["use_rslora"], "use_rslora", source);
  return { rank: r, alpha, scale: scaleFor(alpha, r, rslora), rslora };
}

export interface PeftModuleOut {
  path: string;
  rank: number;
  alpha: number;
}

/**
 * r, lora_alpha, rank_pattern and alpha_pattern for a set of output modules: the most common
 * rank (ties: the smaller) becomes r, the most common alpha among those modules lora_alpha, and
 * every module that differs gets one fully qualified, regex-escaped key (docs/formats.md "What each writer produces").
 */
export function peftPatterns(mods: PeftModuleOut[]): {
  r: number;
  lora_alpha: number;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
} {
  const mostCommon = (xs: number[]): number => {
    const counts = new Map<number, number>();
    for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
    let best = xs[0] ?? 8,
      bestN = -1;
    for (const [x, n] of [...counts].sort((a, b) => a[0] - b[0]))
      if (n > bestN) {
        best = x;
        bestN = n;
      }
    return best;
  };
  const r = mostCommon(mods.map((m) => m.rank));
  const withR = mods.filter((m) => m.rank === r);
  const lora_alpha = mostCommon((withR.length ? withR : mods).map((m) => m.alpha));
  const rank_pattern: Record<string, number> = {};
  const alpha_pattern: Record<string, number> = {};
  for (const m of [...mods].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    if (m.rank !== r) rank_pattern[regexEscape(m.path)] = m.rank;
    if (m.alpha !== lora_alpha) alpha_pattern[regexEscape(m.path)] = m.alpha;
  }
  return { r, lora_alpha, rank_pattern, alpha_pattern };
}
