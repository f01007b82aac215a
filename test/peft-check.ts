// Running ../shared/tools/peft-check (PEFT's own LoRA loading code) on an adapter directory we
// wrote, and comparing PEFT's ΔW with ours. Available only where Debian's python3-torch is installed
// and a PEFT src/ checkout is found (LORA_PEFT_SRC, or /tmp/peft-src); tests skip otherwise.
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loraBin, repoRoot, sharedDir } from "./paths.js";
import { tempDir } from "./temp-dir.js";

const PY = "/usr/bin/python3";
const toolDir = join(sharedDir, "tools", "peft-check");

export function peftCheckUnavailable(): string | false {
  const src = process.env["LORA_PEFT_SRC"] ?? "/tmp/peft-src";
  if (!existsSync(join(toolDir, "peft_load.py"))) return "../shared/tools/peft-check not found";
  if (!existsSync(join(src, "peft"))) return `no PEFT src/ at ${src} (set LORA_PEFT_SRC)`;
  if (spawnSync(PY, ["-c", "import torch, numpy"], { stdio: "ignore" }).status !== 0) return "Debian python3-torch not installed";
  return false;
}

/** Load `dir` with PEFT; returns the worst relative difference between PEFT's ΔW and ours. */
export function peftCheck(dir: string): { modules: number; max_rel: number; peft_extra: string[] } {
  const src = process.env["LORA_PEFT_SRC"] ?? "/tmp/peft-src";
  const work = tempDir("lora-peftcheck-");
  const npz = join(work, "delta.npz");
  const load = spawnSync(PY, [join(toolDir, "peft_load.py"), src, dir, npz], { encoding: "utf8" });
  if (load.status !== 0) throw new Error(`PEFT failed to load ${dir}:\n${load.stderr.slice(-2000)}`);
  const insp = spawnSync(process.execPath, [loraBin, "inspect", dir, "--json", "--backend", "js"], { encoding: "utf8", maxBuffer: 1 << 28 });
  if (insp.status !== 0) throw new Error(`inspect failed: ${insp.stderr}`);
  const inspPath = join(work, "inspect.json");
  writeFileSync(inspPath, insp.stdout);
  const cmp = spawnSync(PY, [join(repoRoot, "test", "peft_compare.py"), dir, npz, inspPath], {
    encoding: "utf8",
    env: { ...process.env, PEFT_CHECK_DIR: toolDir },
  });
  if (cmp.status !== 0) throw new Error(`compare failed: ${cmp.stderr}`);
  return JSON.parse(cmp.stdout) as { modules: number; max_rel: number; peft_extra: string[] };
}

/** Run PEFT's loader on `dir` and return the .npz of its ΔW per module (keys: module names). */
export function peftDeltas(dir: string): string {
  const src = process.env["LORA_PEFT_SRC"] ?? "/tmp/peft-src";
  const npz = join(tempDir("lora-peftdelta-"), "delta.npz");
  const load = spawnSync(PY, [join(toolDir, "peft_load.py"), src, dir, npz], { encoding: "utf8" });
  if (load.status !== 0) throw new Error(`PEFT failed to load ${dir}:\n${load.stderr.slice(-2000)}`);
  return npz;
}
