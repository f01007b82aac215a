// PEFT itself loads the PEFT directories we write and computes the ΔW we intended (runs only where
// its prerequisites exist; see test/peft-check.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

import { join } from "node:path";
import { fixturesDir, loraBin, realDir } from "../paths.js";
import { peftCheck, peftCheckUnavailable } from "../peft-check.js";
import { tempDir } from "../temp-dir.js";

const skip = peftCheckUnavailable();

function lora(...args: string[]): void {
  const r = spawnSync(process.execPath, [loraBin, ...args], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
}

test("PEFT loads converted adapters with the intended ΔW (rsLoRA, patterns, fan_in_fan_out, kohya round trip)", { skip }, () => {
  const d = tempDir("lora-e2e-peft-");
  lora("convert", join(fixturesDir, "peft-rslora"), "--to", "peft", "-o", join(d, "rs"));
  lora("convert", join(realDir, "gpt2-tigrinya"), "--to", "kohya", "-o", join(d, "g.safetensors"));
  lora("convert", join(d, "g.safetensors"), "--to", "peft", "-o", join(d, "g"));
  // kohya-dylora: linear only (peft-check builds Linear/Conv1D layers, not Conv2d).
  lora("convert", join(fixturesDir, "kohya-dylora.safetensors"), "--to", "peft", "-o", join(d, "k"));
  for (const dir of ["rs", "g", "k"]) {
    const r = peftCheck(join(d, dir));
    assert.ok(r.modules > 0);
    assert.ok(r.max_rel <= 1e-6, `${dir}: PEFT ΔW differs from ours by ${r.max_rel}`);
    assert.deepEqual(r.peft_extra, [], `${dir}: PEFT created LoRA layers we did not write`);
  }
});
