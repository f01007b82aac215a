// lora prune: SoRA gate pruning, LoRAPrune structured pruning of a base model with its adapter,
// and file-level module pruning (docs/cli.md "prune"; docs/algorithms.md §4).
import { Command, InvalidArgumentError, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { globals, parseFloatArg, withGlobalOptions } from "../support/options.js";
import { backendFor } from "../support/backend.js";
import { withProgress } from "../support/progress.js";
import { printWriteReport } from "../support/report.js";
import { UsageError } from "../../common/errors.js";
import type { PruneMethod, PruneOptions } from "./run.js";

/** "0,1,5-7" → [0, 1, 5, 6, 7]; with allowNone, "none" → []. */
export function parseLayerList(name: string, allowNone = false) {
  return (v: string): number[] => {
    const s = v.trim();
    if (allowNone && (s === "none" || s === "")) return [];
    const out = new Set<number>();
    for (const part of s.split(",")) {
      const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
      if (!m)
        throw new InvalidArgumentError(
          `${name} must be a comma-separated list of layer indices or ranges (e.g. 0,1,30-31)${allowNone ? ", or none" : ""}; got "${v}"`,
        );
      const a = Number(m[1]),
        b = m[2] !== undefined ? Number(m[2]) : a;
      if (b < a) throw new InvalidArgumentError(`${name}: range ${part.trim()} is backwards`);
      if (b - a > 1_000_000) throw new InvalidArgumentError(`${name}: range ${part.trim()} is too large`);
      for (let i = a; i <= b; i++) out.add(i);
    }
    return [...out].sort((x, y) => x - y);
  };
}

const METHOD_FLAGS: Record<PruneMethod, string[]> = {
  sora: ["threshold", "loraAlpha", "fold", "keepOther"],
  loraprune: ["base", "ratio", "grads", "baseOut", "skipLayers", "scoreModules"],
  modules: ["match", "layers", "minNorm", "minEnergyShare"],
};
const FLAG_NAME: Record<string, string> = {
  threshold: "--threshold",
  loraAlpha: "--lora-alpha",
  fold: "--fold",
  keepOther: "--keep-other",
  base: "--base",
  ratio: "--ratio",
  grads: "--grads",
  baseOut: "--base-out",
  skipLayers: "--skip-layers",
  scoreModules: "--score-modules",
  match: "--match",
  layers: "--layers",
  minNorm: "--min-norm",
  minEnergyShare: "--min-energy-share",
};

export function pruneCommand(ctx: Ctx): Command {
  return (
    withGlobalOptions(new Command("prune"))
      .description("prune an adapter: SoRA gates (sora), structured heads/channels of base + adapter (loraprune), or whole modules (modules)")
      .argument("<adapter>", "PEFT directory, .safetensors or torch.save .bin/.pt file (a SoRA checkpoint for --method sora), or - for stdin")
      .requiredOption("-o, --output <out>", "output adapter: a directory or .safetensors file (PEFT), a .safetensors file (kohya), or - for stdout")
      .addOption(new Option("--method <method>", "what to prune").choices(["sora", "loraprune", "modules"]).makeOptionMandatory())
      .addOption(new Option("--to <format>", "output format (default: the input's; PEFT for SoRA checkpoints)").choices(["peft", "kohya", "diffusers"]))
      // sora
      .option("--threshold <T>", "sora: drop ranks with |gate| ≤ T (default 0: exactly-zero gates)", parseFloatArg("--threshold", 0))
      .option(
        "--lora-alpha <A>",
        "sora: lora_alpha where no config says (default 16, SoRA's); scale = A / r_max",
        parseFloatArg("--lora-alpha", 0, Infinity, true),
      )
      .addOption(new Option("--fold <side>", "sora: fold the gate into B (default), A, or split it evenly").choices(["B", "A", "balanced"]))
      .option("--keep-other", "sora: carry the checkpoint's other tensors (backbone, classifier) into the output")
      // loraprune
      .option(
        "--base <model>",
        "loraprune: base model (.safetensors file, or a directory with model.safetensors or model.safetensors.index.json) with its config.json",
      )
      .option("--ratio <P>", "loraprune: fraction of heads (key/value groups) and MLP channels pruned per layer, in [0, 1)", parseFloatArg("--ratio", 0, 1))
      .option(
        "--grads <file>",
        "loraprune: safetensors with LoRA gradients (…lora_A.grad / …lora_B.grad) for the LoRA-guided criterion; without: magnitude |W + s·B·A|",
      )
      .option("--base-out <path>", "loraprune: write the pruned base model (a directory, or one .safetensors file)")
      .option(
        "--skip-layers <list>",
        "loraprune: layers never pruned, e.g. 0,1,2,31 or none (default: the first 10% and the last, as LoRAPrune)",
        parseLayerList("--skip-layers", true),
      )
      .addOption(
        new Option(
          "--score-modules <which>",
          "loraprune: projections that score the groups: those with a LoRA (default, as LoRAPrune) or all (|W| where no LoRA)",
        ).choices(["lora", "all"]),
      )
      // modules
      .option("--match <regex>", "modules: drop modules whose name matches the regular expression")
      .option("--layers <list>", "modules: drop modules of these layer indices, e.g. 0,5-7", parseLayerList("--layers"))
      .option("--min-norm <X>", "modules: drop modules with ‖ΔW‖_F < X", parseFloatArg("--min-norm", 0))
      .option("--min-energy-share <F>", "modules: drop modules holding less than fraction F of the adapter's Σ‖ΔW‖²", parseFloatArg("--min-energy-share", 0, 1))
      .addHelpText(
        "after",
        [
          "",
          "Examples:",
          "  lora prune sora-checkpoint.safetensors --method sora -o ./adapter",
          "  lora prune ./adapter --method loraprune --base ./Llama-3-8B --ratio 0.5 --base-out ./Llama-3-8B-pruned -o ./adapter-pruned",
          "  lora prune ./adapter --method modules --match 'mlp\\.down_proj' -o ./adapter-no-down",
          "  lora prune adapter.safetensors --method modules --min-energy-share 0.01 -o smaller.safetensors",
          "",
          "loraprune writes pruning_plan.json beside the adapter output, and config.json for the pruned model",
          "in the --base-out directory (beside a --base-out file, or beside the adapter output without --base-out).",
        ].join("\n"),
      )
      .action(async (input: string, opts: Record<string, unknown>) => {
        const g = globals(opts);
        const method = opts["method"] as PruneMethod;
        const output = opts["output"] as string;
        if (g.json && output === "-") throw new UsageError("--json cannot be combined with -o - (standard output carries the file)");
        for (const [m, flags] of Object.entries(METHOD_FLAGS)) {
          if (m === method) continue;
          const wrong = flags.filter((f) => opts[f] !== undefined);
          if (wrong.length)
            throw new UsageError(
              `${wrong.map((f) => FLAG_NAME[f]).join(", ")} belong${wrong.length === 1 ? "s" : ""} to --method ${m}, not --method ${method}`,
            );
        }
        if (method === "loraprune") {
          if (opts["base"] === undefined) throw new UsageError("--method loraprune needs --base <model>");
          if (opts["ratio"] === undefined) throw new UsageError("--method loraprune needs --ratio <P>");
          if ((opts["ratio"] as number) >= 1) throw new UsageError(`--ratio must be below 1 (it is the fraction pruned), got ${opts["ratio"]}`);
          if (opts["grads"] !== undefined && opts["scoreModules"] === "all") throw new UsageError("--score-modules all cannot be combined with --grads");
        }
        const pick = <T>(k: string): T | undefined => opts[k] as T | undefined;
        const o: PruneOptions = { input, output, method, force: g.force };
        const set = <K extends keyof PruneOptions>(k: K, v: PruneOptions[K] | undefined) => {
          if (v !== undefined) o[k] = v;
        };
        set("to", pick("to"));
        set("threshold", pick("threshold"));
        set("loraAlpha", pick("loraAlpha"));
        set("fold", pick("fold"));
        set("keepOther", pick<boolean>("keepOther"));
        set("base", pick("base"));
        set("ratio", pick("ratio"));
        set("grads", pick("grads"));
        set("baseOut", pick("baseOut"));
        set("skipLayers", pick("skipLayers"));
        set("scoreModules", pick("scoreModules"));
        set("match", pick("match"));
        set("layers", pick("layers"));
        set("minNorm", pick("minNorm"));
        set("minEnergyShare", pick("minEnergyShare"));
        const backend = await backendFor(ctx, g);
        const { runPrune } = await import("./run.js");
        const rep = await withProgress(ctx, g, `prune (${method})`, (tick) =>
          runPrune(o, { backend, stdin: ctx.stdin, stdout: ctx.stdout, onStep: (d, n, w) => tick(d, n, w) }),
        );
        printWriteReport(ctx, g, rep);
      })
  );
}
