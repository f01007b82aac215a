import { FAMILY_HELP } from "../support/families-help.js";
import { Command, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { backendFor } from "../support/backend.js";
import { adaptersHelp, fromListOption, globals, parseFloatArg, parseIntArg, withGlobalOptions } from "../support/options.js";
import { printJson } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import { printWriteReport } from "../support/report.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import type { TruncateOptions } from "./run.js";

export function truncateCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("truncate"))
    .description("shrink an adapter's ranks from the file alone: optimal SVD truncation, DyLoRA prefixes, global rank budgets")
    .argument("[adapter...]", adaptersHelp("several (a directory of adapters, a glob) for a catalog"))
    .requiredOption(
      "-o, --output <out>",
      "output: a directory or .safetensors file (PEFT), a .safetensors file (kohya), or - for stdout; for a catalog, the directory that receives every output",
    )
    .option(
      "--max-bytes <SIZE>",
      "catalog: fit every output together into SIZE bytes of tensors (500MB, 24GiB …), keeping the most energy overall (one exact global allocation)",
    )
    .addOption(fromListOption("truncate", " (catalog mode)"))
    .option("--rank <R>", "keep at most R ranks in every module", parseIntArg("--rank", 1))
    .option("--energy <F>", "per module, keep the fewest ranks holding fraction F of its energy (Σσ²)", parseFloatArg("--energy", 0, 1, true))
    .option("--budget <K>", "K ranks in total over all modules, allocated by --score (a module may drop to 0 and is removed)", parseIntArg("--budget", 0))
    .addOption(
      new Option("--method <method>", "svd: optimal rank-R ΔW; prefix: first R components (DyLoRA). Default svd, prefix for kohya DyLoRA files").choices([
        "svd",
        "prefix",
      ]),
    )
    .addOption(
      new Option("--score <score>", "how --budget ranks components: energy σ², ratio σ²/Σσ² (capped by ρ), params σ²/(in+out)")
        .choices(["energy", "ratio", "params"])
        .default("energy"),
    )
    .option("--min-rank <N>", "floor per module for --budget, --energy and --dynamic", parseIntArg("--min-rank", 0), 0)
    .option("--rho <X>", "cap for --score ratio: at most ρ·mean rank per module", parseFloatArg("--rho", 1), 2)
    .addOption(
      new Option(
        "--split <mode>",
        "how σ is shared between the factors: balanced (√σ each) or all-in-up (B = UΣ, A = Vᵀ, as kohya/PEFT). Default balanced (all-in-up with --kohya-compat)",
      ).choices(["balanced", "all-in-up"]),
    )
    .addOption(
      new Option("--alpha-mode <mode>", "prefix only: keep alpha (alpha/R, the DyLoRA forward), kohya-train (alpha·√(R/r)) or lycoris (alpha·block size)")
        .choices(["keep", "kohya-train", "lycoris"])
        .default("keep"),
    )
    .option(
      "--unit <U>",
      "prefix: write every multiple of U below the full rank, named <out>-0004.safetensors … (kohya's extract_lora_from_dylora.py)",
      parseIntArg("--unit", 1),
    )
    .option("--kohya-compat", "choose ranks exactly as kohya's resize_lora.py (off-by-one included); --rank is its --new_rank cap", false)
    .addOption(
      new Option(
        "--dynamic <method>",
        "per-module rank rule: sv_ratio, sv_fro or sv_cumulative (the fewest ranks meeting it; kohya's +1 with --kohya-compat)",
      ).choices(["sv_ratio", "sv_fro", "sv_cumulative"]),
    )
    .option("--dynamic-param <X>", "the --dynamic threshold (ratio > 0; fractions in (0, 1])", parseFloatArg("--dynamic-param", 0, Infinity, true))
    .addOption(new Option("--dtype <dtype>", "dtype of the new factors (default: each module's own)").choices(["F32", "F16", "BF16"]))
    .addOption(new Option("--to <format>", "output format (default: the input's)").choices(["peft", "kohya", "diffusers"]))
    .addHelpText(
      "after",
      [
        "",
        "Scale: svd keeps each module's scale s (alpha' = s·R, or s·√R with rsLoRA), as resize_lora.py does;",
        "prefix keeps alpha, so the loader's alpha/R is the DyLoRA forward at rank R.",
        "",
        "Examples:",
        "  lora truncate ./my-adapter --rank 8 -o ./my-adapter-r8",
        "  lora truncate ./my-adapter --budget 64 --score energy -o small.safetensors",
        "  lora truncate sd.safetensors --kohya-compat --dynamic sv_fro --dynamic-param 0.9 --rank 32 -o sd-resized.safetensors",
        "  lora truncate dylora.safetensors --unit 4 -o dylora.safetensors      # dylora-0004.safetensors, -0008, …",
        "  lora truncate ./my-adapter --energy 0.9 -o - | lora inspect -",
        FAMILY_HELP,
      ].join("\n"),
    )
    .action(async (inputs: string[], opts: Record<string, unknown>) => {
      const g = globals(opts);
      const output = opts["output"] as string;
      const { expandInputs, parseSize } = await import("../../surgery/catalog-inputs.js");
      const fromList = (opts["fromList"] as string[] | undefined) ?? [];
      const maxBytes = opts["maxBytes"] !== undefined ? parseSize(opts["maxBytes"] as string) : undefined;
      const expanded = await expandInputs(inputs, fromList);
      const catalog = maxBytes !== undefined || inputs.length > 1 || fromList.length > 0 || expanded.length !== 1 || expanded[0] !== inputs[0];
      const input = inputs[0]!;
      if (g.json && output === "-") throw new UsageError("--json cannot be combined with -o - (standard output carries the file)");
      const o: TruncateOptions = {
        input,
        output,
        score: opts["score"] as TruncateOptions["score"],
        minRank: opts["minRank"] as number,
        rho: opts["rho"] as number,
        alphaMode: opts["alphaMode"] as TruncateOptions["alphaMode"],
        kohyaCompat: !!opts["kohyaCompat"],
        force: g.force,
        ...(opts["rank"] !== undefined ? { rank: opts["rank"] as number } : {}),
        ...(opts["energy"] !== undefined ? { energy: opts["energy"] as number } : {}),
        ...(opts["budget"] !== undefined ? { budget: opts["budget"] as number } : {}),
        ...(opts["method"] !== undefined ? { method: opts["method"] as "svd" | "prefix" } : {}),
        ...(opts["split"] !== undefined ? { split: opts["split"] as "balanced" | "all-in-up" } : {}),
        ...(opts["unit"] !== undefined ? { unit: opts["unit"] as number } : {}),
        ...(opts["dynamic"] !== undefined ? { dynamic: opts["dynamic"] as "sv_ratio" } : {}),
        ...(opts["dynamicParam"] !== undefined ? { dynamicParam: opts["dynamicParam"] as number } : {}),
        ...(opts["dtype"] !== undefined ? { dtype: opts["dtype"] as "F32" } : {}),
        ...(opts["to"] !== undefined ? { to: opts["to"] as "peft" | "kohya" | "diffusers" } : {}),
      };
      const backend = await backendFor(ctx, g);
      if (catalog) {
        if (output === "-") throw new UsageError("a catalog is written to a directory (-o DIR), not standard output");
        if (maxBytes !== undefined && (o.rank !== undefined || o.energy !== undefined || o.budget !== undefined || o.dynamic !== undefined))
          throw new UsageError("--max-bytes chooses every rank itself; it cannot be combined with --rank, --energy, --budget or --dynamic");
        const { runCatalogTruncate } = await import("./catalog.js");
        const { input: _i, output: _o, ...base } = o;
        if (maxBytes === undefined) (await import("./run.js")).checkOptions(o);
        const rep = await withProgress(ctx, g, "truncate", (tick) =>
          runCatalogTruncate(expanded, output, base, maxBytes !== undefined ? { maxBytes } : {}, { backend, onAdapter: (i, n) => tick(i, n, "adapters") }),
        );
        const { printCatalogReport } = await import("./render-catalog.js");
        printCatalogReport(ctx, g, rep);
        if (rep.failed.length) throw new InvalidInputError(`${rep.failed.length} of ${expanded.length} adapters could not be truncated`);
        return;
      }
      const { isSplitReport, runTruncate } = await import("./run.js");
      const report = await withProgress(ctx, g, "truncate", (tick) =>
        runTruncate(o, { backend, stdin: ctx.stdin, stdout: ctx.stdout, onModule: (i, n) => tick(i, n, "modules") }),
      );
      for (const w of new Set((isSplitReport(report) ? report.outputs : [report]).flatMap((r) => (r["warnings"] as string[] | undefined) ?? [])))
        ctx.stderr.write(`lora: warning: ${w}\n`);
      if (!isSplitReport(report)) {
        printWriteReport(ctx, g, report);
        return;
      }
      if (g.json) {
        printJson(ctx, report);
        return;
      }
      for (const r of report.outputs) printWriteReport(ctx, g, r);
    });
}
