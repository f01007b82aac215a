import { FAMILY_HELP } from "../support/families-help.js";
import { Command, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { adaptersHelp, fromListOption, globals, parseFloatArg, parseIntArg, withGlobalOptions } from "../support/options.js";
import { note, paint, printJson, writeOut } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import { backendFor } from "../support/backend.js";
import { InvalidInputError, RuntimeFailure, UsageError } from "../../common/errors.js";

export function inspectCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("inspect"))
    .description(
      "show ranks, scales, norms and the exact singular-value spectrum of every module (LoRA; LyCORIS and the other adapter families as their exact factors)",
    )
    .argument("[adapter...]", adaptersHelp("several (or a directory of adapters, a glob) for one summary row each"))
    .addOption(fromListOption("inspect", " (catalog mode)"))
    .option("--budget <K>", "preview a global rank budget: K ranks in total over all modules", parseIntArg("--budget", 0))
    .option("--energy <F>", "preview per-module truncation keeping fraction F of each module's energy", parseFloatArg("--energy", 0, 1, true))
    .addOption(new Option("--score <score>", "how --budget ranks components").choices(["energy", "ratio", "params"]).default("energy"))
    .option("--min-rank <N>", "floor per module for --budget", parseIntArg("--min-rank", 0), 0)
    .option("--rho <X>", "cap for --score ratio: at most ρ·mean rank per module", parseFloatArg("--rho", 1), 2)
    .option("--plot <file>", "also write a chart of spectra, energy and the redistribution (.svg or .png)")
    .option("--tui", "browse modules interactively and preview a --budget (needs a terminal)", false)
    .addHelpText(
      "after",
      "\nExamples:\n  lora inspect ./my-adapter\n  lora inspect adapter.safetensors --json | jq '.modules[0].singular_values'\n  lora inspect ./my-adapter --budget 64 --score energy\n  lora inspect ./my-adapter --budget 64 --plot spectra.png\n  lora inspect ./my-adapter --tui\n" +
        FAMILY_HELP,
    )
    .action(async (inputs: string[], opts: Record<string, unknown>) => {
      const g = globals(opts);
      const { expandInputs } = await import("../../surgery/catalog-inputs.js");
      const fromList = (opts["fromList"] as string[] | undefined) ?? [];
      const expanded = await expandInputs(inputs, fromList);
      if (inputs.length > 1 || fromList.length > 0 || expanded.length !== 1 || expanded[0] !== inputs[0]) return inspectCatalog(ctx, expanded, opts);
      const input = inputs[0]!;
      if (opts["budget"] !== undefined && opts["energy"] !== undefined) throw new UsageError("--budget and --energy are mutually exclusive");
      const plot = opts["plot"] as string | undefined;
      const plotter = plot !== undefined ? await import("./plot.js") : undefined;
      plotter?.plotFormat(plot!);
      if (opts["tui"]) checkTui(ctx, g.json);
      const backend = await backendFor(ctx, g);
      const { runInspect } = await import("./run.js");
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
      if (plotter) {
        await plotter.writePlot(plot!, report, { force: g.force, inputs: [input] });
        if (!g.json) note(ctx, g.quiet, `wrote chart ${plot}`);
      }
      if (opts["tui"]) {
        const { runTui } = await import("./tui.js");
        await runTui(report, { score: opts["score"] as "energy", minRank: opts["minRank"] as number, rho: opts["rho"] as number }, ctx);
      } else if (g.json) printJson(ctx, report);
      else {
        const { kohyaLines, renderInspectTable, renderInspectTsv, scaleRule } = await import("./render.js");
        if (ctx.stdout.isTTY)
          writeOut(ctx, renderInspectTable(report, { ...(ctx.stdout.columns ? { width: ctx.stdout.columns } : {}), emphasis: paint(ctx, "stdout").bold }));
        else {
          // Piped: rows on stdout; what the table's header lines say goes to stderr.
          note(ctx, g.quiet, scaleRule(report));
          if (report.kohya_metadata) for (const l of kohyaLines(report.kohya_metadata)) note(ctx, g.quiet, l);
          for (const n of report.notes) note(ctx, g.quiet, `note: ${n}`);
          writeOut(ctx, renderInspectTsv(report, { header: !!g.header }));
        }
      }
    });
}

/** Many adapters: one summary row each; a bad file is reported and skipped, exit 3 at the end. */
async function inspectCatalog(ctx: Ctx, paths: string[], opts: Record<string, unknown>): Promise<void> {
  const g = globals(opts);
  for (const o of ["budget", "energy", "plot"]) if (opts[o] !== undefined) throw new UsageError(`--${o} takes one adapter, not a catalog of ${paths.length}`);
  if (opts["tui"]) throw new UsageError("--tui takes one adapter, not a catalog");
  const backend = await backendFor(ctx, g);
  const { summarizeCatalog } = await import("../../surgery/catalog.js");
  const rep = await withProgress(ctx, g, "inspect", (tick) =>
    summarizeCatalog(paths, backend, { stdin: ctx.stdin, onAdapter: (i, n) => tick(i, n, "adapters") }),
  );
  const { renderCatalogTable, renderCatalogTsv } = await import("./render-catalog.js");
  if (g.json) printJson(ctx, rep);
  else writeOut(ctx, ctx.stdout.isTTY ? renderCatalogTable(rep.adapters) : renderCatalogTsv(rep.adapters, g.header));
  for (const f of rep.failed) if (!g.json) note(ctx, false, `${f.path}: skipped: ${f.error}`);
  if (rep.failed.length) {
    const worst = rep.failed.some((f) => f.exit === 3) ? 3 : Math.max(...rep.failed.map((f) => f.exit));
    const msg = `${rep.failed.length} of ${paths.length} adapters could not be inspected`;
    throw worst === 3 ? new InvalidInputError(msg) : new RuntimeFailure(msg);
  }
  if (!g.json) note(ctx, g.quiet, `${rep.adapters.length} adapters inspected`);
}

/** --tui needs a keyboard and a screen: a terminal on stdin and stdout, and not CI (ink does not animate there). */
function checkTui(ctx: Ctx, json: boolean): void {
  if (json) throw new UsageError("--tui and --json are mutually exclusive");
  if (!ctx.stdin.isTTY || !ctx.stdout.isTTY)
    throw new UsageError("--tui needs a terminal on stdin and stdout", { hint: "run it in a terminal, without pipes or - as the adapter" });
  const ci = (v: string | undefined) => v !== undefined && v !== "0" && v !== "false";
  if (ci(ctx.env["CI"]) || ci(ctx.env["CONTINUOUS_INTEGRATION"])) throw new UsageError("--tui is not available under CI (CI is set)");
}
