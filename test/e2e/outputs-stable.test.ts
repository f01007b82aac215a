// Byte identity of every output: runs the command set over the shipped fixtures (inspect --json,
// convert to each format, truncate by rank/energy/budget/prefix, prune sora/loraprune/modules,
// merge with every method and fixed seeds) on the js backend and compares the sha256 of every file
// written, and of each --json report (temporary paths masked), against outputs-stable.json.
// The hashes were recorded from the code before the layers were moved (issue 16), so a moved or
// refactored line that changes one byte of an output fails here. Re-recorded since: the --json
// reports of "merge lego #5/#6" (k-means in Gram form: the js backend now reports the inertia from
// exact differences, as the native one does; last digits only, every tensor byte unchanged), and
// every truncate, prune and merge report when `totals.bytes` (the output's tensor bytes) was added
// (session 15: the reports otherwise identical field for field, every file hash unchanged), and
// the four "prune modules" reports when their norms came from the module spectra instead of a QR
// of the factors (last digits only, ≤ 1.2e-15 relative; every tensor byte unchanged), and the
// "merge cat #0" report when cat's error came from the rounding of its factors alone (session 16:
// 0 where the QR cores had reported ~3e-16 of float64 noise; every tensor byte unchanged), and every
// other merge report when errorOf took the stacked Grams block by block (session 16: errors and
// norms within 1.5e-14 relative of before; every tensor byte unchanged), and the three "merge svd"
// reports when svd's factors and error came from the Gram route (truncateFactors on the stacked
// factors: errors within 1.5e-9 relative, norms and energies equal; every tensor byte unchanged), and
// the "convert peft→diffusers" report when convert warned that diffusers loads no file of a
// non-diffusers model (its two new `warnings`; with them suppressed every hash matched as before),
// and that case's d.safetensors when lora_adapter_metadata began to carry modules_to_save next to the
// passthrough head (session 17: one metadata key more; the tensors as before).
// LORA_STABLE_WRITE=FILE writes the hashes to FILE instead of comparing (record anew, or compare two
// builds by hand); LORA_STABLE_BIN=PATH runs another build's bin/lora.js; LORA_STABLE_BACKEND=cpu
// runs another backend (its hashes depend on the machine's BLAS, so they are only compared by hand).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, test } from "node:test";
import { loraBin, repoRoot } from "../paths.js";

