import { Command, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { globals, parseFloatArg, parseIntArg, withGlobalOptions } from "../support/options.js";
import { printJson, writeOut } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import { backendFor } from "../support/backend.js";
import { UsageError } from "../../formats/errors.js";
import { renderInspectTable, renderInspectTsv } from "./render.js";
import { runInspect } from "./run.js";

export function inspectCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("inspect"))
    .description("show ranks, scales, norms and the exact singular-value spectrum of every module")
    .argument("<adapter>", "PEFT directory, .safetensors file, or - for stdin")
    .option("--budget <K>", "preview a global rank budget: K ranks in total over all modules", parseIntArg("--budget", 0))
    .option("--energy <F>", "preview per-module truncation keeping fraction F of each module's energy", parseFloatArg("--energy", 0, 1, true))
    .addOption(new Option("--score <score>", "how --budget ranks components").choices(["energy", "ratio", "params"]).default("energy"))
    .option("--min-rank <N>", "floor per module for --budget", parseIntArg("--min-rank", 0), 0)
    .option("--rho <X>", "cap for --score ratio: at most ρ·mean rank per module", parseFloatArg("--rho", 1), 2)
    .addHelpText("after", "\nExamples:\n  lora inspect ./my-adapter\n  lora inspect adapter.safetensors --json | jq '.modules[0].singular_values'\n  lora inspect ./my-adapter --budget 64 --score energy")
    .action(async (input: string, opts: Record<string, unknown>) => {
      const g = globals(opts);
      if (opts["budget"] !== undefined && opts["energy"] !== undefined) throw new UsageError("--budget and --energy are mutually exclusive");
      const backend = await backendFor(ctx, g);
      const report = await withProgress(ctx, g, "inspect", (tick) =>
        runInspect(
          {
            input,
            score: opts["score"] as "energy",
            minRank: opts["minRank"] as number,
            rho: opts["rho"] as number,
            ...(opts["budget"] !== undefined ? { budget: opts["budget"] as number } : {}),
            ...(opts["energy"] !== undefined ? { energy: opts["energy"] as number } : {}),
          },
          { backend, stdin: ctx.stdin, onModule: (i, n) => tick(i, n, "modules") },
        ),
      );
      if (g.json) printJson(ctx, report);
      else if (ctx.stdout.isTTY) writeOut(ctx, renderInspectTable(report, ctx.stdout.columns ? { width: ctx.stdout.columns } : {}));
      else writeOut(ctx, renderInspectTsv(report));
    });
}
