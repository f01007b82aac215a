import { Command } from "commander";
import type { Ctx } from "../support/context.js";
import { fromListOption, globals, withGlobalOptions } from "../support/options.js";
import { note, printJson, writeOut } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import { InvalidInputError, RuntimeFailure } from "../../common/errors.js";
import { RULES } from "../../surgery/lint/rules.js";

function rulesHelp(): string {
  const rows = Object.values(RULES).map((r) => `  ${r.id.padEnd(24)} ${r.severity.padEnd(8)} ${r.loader.padEnd(9)} ${r.what}`);
  return `\nRules (id, severity, loader that fails):\n${rows.join("\n")}`;
}

export function lintCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("lint"))
    .description("check adapters against the rules PEFT, kohya and diffusers loaders enforce (exit 3 on an error-level finding)")
    .argument("[adapter...]", "PEFT directories, .safetensors files, directories of adapters, globs, or - for stdin")
    .addOption(fromListOption("lint"))
    .addHelpText(
      "after",
      `${rulesHelp()}\n\nExamples:\n  lora lint ./my-adapter\n  lora lint *.safetensors --json | jq '.findings[] | select(.severity == "error")'`,
    )
    .action(async (inputs: string[], opts: Record<string, unknown>) => {
      const g = globals(opts);
      const { runLint } = await import("./run.js");
      const { expandInputs } = await import("../../surgery/catalog-inputs.js");
      const paths = await expandInputs(inputs, (opts["fromList"] as string[] | undefined) ?? []);
      const rep = await withProgress(ctx, g, "lint", (tick) => runLint(paths, { stdin: ctx.stdin, onAdapter: (i, n) => tick(i, n, "adapters") }));
      const { lintSummary, renderLintTable, renderLintTsv } = await import("./render.js");
      if (g.json)
        printJson(ctx, {
          adapters: rep.adapters.map(({ findings: _f, ...a }) => a),
          findings: rep.findings,
          errors: rep.errors,
          warnings: rep.warnings,
          failed: rep.failed,
        });
      else if (ctx.stdout.isTTY) writeOut(ctx, renderLintTable(rep));
      else {
        if (rep.findings.length) writeOut(ctx, renderLintTsv(rep, g.header));
        note(ctx, g.quiet, lintSummary(rep));
      }
      for (const f of rep.failed) if (!g.json) note(ctx, false, `${f.path}: skipped: ${f.error}`);
      if (rep.errors > 0)
        throw new InvalidInputError(
          `${rep.errors} error-level finding${rep.errors === 1 ? "" : "s"}: ${[...new Set(rep.findings.filter((f) => f.severity === "error").map((f) => f.rule))].join(", ")}`,
        );
      if (rep.failed.length) {
        const msg = `${rep.failed.length} of ${paths.length} inputs could not be linted`;
        throw rep.failed.some((f) => f.exit === 3) ? new InvalidInputError(msg) : new RuntimeFailure(msg);
      }
    });
}