const bin = process.env.LORA_STABLE_BIN ?? loraBin;
const backend = process.env.LORA_STABLE_BACKEND ?? "js";
const writeTo = process.env.LORA_STABLE_WRITE;
const recordedPath = join(repoRoot, "test", "e2e", "outputs-stable.json");
const tmp = mkdtempSync(join(tmpdir(), "lora-stable-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** One run: `args` with `$OUT` (this case's folder) and `$TMP` (the run's folder) substituted. */
interface Case {
  name: string;
  args: string[];
}

const FX = "fixtures";
const P = `${FX}/prune`;
const D = `${FX}/diffusers`;
const inspected = [
  `${FX}/example`,
  `${FX}/peft-dora`,
  `${FX}/peft-rslora`,
  `${FX}/peft-f16-embed-conv`,
  `${FX}/peft-bf16.safetensors`,
  `${FX}/kohya-sd.safetensors`,
  `${FX}/kohya-dylora.safetensors`,
  `${D}/sd15-second.safetensors`,
  `${D}/attn-processor-alphas.safetensors`,
  `${D}/text-encoder-attn-processor.safetensors`,
  `${D}/peft-style-metadata.safetensors`,
  `${P}/sora-checkpoint.safetensors`,
  `${P}/adapter-gqa`,
];

const cases: Case[] = [
  ...inspected.map((a) => ({ name: `inspect ${a}`, args: ["inspect", a, "--json"] })),
  { name: "inspect --budget ratio", args: ["inspect", `${FX}/example`, "--budget", "20", "--score", "ratio", "--json"] },
  { name: "inspect --budget params", args: ["inspect", `${FX}/kohya-sd.safetensors`, "--budget", "40", "--score", "params", "--min-rank", "1", "--json"] },
  { name: "inspect --energy", args: ["inspect", `${FX}/example`, "--energy", "0.8", "--json"] },
  { name: "inspect --plot svg", args: ["inspect", `${FX}/example`, "--budget", "20", "--plot", "$OUT/spectra.svg", "-q"] },
  // convert to each format
  { name: "convert peft→kohya", args: ["convert", `${FX}/example`, "--to", "kohya", "-o", "$OUT/k.safetensors", "--json"] },
  { name: "convert peft→diffusers", args: ["convert", `${FX}/example`, "--to", "diffusers", "-o", "$OUT/d.safetensors", "--json"] },
  { name: "convert peft(f16 embed conv)→kohya", args: ["convert", `${FX}/peft-f16-embed-conv`, "--to", "kohya", "-o", "$OUT/k.safetensors", "--json"] },
  { name: "convert kohya→peft", args: ["convert", `${FX}/kohya-sd.safetensors`, "--to", "peft", "-o", "$OUT/p", "--json"] },
  { name: "convert kohya→diffusers", args: ["convert", `${FX}/kohya-sd.safetensors`, "--to", "diffusers", "-o", "$OUT/d.safetensors", "--json"] },
  { name: "convert diffusers→kohya", args: ["convert", `${D}/sd15-second.safetensors`, "--to", "kohya", "-o", "$OUT/k.safetensors", "--json"] },
  { name: "convert diffusers→peft", args: ["convert", `${D}/attn-processor-alphas.safetensors`, "--to", "peft", "-o", "$OUT/p", "--json"] },
  { name: "convert diffusers→diffusers", args: ["convert", `${D}/text-encoder-attn-processor.safetensors`, "--to", "diffusers", "-o", "$OUT/d", "--json"] },
  // truncate
  { name: "truncate --rank", args: ["truncate", `${FX}/example`, "--rank", "4", "-o", "$OUT/a", "--json"] },
  {
    name: "truncate --rank all-in-up F16 kohya",
    args: ["truncate", `${FX}/example`, "--rank", "3", "--split", "all-in-up", "--dtype", "F16", "--to", "kohya", "-o", "$OUT/a.safetensors", "--json"],
  },
  { name: "truncate --rank rslora", args: ["truncate", `${FX}/peft-rslora`, "--rank", "2", "-o", "$OUT/a", "--json"] },
  { name: "truncate --rank bf16", args: ["truncate", `${FX}/peft-bf16.safetensors`, "--rank", "2", "-o", "$OUT/a.safetensors", "--json"] },
  { name: "truncate --rank f16 embed conv", args: ["truncate", `${FX}/peft-f16-embed-conv`, "--rank", "2", "-o", "$OUT/a", "--json"] },
  { name: "truncate --energy", args: ["truncate", `${FX}/example`, "--energy", "0.8", "-o", "$OUT/a.safetensors", "--json"] },
  {
    name: "truncate --energy min-rank",
    args: ["truncate", `${FX}/kohya-sd.safetensors`, "--energy", "0.9", "--min-rank", "2", "-o", "$OUT/a.safetensors", "--json"],
  },
  { name: "truncate --budget energy", args: ["truncate", `${FX}/example`, "--budget", "20", "-o", "$OUT/a", "--json"] },
  { name: "truncate --budget ratio", args: ["truncate", `${FX}/example`, "--budget", "20", "--score", "ratio", "--rho", "1.5", "-o", "$OUT/a", "--json"] },
  {
    name: "truncate --budget params",
    args: ["truncate", `${FX}/kohya-sd.safetensors`, "--budget", "40", "--score", "params", "-o", "$OUT/a.safetensors", "--json"],
  },
  {
    name: "truncate --kohya-compat --dynamic sv_fro",
    args: [
      "truncate",
      `${FX}/kohya-sd.safetensors`,
      "--kohya-compat",
      "--dynamic",
      "sv_fro",
      "--dynamic-param",
      "0.9",
      "--rank",
      "32",
      "-o",
      "$OUT/a.safetensors",
      "--json",
    ],
  },
  {
    name: "truncate --dynamic sv_ratio",
    args: ["truncate", `${FX}/kohya-sd.safetensors`, "--dynamic", "sv_ratio", "--dynamic-param", "4", "-o", "$OUT/a.safetensors", "--json"],
  },
  {
    name: "truncate --dynamic sv_cumulative",
    args: ["truncate", `${FX}/example`, "--dynamic", "sv_cumulative", "--dynamic-param", "0.7", "-o", "$OUT/a", "--json"],
  },
  { name: "truncate diffusers --rank", args: ["truncate", `${D}/sd15-second.safetensors`, "--rank", "2", "-o", "$OUT/a.safetensors", "--json"] },
  { name: "truncate prefix dylora", args: ["truncate", `${FX}/kohya-dylora.safetensors`, "--rank", "4", "-o", "$OUT/a.safetensors", "--json"] },
  {
    name: "truncate prefix kohya-train",
    args: [
      "truncate",
      `${FX}/kohya-dylora.safetensors`,
      "--method",
      "prefix",
      "--rank",
      "4",
      "--alpha-mode",
      "kohya-train",
      "-o",
      "$OUT/a.safetensors",
      "--json",
    ],
  },
  {
    name: "truncate prefix lycoris",
    args: ["truncate", `${FX}/kohya-dylora.safetensors`, "--method", "prefix", "--rank", "2", "--alpha-mode", "lycoris", "-o", "$OUT/a.safetensors", "--json"],
  },
  { name: "truncate prefix --unit", args: ["truncate", `${FX}/kohya-dylora.safetensors`, "--unit", "2", "-o", "$OUT/dy.safetensors", "--json"] },
  { name: "truncate prefix peft", args: ["truncate", `${FX}/example`, "--method", "prefix", "--rank", "3", "-o", "$OUT/a", "--json"] },
  // prune
  { name: "prune sora", args: ["prune", `${P}/sora-checkpoint.safetensors`, "--method", "sora", "-o", "$OUT/a", "--json"] },
  {
    name: "prune sora threshold fold A keep-other",
    args: ["prune", `${P}/sora-checkpoint.safetensors`, "--method", "sora", "--threshold", "0.05", "--fold", "A", "--keep-other", "-o", "$OUT/a", "--json"],
  },
  {
    name: "prune sora balanced kohya",
    args: [
      "prune",
      `${P}/sora-checkpoint.safetensors`,
      "--method",
      "sora",
      "--fold",
      "balanced",
      "--lora-alpha",
      "8",
      "--to",
      "kohya",
      "-o",
      "$OUT/a.safetensors",
      "--json",
    ],
  },
  { name: "prune sora peft", args: ["prune", `${P}/sora-peft`, "--method", "sora", "-o", "$OUT/a", "--json"] },
  {
    name: "prune loraprune mha",
    args: [
      "prune",
      `${P}/adapter-mha`,
      "--method",
      "loraprune",
      "--base",
      `${P}/llama-mha`,
      "--ratio",
      "0.5",
      "--base-out",
      "$OUT/model",
      "-o",
      "$OUT/adapter",
      "--json",
    ],
  },
  {
    name: "prune loraprune gqa grads",
    args: [
      "prune",
      `${P}/adapter-gqa`,
      "--method",
      "loraprune",
      "--base",
      `${P}/llama-gqa`,
      "--ratio",
      "0.5",
      "--grads",
      `${P}/grads-gqa.safetensors`,
      "--base-out",
      "$OUT/model.safetensors",
      "-o",
      "$OUT/a.safetensors",
      "--json",
    ],
  },
  {
    name: "prune loraprune gqa all skip none",
    args: [
      "prune",
      `${P}/adapter-gqa`,
      "--method",
      "loraprune",
      "--base",
      `${P}/llama-gqa`,
      "--ratio",
      "0.25",
      "--score-modules",
      "all",
      "--skip-layers",
      "none",
      "-o",
      "$OUT/adapter",
      "--json",
    ],
  },
  {
    name: "prune modules match",
    args: ["prune", `${FX}/kohya-sd.safetensors`, "--method", "modules", "--match", "conv", "-o", "$OUT/k.safetensors", "--json"],
  },
  { name: "prune modules layers", args: ["prune", `${P}/adapter-mha`, "--method", "modules", "--layers", "0", "-o", "$OUT/a", "--json"] },
  { name: "prune modules min-norm", args: ["prune", `${FX}/example`, "--method", "modules", "--min-norm", "0.9", "-o", "$OUT/a", "--json"] },
  {
    name: "prune modules energy share",
    args: ["prune", `${FX}/kohya-sd.safetensors`, "--method", "modules", "--min-energy-share", "0.01", "-o", "$OUT/a.safetensors", "--json"],
  },
  // merge: the second input is example truncated to rank 4 with all-in-up factors (other A and B)
  { name: "merge input", args: ["truncate", `${FX}/example`, "--rank", "4", "--split", "all-in-up", "-o", "$TMP/second", "-q"] },
  { name: "merge input, same rank", args: ["truncate", `${FX}/example`, "--rank", "8", "--split", "all-in-up", "-o", "$TMP/same-rank", "-q"] },
  ...mergeCases(),
];

function mergeCases(): Case[] {
  const two = [`${FX}/example`, "$TMP/second"];
  const runs: [string, string[]][] = [
    ["cat", []],
    ["svd", []],
    ["svd", ["--rank", "5", "--weights", "0.7,0.3"]],
    ["svd", ["--to", "kohya"]],
    ["linear", ["--weights", "0.6,0.4"]],
    ["lego", ["--rank", "6", "--seed", "3"]],
    ["lego", ["--rank", "5", "--seed", "1", "--no-param-reweight", "--param-norm", "2", "--sign-canonicalize", "--n-init", "3"]],
    ["ties", ["--density", "0.3", "--seed", "2"]],
    ["ties", ["--ties-mode", "mergekit", "--majority-sign", "frequency", "--seed", "5"]],
    ["dare", ["--density", "0.5", "--seed", "7"]],
    ["dare_ties", ["--density", "0.4", "--seed", "11"]],
    ["magnitude_prune", ["--density", "0.6", "--rank", "6"]],
    ["ffa", ["--project", "--rank", "6"]],
  ];
  const out: Case[] = runs.map(([m, extra], i) => ({
    name: `merge ${m} #${i}`,
    args: ["merge", ...two, "--method", m, ...extra, "-o", extra.includes("kohya") ? "$OUT/m.safetensors" : "$OUT/m", "--json"],
  }));
  // fair averages A, so its inputs share the rank
  out.push({
    name: "merge fair ridge",
    args: ["merge", `${FX}/example`, "$TMP/same-rank", "--method", "fair", "--fair-lambda", "0.05", "-o", "$OUT/m", "--json"],
  });
  out.push({
    name: "merge fair cosine-sgd",
    args: [
      "merge",
      `${FX}/example`,
      "$TMP/same-rank",
      "--method",
      "fair",
      "--fair-solver",
      "cosine-sgd",
      "--fair-steps",
      "40",
      "--seed",
      "4",
      "-o",
      "$OUT/m",
      "--json",
    ],
  });
  out.push({
    name: "merge ffa shared A",
    args: ["merge", `${FX}/example`, `${FX}/example`, "--method", "ffa", "--weights", "0.25,0.75", "-o", "$OUT/m", "--json"],
  });
  return out;
}

function filesUnder(dir: string): string[] {
  const found: string[] = [];
  (function walk(d: string) {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else found.push(p);
    }
  })(dir);
  return found;
}

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

function run(c: Case, i: number): Record<string, string> {
  const out = join(tmp, `case-${i}`);
  mkdirSync(out);
  const args = c.args.map((a) => a.replace("$OUT", out).replace("$TMP", tmp));
  const r = spawnSync(process.execPath, [bin, ...args, "--backend", backend], {
    cwd: repoRoot,
    env: { ...process.env, LORA_TEST: "1", NO_COLOR: "1" },
    maxBuffer: 64 << 20,
  });
  assert.equal(r.status, 0, `${c.name}: ${r.stderr}`);
  const hashes: Record<string, string> = {};
  const stdout = r.stdout.toString("utf8");
  if (stdout.length > 0) hashes.stdout = sha(stdout.split(tmp).join("$TMP"));
  for (const f of filesUnder(out)) hashes[relative(out, f)] = sha(readFileSync(f));
  return hashes;
}

test(`outputs are byte-identical to the recorded hashes (backend ${backend})`, () => {
  const got: Record<string, Record<string, string>> = {};
  cases.forEach((c, i) => {
    assert.ok(!(c.name in got), `duplicate case name ${c.name}`);
    got[c.name] = run(c, i);
  });
  if (writeTo) {
    writeFileSync(writeTo, `${JSON.stringify(got, null, 1)}\n`);
    console.log(`wrote ${Object.keys(got).length} cases to ${writeTo}`);
    return;
  }
  const want = JSON.parse(readFileSync(recordedPath, "utf8")) as Record<string, Record<string, string>>;
  assert.deepEqual(Object.keys(got), Object.keys(want), "the case list changed: record the hashes again from the landed code");
  for (const name of Object.keys(want)) assert.deepEqual(got[name], want[name], `${name}: outputs differ from the recorded ones`);
});
