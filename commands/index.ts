// The program: commander setup and the one place errors become exit codes for callers (bin/
// owns the process; main() never exits, so tests call it with in-memory streams).
import { Command, CommanderError } from "commander";
import { LoraError } from "../formats/errors.js";
import { applyCommand } from "./apply/index.js";
import { backendsCommand } from "./backends/index.js";
import { completionCommand } from "./completion/index.js";
import { convertCommand } from "./convert/index.js";
import { extractCommand } from "./extract/index.js";
import { inspectCommand } from "./inspect/index.js";
import { mergeCommand } from "./merge/index.js";
import { pruneCommand } from "./prune/index.js";
import { truncateCommand } from "./truncate/index.js";
import type { Ctx } from "./support/context.js";

export const VERSION = "0.1.0";

type CommandFactory = (ctx: Ctx) => Command;

/** Commands register here (one file each under commands/<name>/). */
export const commandFactories: CommandFactory[] = [inspectCommand, truncateCommand, pruneCommand, mergeCommand, convertCommand, extractCommand, applyCommand, backendsCommand, completionCommand];

export function buildProgram(ctx: Ctx): Command {
  const program = new Command("lora")
    .description("LoRA adapter surgery from the shell: inspect, truncate, prune, merge and convert adapters without the base model")
    .version(VERSION, "-V, --version")
    .option("--no-color", "disable colour")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.stdout.write(s), writeErr: (s) => ctx.stderr.write(s) });
  for (const make of commandFactories) {
    const cmd = make(ctx);
    cmd.exitOverride().configureOutput({ writeOut: (s) => ctx.stdout.write(s), writeErr: (s) => ctx.stderr.write(s) });
    program.addCommand(cmd);
  }
  return program;
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
  return { exitCode: 1, code: "INTERNAL", message: `internal error: ${(e as Error)?.message ?? String(e)} (this is a bug; rerun with LORA_DEBUG=1 for a stack trace)` };
}

/** Run the CLI; returns the exit code. */
export async function main(argv: string[], ctx: Ctx): Promise<number> {
  const program = buildProgram(ctx);
  const json = argv.includes("--json");
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help" || e.exitCode === 0) return 0;
      // commander already printed its message to stderr (plain); with --json add the JSON object.
      if (json) ctx.stderr.write(JSON.stringify({ error: { code: "USAGE", message: e.message.replace(/^error: /, "") } }) + "\n");
      return 2;
    }
    const info = describeError(e);
    if (json) ctx.stderr.write(JSON.stringify({ error: { code: info.code, exit: info.exitCode, message: info.message } }) + "\n");
    else {
      ctx.stderr.write(`lora: error: ${info.message}\n`);
      if (info.hint) ctx.stderr.write(`  hint: ${info.hint}\n`);
    }
    if (ctx.env["LORA_DEBUG"] === "1" && e instanceof Error && e.stack) ctx.stderr.write(e.stack + "\n");
    return info.exitCode;
  }
}
