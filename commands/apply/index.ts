import { Command, InvalidArgumentError } from "commander";
import type { Ctx } from "../support/context.js";
import { backendFor } from "../support/backend.js";
import { globals, withGlobalOptions } from "../support/options.js";
import { printReport } from "../support/output.js";
import { withProgress } from "../support/progress.js";
import type { ApplyOptions } from "./run.js";

function parseScales(v: string): number[] {
  const parts = v.split(",").map((s) => s.trim());
  const xs = parts.map(Number);
  if (parts.some((p) => p === "") || xs.some((x) => !Number.isFinite(x)))
    throw new InvalidArgumentError(`--scale must be a number or comma-separated numbers, got "${v}"`);
  return xs;
}

export function applyCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("apply"))
    .description("bake adapters into a base model: W + scale·ΔW per weight, written shard by shard in the base's layout and dtype")
    .argument("<base>", "base model: .safetensors file, model directory (sharded or not) or diffusers pipeline/unet folder")
    .argument("<adapter...>", "PEFT directories or .safetensors adapters (PEFT, kohya, diffusers keys)")
    .requiredOption("-o, --output <out>", "output model directory (same shards, index and other files), or one .safetensors file")
    .option("--scale <S>", "multiplier of each adapter's ΔW: one value, or one per adapter (comma-separated)", parseScales, [1])
    .option("--subtract", "remove the adapters instead (W − scale·ΔW): undoes an earlier apply up to one rounding", false)
    .addHelpText(
      "after",
      [
        "",
        "Examples:",
        "  lora apply ./llama-base ./my-adapter -o ./llama-merged",
        "  lora apply ./llama-base ./style ./subject --scale 0.8,1 -o ./llama-merged",
        "  lora apply ./llama-merged ./my-adapter --subtract -o ./llama-base-again",
      ].join("\n"),
    )
    .action(async (base: string, adapters: string[], opts: Record<string, unknown>) => {
      const g = globals(opts);
      const o: ApplyOptions = {
        base,
        adapters,
        output: opts["output"] as string,
        scales: opts["scale"] as number[],
        subtract: !!opts["subtract"],
        force: g.force,
      };
      const backend = await backendFor(ctx, g);
      const { apply } = await import("./run.js");
      const report = await withProgress(ctx, g, "apply", (tick) => apply(o, backend, tick));
      await printReport(ctx, g, report, async () => (await import("./render.js")).printApplyReport);
    });
}
