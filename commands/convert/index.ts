import { Command, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { globals, withGlobalOptions } from "../support/options.js";
import { printJson, summary } from "../support/output.js";
import { UsageError } from "../../common/errors.js";
import type { TargetFormat } from "./run.js";
import { FAMILY_HELP } from "../support/families-help.js";

export function convertCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("convert"))
    .description("convert an adapter between PEFT and kohya layouts, keeping every ΔW")
    .argument("<adapter>", "PEFT directory, .safetensors or torch.save .bin/.pt file, or - for stdin")
    .requiredOption("-o, --output <out>", "output: a directory or .safetensors file (PEFT), a .safetensors file (kohya), or - for stdout")
    .addOption(new Option("--to <format>", "output format").choices(["peft", "kohya", "diffusers"]).makeOptionMandatory())
    .option("--expert <I>", "MeteoRA: write expert I (0-based) as a standard LoRA, or `all`: one adapter per expert under the -o directory")
    .option("--base <model>", "MiSS/Bone: the base model (.safetensors file or a directory with model.safetensors[.index.json]) whose weights ΔW needs")
    .addHelpText(
      "after",
      "\nExamples:\n  lora convert ./peft-adapter --to kohya -o adapter.safetensors\n  lora convert adapter.safetensors --to peft -o ./peft-adapter\n  lora convert ./peft-adapter --to kohya -o - | lora inspect -\n  lora convert ./adalora-adapter --to peft -o ./plain-lora\n  lora convert meteora/model.safetensors --to peft --expert all -o ./experts\n  lora convert ./miss-adapter --to peft --base ./Llama-3-8B -o ./plain-lora\n" +
        FAMILY_HELP,
    )
    .action(async (input: string, opts: Record<string, unknown>) => {
      const g = globals(opts);
      const output = opts["output"] as string;
      if (g.json && output === "-") throw new UsageError("--json cannot be combined with -o - (standard output carries the file)");
      const { runConvert } = await import("./run.js");
      const rep = await runConvert(
        {
          input,
          output,
          to: opts["to"] as TargetFormat,
          force: g.force,
          ...(opts["base"] !== undefined ? { base: opts["base"] as string } : {}),
          ...(opts["expert"] !== undefined ? { expert: opts["expert"] as string } : {}),
        },
        { stdin: ctx.stdin, stdout: ctx.stdout },
      );
      for (const w of rep.warnings) ctx.stderr.write(`lora: warning: ${w}\n`);
      if (g.json) printJson(ctx, rep);
      else
        summary(
          ctx,
          g.quiet,
          output,
          `converted ${rep.totals.modules} modules (${rep.from} → ${rep.to}, total rank ${rep.totals.rank}, ${rep.passthrough} passthrough tensors) to ${output === "-" ? "standard output" : output}`,
        );
    });
}
