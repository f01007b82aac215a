// Option parsers and the global options added to every command. Parsers throw commander's
// InvalidArgumentError so bad values are usage errors (exit 2).
import { Command, InvalidArgumentError, Option } from "commander";
import type { GlobalOptions } from "./context.js";

export function parseIntArg(name: string, min = 0) {
  return (v: string): number => {
    if (!/^-?\d+$/.test(v.trim())) throw new InvalidArgumentError(`${name} must be an integer, got "${v}"`);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
}

export function parseFloatArg(name: string, lo = -Infinity, hi = Infinity, openLo = false) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < lo || n > hi || (openLo && n === lo)) {
      throw new InvalidArgumentError(`${name} must be a number in ${openLo ? "(" : "["}${lo}, ${hi}], got "${v}"`);
    }
    return n;
  };
}

export function parseWeights(v: string): number[] {
  const parts = v.split(",").map((s) => s.trim());
  const ws = parts.map(Number);
  if (parts.some((p) => p === "") || ws.some((w) => !Number.isFinite(w))) throw new InvalidArgumentError(`--weights must be comma-separated numbers, got "${v}"`);
  return ws;
}

/** Add the global options (cli.md) to a command, so they work after the command name. */
export function withGlobalOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--backend <name>", "linear-algebra backend").choices(["auto", "cpu", "cuda", "js"]).default("auto"))
    .option("--json", "print one JSON document on stdout", false)
    .option("-q, --quiet", "no progress or notes on stderr", false)
    .option("--no-color", "disable colour")
    .option("--seed <n>", "random seed where randomness exists", parseIntArg("--seed", 0), 0)
    .option("--force", "overwrite an existing output", false)
    .option("--threads <n>", "threads for the native backend (default: all cores)", parseIntArg("--threads", 1))
    .option("-v, --verbose", "more detail on stderr", false);
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
  };
}
