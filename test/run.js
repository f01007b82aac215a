#!/usr/bin/env node
// Runs every compiled *.test.js under dist/ with node's own test runner (spec reporter, so the
// closing "ℹ pass N / ℹ fail N" lines are printed). `node test/run.js inspect` runs only the
// files whose path contains "inspect". Build first (`npm test` does).
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const filters = process.argv.slice(2);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith(".test.js")) files.push(relative(root, p));
  }
})(join(root, "dist"));
files.sort();
const chosen = filters.length ? files.filter((f) => filters.some((x) => f.includes(x))) : files;
if (chosen.length === 0) {
  console.error("no test files matched");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-reporter=spec", "--test-concurrency=2", ...chosen], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, LORA_TEST: "1" },
});
process.exit(r.status ?? 1);
