import { Command, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { backendFor } from "../support/backend.js";
import { globals, parseFloatArg, parseIntArg, withGlobalOptions } from "../support/options.js";
import { printReport } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import type { ExtractOptions } from "./run.js";

export function extractCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("extract"))
    .description("the optimal LoRA of a full fine-tune: best rank-R factors of ΔW = TUNED − BASE for every weight that changed")
    .argument("<base>", "base model: .safetensors file, model directory (sharded or not) or diffusers pipeline/unet folder")
    .argument("<tuned>", "the fine-tuned model, same layout and tensors")
    .requiredOption("-o, --output <out>", "output: a PEFT directory or .safetensors file; kohya .safetensors for diffusers UNets")
    .option("--rank <R>", "rank R for every weight", parseIntArg("--rank", 1))
    .option("--energy <F>", "per weight, the fewest ranks holding fraction F of ‖ΔW‖²", parseFloatArg("--energy", 0, 1, true))
    .option("--budget <K>", "K ranks in total, shared by energy across the weights (two passes)", parseIntArg("--budget", 1))
    .option("--exact", "full SVD of every ΔW (the dense route) instead of the randomized one", false)
    .option("--low-memory", "re-read each large ΔW from both models for every product instead of holding it in float32 (slower)", false)
    .option("--tolerance <T>", "randomized route: Frobenius error within (1+T)× the optimum", parseFloatArg("--tolerance", 0, 1, true), 1e-3)
    .option("--modules <regex>", "only weights whose module path matches")
    .option("--base-name <name>", "base_model_name_or_path of the PEFT config")
    .addOption(new Option("--to <format>", "output format (default: kohya for a diffusers UNet, else peft)").choices(["peft", "kohya"]))
    .addOption(new Option("--dtype <dtype>", "dtype of the factors (default: the weights')").choices(["F32", "F16", "BF16"]))
    .addHelpText(
      "after",
      [
        "",
        "Examples:",
        "  lora extract ./llama-base ./llama-tuned --rank 64 -o ./extracted --base-name meta-llama/Llama-2-7b-hf",
        "  lora extract ./sd15 ./sd15-dreambooth --energy 0.9 -o dreambooth.safetensors     # kohya, UNet weights",
        "  lora extract base.safetensors tuned.safetensors --rank 16 --modules 'self_attn' --exact -o ./attn-r16",
      ].join("\n"),
    )
    .action(async (base: string, tuned: string, opts: Record<string, unknown>) => {
      const g = globals(opts);
      const o: ExtractOptions = {
        base,
        tuned,
        output: opts["output"] as string,
        exact: !!opts["exact"],
        lowMemory: !!opts["lowMemory"],
        tolerance: opts["tolerance"] as number,
        seed: g.seed,
        force: g.force,
        ...(opts["rank"] !== undefined ? { rank: opts["rank"] as number } : {}),
        ...(opts["energy"] !== undefined ? { energy: opts["energy"] as number } : {}),
        ...(opts["budget"] !== undefined ? { budget: opts["budget"] as number } : {}),
        ...(opts["modules"] !== undefined ? { modules: opts["modules"] as string } : {}),
        ...(opts["baseName"] !== undefined ? { baseName: opts["baseName"] as string } : {}),
        ...(opts["to"] !== undefined ? { to: opts["to"] as "peft" | "kohya" } : {}),
        ...(opts["dtype"] !== undefined ? { dtype: opts["dtype"] as "F32" } : {}),
      };
      const backend = await backendFor(ctx, g);
      const { extract } = await import("./run.js");
      const report = await withProgress(ctx, g, "extract", (tick) => extract(o, backend, tick, ctx.env, ctx.collectGarbage));
      await printReport(ctx, g, report, async () => (await import("./render.js")).printExtractReport);
    });
}
