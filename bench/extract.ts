// Benchmark of `lora extract` and `lora apply` (not a test):
//   node dist/bench/extract.js [--dir DIR] [--rank 64] [--only 7b|1b] [--python /usr/bin/python3] [--clean]
//
// Generates two model pairs (test/models.ts; base and a fine-tune whose every linear weight moved
// by a rank-128 change with σ decaying as 0.97^c plus full-rank noise 1e-4, then rounded to BF16):
//   7b: a 2-layer Llama-7B-shaped pair (hidden 4096, MLP 11008, 32 heads; vocab cut to 256 so that
//       embed_tokens and lm_head stay small), one model.safetensors each, BF16, 0.81 GB per model;
//   1b: a 16-layer Llama-3.2-1B-shaped pair (hidden 2048, MLP 8192, GQA k/v 512, vocab 256),
//       4 shards + model.safetensors.index.json, BF16, 1.9 GB per model.
// Then, one after the other in one run (wall time and peak RSS from /usr/bin/time -v):
//  1. `lora extract --rank R` on the whole pair, and with --low-memory;
//  2. on a subset of weights (one of each shape), `lora extract --rank R --modules …` and the dense
//     route (bench/extract_dense.py: float32 ΔW + numpy economy SVD per weight, as kohya's and
//     mergekit's scripts do), side by side, with both errors; the whole dense route is that
//     subset's SVD time scaled by the number of weights of each shape (stated in the output);
//  3. `lora apply` of the extracted adapter against `cp -r` of the base directory.
// Prints markdown; the figures in docs/BENCHMARKS.md were pasted from it.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveBackend } from "../linalg/backend.js";
import { familyTensors, writeGeneratedModel, type PairSpec } from "../test/models.js";
import { arg } from "./args.js";
import { timed } from "./timed.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const loraBin = join(root, "bin", "lora.js");

const f = (x: number, d = 2) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(d));

interface Pair {
  key: string;
  title: string;
  spec: PairSpec;
  shards: number;
  subset: string;
  /** The smallest weight: extracting it alone measures the process's floor of peak RSS. */
  floor: string;
}

const CHANGE = { rank: 128, decay: 0.97, noise: 1e-4 };
const PAIRS: Pair[] = [
  {
    key: "7b",
    title: "2-layer Llama-7B-shaped pair (BF16, single file)",
    shards: 1,
    spec: { family: "llama", size: { layers: 2, hidden: 4096, inter: 11008, vocab: 256 }, dtype: "BF16", seed: 7, ...CHANGE },
    subset: "^model\\.layers\\.0\\.(self_attn\\.q_proj|mlp\\.gate_proj|mlp\\.down_proj)$",
    floor: "^lm_head$",
  },
  {
    key: "1b",
    title: "16-layer Llama-1B-shaped pair (BF16, 4 shards)",
    shards: 4,
    spec: { family: "llama", size: { layers: 16, hidden: 2048, inter: 8192, vocab: 256, kv: 512 }, dtype: "BF16", seed: 1, ...CHANGE },
    subset: "^model\\.layers\\.0\\.(self_attn\\.q_proj|self_attn\\.k_proj|mlp\\.gate_proj|mlp\\.down_proj)$",
    floor: "^lm_head$",
  },
];

/** Shape key of a weight (rows×cols of ΔW as stored). */
const shapeKey = (s: number[]) => s.join("×");

