// Option parsers and the global options added to every command. Parsers throw commander's
// InvalidArgumentError so bad values are usage errors (exit 2).
import { type Command, InvalidArgumentError, Option } from "commander";
import type { GlobalOptions } from "./context.js";

/**
 * An integer ≥ min: digits, or an exact integer in exponent form (1e9, 2.5e3) as long as it is a
 * safe integer (|n| < 2⁵³), so that `--budget 1e9` means 10⁹.
 */
export function parseIntArg(name: string, min = 0) {
  return (v: string): number => {
    const t = v.trim();
    const n = Number(t);
    if (!(/^-?\d+$/.test(t) || /^-?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$/.test(t)) || !Number.isInteger(n))
      throw new InvalidArgumentError(`${name} must be an integer, got "${v}"`);
    if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} must be an integer below 2^53, got "${v}"`);
    if (n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got "${v}"`);
    return n + 0; // -0 → 0
  };
}

/** The range of parseFloatArg in words: infinite ends are left out (±Infinity is refused). */
function rangeText(lo: number, hi: number, openLo: boolean): string {
  const finiteLo = Number.isFinite(lo),
    finiteHi = Number.isFinite(hi);
  if (finiteLo && finiteHi) return `a number in ${openLo ? "(" : "["}${lo}, ${hi}]`;
  if (finiteLo) return `a finite number ${openLo ? ">" : "≥"} ${lo}`;
  if (finiteHi) return `a finite number ≤ ${hi}`;
  return "a finite number";
}

/** A finite number in [lo, hi] ((lo, hi] with openLo). */
export function parseFloatArg(name: string, lo = -Infinity, hi = Infinity, openLo = false) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < lo || n > hi || (openLo && n === lo)) {
      throw new InvalidArgumentError(`${name} must be ${rangeText(lo, hi, openLo)}, got "${v}"`);
    }
    return n;
  };
}

export function parseWeights(v: string): number[] {
  const parts = v.split(",").map((s) => s.trim());
  const ws = parts.map(Number);
  if (parts.some((p) => p === "") || ws.some((w) => !Number.isFinite(w)))
    throw new InvalidArgumentError(`--weights must be comma-separated numbers, got "${v}"`);
  return ws;
}

/** The help of an `[adapter...]` argument: the forms one adapter takes, then what several mean to the command. */
export const adaptersHelp = (several: string) => `PEFT directory, .safetensors or torch.save .bin/.pt file, or - for stdin; ${several}`;

/** --from-list <file>, repeatable: more adapters to `verb`, one path a line (`note` after that in the help). */
export function fromListOption(verb: string, note = ""): Option {
  return new Option("--from-list <file>", `also ${verb} the adapters listed in FILE, one path per line${note}`).argParser((v: string, prev: string[] = []) => [
    ...prev,
    v,
  ]);
}

/** The help heading of the options every command shares (docs/cli.md "Global options"). */
export const GLOBAL_HEADING = "Global options:";

/** Add the global options (docs/cli.md "Global options") to a command, so they work after the command name. */
export function withGlobalOptions(cmd: Command): Command {
  const opts = [
    new Option("--backend <name>", "linear-algebra backend").choices(["auto", "cpu", "cuda", "js"]).default("auto"),
    new Option("--json", "print one JSON document on stdout").default(false),
    new Option("-q, --quiet", "no progress or notes on stderr").default(false),
    new Option("--no-color", "disable colour"),
    new Option("--seed <n>", "random seed where randomness exists").argParser(parseIntArg("--seed", 0)).default(0),
    new Option("--force", "overwrite an existing output").default(false),
    new Option("--threads <n>", "threads for the native backend (default: all cores)").argParser(parseIntArg("--threads", 1)),
    new Option("-v, --verbose", "more detail on stderr").default(false),
    new Option("--header", "a header row on tab-separated (piped) output").default(false),
  ];
  for (const o of opts) cmd.addOption(o.helpGroup(GLOBAL_HEADING));
  return cmd;
}

/** List the global options after the command's own (in --help and completion), under their own heading. */
export function globalOptionsLast(cmd: Command): Command {
  const all = cmd.options as Option[];
  const own = all.filter((o) => o.helpGroupHeading !== GLOBAL_HEADING);
  const shared = all.filter((o) => o.helpGroupHeading === GLOBAL_HEADING);
  all.splice(0, all.length, ...own, ...shared);
  return cmd;
}

export function globals(o: Record<string, unknown>): GlobalOptions {
  return {
    backend: (o["backend"] as GlobalOptions["backend"]) ?? "auto",
    json: !!o["json"],
    quiet: !!o["quiet"],
    color: o["color"] !== false,
    seed: (o["seed"] as number) ?? 0,
    force: !!o["force"],
    ...(o["threads"] !== undefined ? { threads: o["threads"] as number } : {}),
    verbose: !!o["verbose"],
    header: !!o["header"],
  };
}
