import { Command } from "commander";
import type { Ctx } from "../support/context.js";
import { globals, withGlobalOptions } from "../support/options.js";
import { note, printJson, writeOut } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import { backendFor } from "../support/backend.js";

export function diffCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("diff"))
    .description("compare two adapters of one base module by module: cosine, relative difference, principal angles")
    .argument("<a>", "first adapter: PEFT directory, .safetensors or torch.save .bin/.pt file, or - for stdin")
    .argument("<b>", "second adapter (any format lora reads)")
    .option("--signs", "also the TIES sign-conflict rate (forms each module's dense ΔW, one at a time)", false)
    .addHelpText(
      "after",
      "\nExamples:\n  lora diff ./run-a ./run-b\n  lora diff a.safetensors ./peft-b --json | jq '.modules[] | {name, cosine}'\n  lora diff ./ckpt-1000 ./ckpt-2000 --signs",
    )
    .action(async (a: string, b: string, opts: Record<string, unknown>) => {
      const g = globals(opts);
      const backend = await backendFor(ctx, g);
      const { runDiff } = await import("./run.js");
      const rep = await withProgress(ctx, g, "diff", (tick) =>
        runDiff({ a, b, signs: !!opts["signs"] }, { backend, stdin: ctx.stdin, onModule: (i, n) => tick(i, n, "modules") }),
      );
      if (g.json) return printJson(ctx, rep);
      const { diffSummary, renderDiffTable, renderDiffTsv } = await import("./render.js");
      if (ctx.stdout.isTTY) writeOut(ctx, renderDiffTable(rep));
      else {
        if (rep.modules.length) writeOut(ctx, renderDiffTsv(rep, g.header));
        note(ctx, g.quiet, diffSummary(rep));
      }
    });
}
