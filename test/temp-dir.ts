// Temporary folders for tests, removed when the test process exits: a run of the suite must not
// leave its scratch files behind (PEFT's ΔW of one peft-check alone is ~55 MB).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];
process.on("exit", () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh folder under the system's temp folder, named `prefix` + six random characters. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}
