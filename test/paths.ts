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

/**
 * The skip reason of a test that needs the real adapters of ../shared/fixtures/real (not part of
 * the repository; CI lays ../shared beside the checkout), or false when they are there.
 */
export function needsReal(...names: string[]): string | false {
  const missing = names.find((n) => !existsSync(join(realDir, n)));
  return missing === undefined ? false : `real adapter ${missing} not found under ${realDir} (../shared is optional)`;
}
export const loraBin = join(repoRoot, "bin", "lora.js");
