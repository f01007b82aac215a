// The program: commander setup and the one place errors become exit codes for callers (bin/
// owns the process; main() never exits, so tests call it with in-memory streams).
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { LoraError, UsageError } from "../common/errors.js";
import type { Ctx } from "./support/context.js";
import { globalOptionsLast } from "./support/options.js";
import { errorText, loadColour } from "./support/output.js";

/** The version of the package this file ships in (package.json two levels up, in the source tree and in dist/). */
function packageVersion(): string {
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.version && pkg.name?.endsWith("lora")) return pkg.version;
    } catch {
      /* try the next one */
    }
  }
  return "unknown";
}

export const VERSION = packageVersion();

type CommandFactory = (ctx: Ctx) => Command;

/**
 * Commands register here (one folder each under commands/<name>/), in the order help lists them.
 * Each definition is imported only when needed: a command line naming one command loads that
 * one alone (start-up, issue 19); help, completion and unknown commands load them all.
 */
export const commandFactories: Record<string, () => Promise<CommandFactory>> = {
  inspect: async () => (await import("./inspect/index.js")).inspectCommand,
  truncate: async () => (await import("./truncate/index.js")).truncateCommand,
  prune: async () => (await import("./prune/index.js")).pruneCommand,
  merge: async () => (await import("./merge/index.js")).mergeCommand,
  convert: async () => (await import("./convert/index.js")).convertCommand,
  diff: async () => (await import("./diff/index.js")).diffCommand,
  lint: async () => (await import("./lint/index.js")).lintCommand,
  extract: async () => (await import("./extract/index.js")).extractCommand,
  apply: async () => (await import("./apply/index.js")).applyCommand,
  backends: async () => (await import("./backends/index.js")).backendsCommand,
  completion: async () => (await import("./completion/index.js")).completionCommand,
};

/** The one command a command line runs, when building it alone gives the same behaviour (completion reads the whole program). */
function soleCommand(argv: string[]): string | undefined {
  const first = argv.find((a) => !a.startsWith("-"));
  return first !== undefined && first !== "completion" && Object.hasOwn(commandFactories, first) ? first : undefined;
}

/** The program with every command, or with `only` alone. */
export async function buildProgram(ctx: Ctx, only?: string): Promise<Command> {
  const program = new Command("lora")
    .description("LoRA adapter surgery from the shell: inspect, truncate, prune, merge and convert adapters without the base model")
    .version(VERSION, "-V, --version")
    .option("--no-color", "disable colour")
    .exitOverride()
    .configureOutput(outputs(ctx));
  const names = only !== undefined ? [only] : Object.keys(commandFactories);
  const factories = await Promise.all(names.map((n) => commandFactories[n]!()));
  for (const make of factories) {
    const cmd = globalOptionsLast(make(ctx));
    cmd.exitOverride().configureOutput(outputs(ctx));
    program.addCommand(cmd);
  }
  return program;
}

/** Help and version on the caller's streams; commander's own error lines are dropped: main() prints every error in one format. */
function outputs(ctx: Ctx) {
  return { writeOut: (s: string) => ctx.stdout.write(s), writeErr: (s: string) => ctx.stderr.write(s), outputError: () => {} };
}

/** The command named on the command line (for the --help hint), if any. */
function commandOf(program: Command, argv: string[]): string | undefined {
  const names = new Set(program.commands.map((c) => c.name()));
  return argv.find((a) => names.has(a));
}

export interface ErrorInfo {
  exitCode: number;
  code: string;
  message: string;
  hint?: string;
}

export function describeError(e: unknown): ErrorInfo {
  if (e instanceof LoraError) return { exitCode: e.exitCode, code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === "object" && typeof err.code === "string" && typeof err.message === "string") {
    return { exitCode: 1, code: `IO_${err.code}`, message: err.message };
  }
  return {
    exitCode: 1,
    code: "INTERNAL",
    message: `internal error: ${(e as Error)?.message ?? String(e)} (this is a bug; rerun with LORA_DEBUG=1 for a stack trace)`,
  };
}

/** Run the CLI; returns the exit code. */
export async function main(argv: string[], ctx: Ctx): Promise<number> {
  await loadColour(ctx);
  const program = await buildProgram(ctx, soleCommand(argv));
  const json = argv.includes("--json");
  // No command at all (or only global flags): the usage on stderr, exit 2 (docs/cli.md "Exit codes").
  if (!argv.some((a) => !a.startsWith("-")) && !argv.some((a) => ["-h", "--help", "-V", "--version"].includes(a))) {
    if (json) ctx.stderr.write(JSON.stringify({ error: { code: "USAGE", exit: 2, message: "no command given" } }) + "\n");
    else ctx.stderr.write(program.helpInformation());
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version") return 0;
      // `lora help [command]` shows help (exit 0); a missing command shows it on stderr (commander's exit 1: ours is 2).
      if (e.code === "commander.help") return e.exitCode === 0 ? 0 : 2;
      return report(new UsageError(e.message.replace(/^error: /, "")), program, argv, ctx, json);
    }
    return report(e, program, argv, ctx, json);
  }
}

/** One error, one format: `lora: error: …` (+ hint) on stderr, or one JSON document with --json. */
function report(e: unknown, program: Command, argv: string[], ctx: Ctx, json: boolean): number {
  const info = describeError(e);
  if (info.exitCode === 2 && !info.hint) {
    const cmd = commandOf(program, argv);
    info.hint = `run 'lora ${cmd ? `${cmd} ` : ""}--help' for usage`;
  }
  if (json)
    ctx.stderr.write(
      JSON.stringify({ error: { code: info.code, exit: info.exitCode, message: info.message, ...(info.hint ? { hint: info.hint } : {}) } }) + "\n",
    );
  else ctx.stderr.write(errorText(ctx, info.message, info.hint));
  if (ctx.env["LORA_DEBUG"] === "1" && e instanceof Error && e.stack) ctx.stderr.write(e.stack + "\n");
  return info.exitCode;
}