async function main(): Promise<void> {
  const dir = arg("--dir", "/tmp/lora-bench-extract"),
    rank = Number(arg("--rank", "64"));
  const python = arg("--python", existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
  const only = arg("--only", "");
  mkdirSync(dir, { recursive: true });
  const be = (await resolveBackend("auto")).backend;
  const out: string[] = [];
  out.push(
    `Machine: ${cpus().length} × ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, backend ${be.name} (${be.detail}); load average at start ${loadavg()[0]!.toFixed(1)}. Rank ${rank}.`,
    "",
  );
  for (const p of PAIRS) {
    if (only && p.key !== only) continue;
    const base = join(dir, `${p.key}-base`),
      tuned = join(dir, `${p.key}-tuned`);
    for (const [d, t] of [
      [base, false],
      [tuned, true],
    ] as const) {
      if (existsSync(join(d, "config.json"))) continue;
      process.stderr.write(`generating ${d}\n`);
      await writeGeneratedModel(d, p.spec, t, p.shards, be);
    }
    if (process.argv.includes("--generate-only")) continue;
    // The models just written must not be written back to disk during the timed runs, and every
    // run (lora's, the dense route's, cp's) reads them from a warm page cache: one read first.
    execFileSync("sync");
    execFileSync("sh", ["-c", `cat "${base}"/* "${tuned}"/* > /dev/null`]);
    const tensors = familyTensors(p.spec.family, p.spec.size).filter((t) => t.target && !/embed_tokens/.test(t.name));
    const largest = Math.max(...tensors.map((t) => t.shape[0]! * t.shape[1]! * 2));
    const adapter = join(dir, `${p.key}-r${rank}`);
    rmSync(adapter, { recursive: true, force: true });
    const whole = timed(process.execPath, [loraBin, "extract", base, tuned, "--rank", String(rank), "-o", adapter, "--json"]);
    // --low-memory: large weights re-read for every product instead of held (docs/algorithms.md §13).
    const lowOut = join(dir, `${p.key}-r${rank}-low`);
    rmSync(lowOut, { recursive: true, force: true });
    const low = timed(process.execPath, [loraBin, "extract", base, tuned, "--rank", String(rank), "--low-memory", "-o", lowOut, "-q"]);
    rmSync(lowOut, { recursive: true, force: true });
    // The process's own floor: the same command on the smallest weight of the pair (Node, the
    // command's modules, BLAS and the models' headers), to tell what grows with the tensors.
    const floorOut = join(dir, `${p.key}-floor`);
    rmSync(floorOut, { recursive: true, force: true });
    const floor = timed(process.execPath, [loraBin, "extract", base, tuned, "--rank", "8", "--modules", p.floor, "-o", floorOut, "-q"]);
    rmSync(floorOut, { recursive: true, force: true });
    const rep = JSON.parse(whole.stdout || "{}") as { modules?: { name: string; relative_error: number; power_iterations: number; excess_estimate: number }[] };
    const sub = join(dir, `${p.key}-sub`);
    rmSync(sub, { recursive: true, force: true });
    const mine = timed(process.execPath, [loraBin, "extract", base, tuned, "--rank", String(rank), "--modules", p.subset, "-o", sub, "--json"]);
    const dense = timed(python, [join(root, "bench", "extract_dense.py"), base, tuned, String(rank), p.subset]);
    const mineRep = JSON.parse(mine.stdout || "{}") as { modules: { name: string; relative_error: number }[] };
    const denseRep = JSON.parse(dense.stdout || "{}") as {
      weights: { name: string; shape: number[]; svd_seconds: number; relative_error: number }[];
      seconds: number;
    };
    // Whole dense route: each subset weight's SVD time × the weights of its shape.
    const count = new Map<string, number>();
    for (const t of tensors) {
      const k = shapeKey(t.shape);
      count.set(k, (count.get(k) ?? 0) + 1);
    }
    let denseWhole = 0;
    const bySub = new Map<string, number>();
    for (const w of denseRep.weights) bySub.set(shapeKey(w.shape), w.svd_seconds);
    let scaled = 0;
    for (const [k, n] of count)
      if (bySub.has(k)) {
        denseWhole += n * bySub.get(k)!;
        scaled += n;
      }
    const mod = new Map(mineRep.modules.map((m) => [m.name, m]));
    out.push(`### ${p.title}`, "");
    out.push(
      `${tensors.length} weights changed (rank-${CHANGE.rank} change, σ ∝ ${CHANGE.decay}^c, noise ${CHANGE.noise}); largest weight ${(largest / 1e6).toFixed(1)} MB in BF16.`,
      "",
    );
    out.push(
      "| weights | lora extract (s) | dense route (s) | speed-up | lora rel. error | dense rel. error (optimum) | peak RSS lora / dense (MB) |",
      "|---|---|---|---|---|---|---|",
    );
    const worst = Math.max(...denseRep.weights.map((w) => mod.get(w.name)!.relative_error / w.relative_error - 1));
    out.push(
      `| subset: ${denseRep.weights.map((w) => `${w.name.split(".").slice(-1)[0]} ${w.shape.join("×")}`).join(", ")} | ${f(mine.seconds)} | ${f(dense.seconds)} | ${f(dense.seconds / mine.seconds)}× | ${denseRep.weights.map((w) => mod.get(w.name)!.relative_error.toFixed(5)).join(", ")} | ${denseRep.weights.map((w) => w.relative_error.toFixed(5)).join(", ")} | ${f(mine.maxRssMb, 0)} / ${f(dense.maxRssMb, 0)} |`,
    );
    out.push(
      `| all ${tensors.length} | ${f(whole.seconds)} | ${f(denseWhole)} (SVD time only, scaled from the subset by shape, ${scaled} weights; ${tensors.length - scaled} smaller ones not counted) | ${f(denseWhole / whole.seconds)}× | total ${rep.modules ? Math.sqrt(rep.modules.reduce((s, m) => s + m.relative_error ** 2, 0) / rep.modules.length).toFixed(5) : "?"} (rms) | | ${f(whole.maxRssMb, 0)} / — |`,
    );
    out.push(
      `| all ${tensors.length}, \`--low-memory\` | ${f(low.seconds)} | | ${f(denseWhole / low.seconds)}× | | | ${f(low.maxRssMb, 0)} / — (${((low.maxRssMb * 2 ** 20) / largest).toFixed(2)} × the largest weight) |`,
    );
    out.push(
      "",
      `Worst excess of lora's error over the dense optimum on the subset: ${(100 * worst).toFixed(4)}%; power iterations used: ${[...new Set((rep.modules ?? []).map((m) => m.power_iterations))].sort().join(", ")}; peak RSS ${f(whole.maxRssMb, 0)} MB = ${((whole.maxRssMb * 2 ** 20) / largest).toFixed(2)} × the largest weight; the same command on the smallest weight (${p.floor}) peaks at ${f(floor.maxRssMb, 0)} MB, so ${f(whole.maxRssMb - floor.maxRssMb, 0)} MB = ${(((whole.maxRssMb - floor.maxRssMb) * 2 ** 20) / largest).toFixed(2)} × the largest weight above that floor.`,
      "",
    );
    // apply vs cp
    const merged = join(dir, `${p.key}-merged`),
      copied = join(dir, `${p.key}-copy`);
    rmSync(merged, { recursive: true, force: true });
    rmSync(copied, { recursive: true, force: true });
    const cp = timed("cp", ["-r", base, copied]);
    const ap = timed(process.execPath, [loraBin, "apply", base, adapter, "-o", merged, "--json"]);
    rmSync(copied, { recursive: true, force: true });
    // lora fsyncs what it writes; cp does not, so also cp followed by sync of the copied files
    const cps = timed("sh", ["-c", `cp -r "${base}" "${copied}" && sync "${copied}"/*`]);
    out.push("| apply | lora apply (s) | cp -r (s) | cp -r + sync (s) | ratio to cp / to cp + sync | peak RSS (MB) |", "|---|---|---|---|---|---|");
    out.push(
      `| rank-${rank} adapter into the base | ${f(ap.seconds)} | ${f(cp.seconds)} | ${f(cps.seconds)} | ${f(ap.seconds / cp.seconds)}× / ${f(ap.seconds / cps.seconds)}× | ${f(ap.maxRssMb, 0)} |`,
      "",
    );
    for (const d of [merged, copied, sub]) rmSync(d, { recursive: true, force: true });
  }
  process.stdout.write(out.join("\n") + "\n");
  if (process.argv.includes("--clean")) rmSync(dir, { recursive: true, force: true });
}

await main();
