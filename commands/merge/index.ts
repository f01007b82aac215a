import { FAMILY_HELP } from "../support/families-help.js";
import { Command, Option } from "commander";
import type { Ctx } from "../support/context.js";
import { globals, parseFloatArg, parseIntArg, parseWeights, withGlobalOptions } from "../support/options.js";
import { printWriteReport } from "../support/report.js";
import { withProgress } from "../support/progress.js";
import { backendFor } from "../support/backend.js";
import { UsageError } from "../../common/errors.js";
import { MERGE_METHODS, type MergeMethod, type MergeOptions } from "../../surgery/merge/types.js";
import { MERGE_DEFAULTS } from "./methods.js";

const DENSE: MergeMethod[] = ["ties", "dare", "dare_ties", "magnitude_prune"];

/** Method-specific flags: which methods use them (a flag given for another method is noted, not an error). */
const APPLIES: Record<string, MergeMethod[]> = {
  density: DENSE,
  tiesMode: ["ties", "dare_ties"],
  majoritySign: ["ties", "dare_ties"],
  oversample: DENSE,
  powerIters: DENSE,
  paramReweight: ["lego"],
  outputReweight: ["lego"],
  paramNorm: ["lego"],
  signCanonicalize: ["lego"],
  nInit: ["lego"],
  maxIter: ["lego"],
  tol: ["lego"],
  refRank: ["lego"],
  project: ["ffa"],
  ffaTol: ["ffa"],
  fairSolver: ["fair"],
  fairLambda: ["fair"],
  fairSteps: ["fair"],
  fairLr: ["fair"],
  rank: ["lego", "svd", "ffa", ...DENSE],
};

