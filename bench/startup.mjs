#!/usr/bin/env node
// Start-up benchmark (issue 2): wall time of `lora inspect` on a real 3 MB adapter against
// `node -e 0`, interleaved runs in one session, medians. Writes the "## inspect start-up" section of
// docs/BENCHMARKS.md. Run: npm run build && node bench/startup.mjs [runs]
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const runs = Number(process.argv[2] ?? 15);
const adapter = join(root, "..", "shared", "fixtures", "real", "distilbert-imdb");
const cases = {
  "node -e 0": [process.execPath, ["-e", "0"]],
  "lora inspect (auto backend)": [process.execPath, [join(root, "bin", "lora.js"), "inspect", adapter]],
  "lora inspect --json --backend js": [process.execPath, [join(root, "bin", "lora.js"), "inspect", adapter, "--json", "--backend", "js"]],
  "lora inspect --backend cpu": [process.execPath, [join(root, "bin", "lora.js"), "inspect", adapter, "--backend", "cpu"]],
};
const times = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let i = 0; i < runs; i++) {
  for (const [name, [cmd, args]] of Object.entries(cases)) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) {
      console.error(`${name} failed: ${r.stderr}`);
      process.exit(1);
    }
    times[name].push(ms);
  }
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const base = median(times["node -e 0"]);
const size = statSync(join(adapter, "adapter_model.safetensors")).size;
let table = `## inspect start-up\n\nMachine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Node ${process.version}. ${runs} interleaved runs each, medians, one session (\`node bench/startup.mjs\`). Input: the real adapter distilbert-imdb from the optional fixtures beside the checkout (${(size / 1e6).toFixed(1)} MB, 12 modules). Target (issue 2): ≤ 3× \`node -e 0\`.\n\n| command | median ms | × node -e 0 |\n|---|---|---|\n`;
for (const [name, xs] of Object.entries(times)) table += `| ${name} | ${median(xs).toFixed(0)} | ${(median(xs) / base).toFixed(2)} |\n`;
console.log(table);
const { writeBenchSection } = await import("../dist/bench/docs.js");
writeBenchSection("inspect start-up", table);
