// Paths tests need: the repository root, the shipped fixtures and ../shared (real adapters).
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

function findRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, "package.json"))) {
    const up = dirname(d);
    if (up === d) throw new Error("repository root not found");
    d = up;
  }
  return d;
}

export const repoRoot = findRoot();
export const fixturesDir = join(repoRoot, "fixtures");
/** ../shared beside the checkout (CI lays it there); LORA_SHARED overrides. */
export const sharedDir = resolve(process.env.LORA_SHARED ?? join(repoRoot, "..", "shared"));
export const realDir = join(sharedDir, "fixtures", "real");
export const loraBin = join(repoRoot, "bin", "lora.js");