export function mergeCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("merge"))
    .description(
      "merge adapters into one: exactly (cat), optimally at a rank (svd), by LoRA-LEGO clustering (lego), TIES/DARE, or federated averaging (ffa, fair)",
    )
    .argument("<adapter...>", "PEFT directories, .safetensors files, or - for stdin (once)")
    .requiredOption("-o, --output <out>", "output: a directory or .safetensors file (PEFT), a .safetensors file (kohya), or - for stdout")
    .addOption(new Option("--method <method>", "how to merge").choices([...MERGE_METHODS]).default("svd"))
    .option(
      "--rank <K>",
      "output rank (svd, ties/dare, ffa --project) or number of clusters k (lego); default: the largest input rank",
      parseIntArg("--rank", 1),
    )
    .option("--weights <w1,w2,...>", "one weight per input (default 1/N each); the target is Σ wᵢ·ΔWᵢ (lego: k-means sample weights)", parseWeights)
    .addOption(new Option("--passthrough <policy>", "passthrough tensors that differ between inputs").choices(["error", "first", "drop"]).default("error"))
    .addOption(new Option("--to <format>", "output format (default: the first input's)").choices(["peft", "kohya", "diffusers"]))
    .option("--density <D>", "ties/dare: fraction of ΔW entries kept, in (0, 1]", parseFloatArg("--density", 0, 1, true), MERGE_DEFAULTS.density)
    .addOption(
      new Option("--ties-mode <mode>", "sign election: peft (unweighted, mean over agreeing count) or mergekit (weighted, Σw normalised)")
        .choices(["peft", "mergekit"])
        .default("peft"),
    )
    .addOption(
      new Option("--majority-sign <m>", "ties/dare_ties: elect the sign of the sum (total) or the majority of signs (frequency)")
        .choices(["total", "frequency"])
        .default("total"),
    )
    .option("--oversample <p>", "randomized SVD oversampling (dense methods)", parseIntArg("--oversample", 0), MERGE_DEFAULTS.oversample)
    .option("--power-iters <q>", "randomized SVD power iterations (dense methods)", parseIntArg("--power-iters", 0), MERGE_DEFAULTS.powerIters)
    .option("--no-param-reweight", "lego: no parameter (cluster-norm) reweighting")
    .option("--no-output-reweight", "lego: no output (√(r_ref/k)) reweighting")
    .addOption(new Option("--param-norm <norm>", "lego: norm of the parameter reweighting").choices(["inf", "2"]).default("inf"))
    .option("--sign-canonicalize", "lego: flip each rank unit so the largest |entry| of its A row is positive", false)
    .option("--n-init <N>", "lego: k-means++ restarts", parseIntArg("--n-init", 1), MERGE_DEFAULTS.nInit)
    .option("--max-iter <N>", "lego: Lloyd iterations per restart", parseIntArg("--max-iter", 1), MERGE_DEFAULTS.maxIter)
    .option("--tol <X>", "lego: k-means tolerance, relative to the mean feature variance (sklearn)", parseFloatArg("--tol", 0), MERGE_DEFAULTS.tol)
    .option("--ref-rank <R>", "lego: r_ref of the output reweighting (default: mean input rank)", parseFloatArg("--ref-rank", 0, Infinity, true))
    .option("--project", "ffa: when the inputs' A differ, project every ΔW onto a shared row space (approximate)", false)
    .option("--ffa-tol <X>", "ffa: how far A may differ between inputs, relative to max|A|", parseFloatArg("--ffa-tol", 0), MERGE_DEFAULTS.ffaTol)
    .addOption(
      new Option("--fair-solver <s>", "fair: closed-form ridge or the paper's cosine objective by Adam").choices(["ridge", "cosine-sgd"]).default("ridge"),
    )
    .option("--fair-lambda <L>", "fair: regularisation λ", parseFloatArg("--fair-lambda", 0), MERGE_DEFAULTS.fairLambda)
    .option("--fair-steps <N>", "fair --fair-solver cosine-sgd: optimisation steps", parseIntArg("--fair-steps", 0), MERGE_DEFAULTS.fairSteps)
    .option(
      "--fair-lr <X>",
      "fair --fair-solver cosine-sgd: Adam step size relative to RMS(B̄)",
      parseFloatArg("--fair-lr", 0, Infinity, true),
      MERGE_DEFAULTS.fairLr,
    )
    .addHelpText(
      "after",
      [
        "",
        "Methods (target T = Σ wᵢ·sᵢ·Bᵢ·Aᵢ; every run reports per module ‖ΔW_out − T‖/‖T‖):",
        "  cat              exact: factors concatenated, rank Σ rᵢ",
        "  svd              optimal rank-K approximation of T from the stacked factors (default)",
        "  lego             LoRA-LEGO: k-means over all rank units, dual reweighting",
        "  linear           PEFT's factor-wise weighted average (approximate, for parity)",
        "  ties, dare, dare_ties, magnitude_prune",
        "                   on the dense ΔW per module, back to rank K by randomized SVD (--seed)",
        "  ffa              FFA-LoRA: inputs share A, B averaged (exact); --project otherwise",
        "  fair             LoRA-FAIR: averaged A and B plus a residual correction of B",
        "",
        "Examples:",
        "  lora merge a/ b/ --method cat -o merged/",
        "  lora merge a/ b/ c/ --method lego --rank 16 --seed 1 -o merged/",
        "  lora merge a/ b/ --method ties --density 0.3 --weights 0.7,0.3 -o merged/ --json",
        FAMILY_HELP,
      ].join("\n"),
    )
    .action(async (inputs: string[], opts: Record<string, unknown>, cmd: Command) => {
      const g = globals(opts);
      const output = opts["output"] as string;
      if (g.json && output === "-") throw new UsageError("--json cannot be combined with -o - (standard output carries the file)");
      const method = opts["method"] as MergeMethod;
      const given = (k: string) => cmd.getOptionValueSource(k) === "cli";
      const ignored = Object.entries(APPLIES)
        .filter(([k, ms]) => given(k) && !ms.includes(method))
        .map(([k]) => "--" + k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()));
      const o: MergeOptions = {
        inputs,
        output,
        method,
        seed: g.seed,
        force: g.force,
        passthrough: opts["passthrough"] as MergeOptions["passthrough"],
        ...(opts["to"] !== undefined ? { to: opts["to"] as "peft" | "kohya" | "diffusers" } : {}),
        ...(opts["rank"] !== undefined ? { rank: opts["rank"] as number } : {}),
        ...(opts["weights"] !== undefined ? { weights: opts["weights"] as number[] } : {}),
        density: opts["density"] as number,
        tiesMode: opts["tiesMode"] as MergeOptions["tiesMode"],
        majoritySign: opts["majoritySign"] as MergeOptions["majoritySign"],
        oversample: opts["oversample"] as number,
        powerIters: opts["powerIters"] as number,
        paramReweight: opts["paramReweight"] !== false,
        outputReweight: opts["outputReweight"] !== false,
        paramNorm: opts["paramNorm"] as "inf" | "2",
        signCanonicalize: !!opts["signCanonicalize"],
        nInit: opts["nInit"] as number,
        maxIter: opts["maxIter"] as number,
        tol: opts["tol"] as number,
        ...(opts["refRank"] !== undefined ? { refRank: opts["refRank"] as number } : {}),
        project: !!opts["project"],
        ffaTol: opts["ffaTol"] as number,
        fairSolver: opts["fairSolver"] as MergeOptions["fairSolver"],
        fairLambda: opts["fairLambda"] as number,
        fairSteps: opts["fairSteps"] as number,
        fairLr: opts["fairLr"] as number,
      };
      const backend = await backendFor(ctx, g);
      const { runMerge } = await import("./run.js");
      const report = await withProgress(ctx, g, `merge (${method})`, (tick) =>
        runMerge(o, { backend, stdin: ctx.stdin, stdout: ctx.stdout, onModule: (d, n) => tick(d, n, "modules") }),
      );
      if (ignored.length) report.notes.push(`${ignored.join(", ")} ${ignored.length === 1 ? "has" : "have"} no effect with --method ${method}`);
      printWriteReport(ctx, g, report);
    });
}
