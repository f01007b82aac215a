// Real torch.save checkpoints for the formats/torch tests, written by Debian's python3-torch
// (test/torch_checkpoints.py) once per test process into a temporary folder, with manifest.json
// holding each tensor's exact bytes as torch computes them. Tests skip where torch is missing.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./paths.js";
import { tempDir } from "./temp-dir.js";

const PY = "/usr/bin/python3";

export type Manifest = Record<string, Record<string, { dtype: string; shape: number[]; hex: string }>>;

let unavailable: string | false | undefined;
/** The reason torch checkpoints cannot be written here, or false. */
export function torchUnavailable(): string | false {
  unavailable ??= spawnSync(PY, ["-c", "import torch, numpy"], { stdio: "ignore" }).status === 0 ? false : "Debian python3-torch not installed";
  return unavailable;
}

let made: { dir: string; manifest: Manifest } | undefined;
/** The folder of checkpoints (written on first use) and their manifest. */
export function torchCheckpoints(): { dir: string; manifest: Manifest } {
  if (made) return made;
  const dir = tempDir("lora-torch-");
  const r = spawnSync(PY, [join(repoRoot, "test", "torch_checkpoints.py"), dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`torch_checkpoints.py failed:\n${r.stderr.slice(-2000)}`);
  made = { dir, manifest: JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest };
  return made;
}
