// Benchmark of `lora inspect` across backends (issue 3 "whole-command effect"): a Llama-7B-shaped
// rank-64 adapter (224 modules, F16), `lora inspect --json` with --backend cpu and --backend js,
// interleaved runs in one session, medians. `node dist/bench/inspect.js [--layers 32] [--runs 3]
// [--write-docs]` — --write-docs replaces the "## inspect across backends" section of docs/BENCHMARKS.md.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeBenchSection } from "./docs.js";
import { generateLlamaAdapter } from "./llama-adapter.js";
import { arg } from "./args.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const layers = Number(arg("--layers", "32")),
  runs = Number(arg("--runs", "3"));

const dir = mkdtempSync(join(tmpdir(), "lora-bench-inspect-"));
try {
  await generateLlamaAdapter(join(dir, "a"), layers, 64);
  const times: Record<string, number[]> = { cpu: [], js: [] };
  for (let i = 0; i < runs; i++) {
    for (const be of ["cpu", "js"]) {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(process.execPath, [join(root, "bin", "lora.js"), "inspect", join(dir, "a"), "--json", "--backend", be], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      if (r.status !== 0) throw new Error(`${be}: ${r.stderr}`);
      times[be]!.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const c = med(times["cpu"]!),
    j = med(times["js"]!);
  const md = `## inspect across backends\n\nMachine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, load ${loadavg()[0]!.toFixed(1)}; \`node dist/bench/inspect.js --layers ${layers} --runs ${runs}\`. Input: synthetic Llama-7B-shaped PEFT adapter, ${layers * 7} modules, rank 64, F16. \`lora inspect --json\`, interleaved runs, medians. Target (issue 3): cpu ≥ 3× faster than js.\n\n| backend | median s | speed-up vs js |\n|---|---|---|\n| cpu | ${c.toFixed(2)} | ${(j / c).toFixed(2)}× |\n| js | ${j.toFixed(2)} | 1× |\n`;
  console.log(md);
  if (process.argv.includes("--write-docs")) writeBenchSection("inspect across backends", md);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
