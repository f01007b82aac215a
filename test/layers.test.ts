// The layer rules of issue 16 (.dependency-cruiser.cjs), checked by dependency-cruiser: no import
// cycles, formats/ and linalg/ apart, common/ at the ground, surgery/ between the commands and
// formats/linalg, no command importing another. The second test plants one violation of each rule
// in a scratch tree and expects every one to be reported, so that a rule cannot pass vacuously.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { repoRoot } from "./paths.js";

const depcruise = join(repoRoot, "node_modules", "dependency-cruiser", "bin", "dependency-cruise.mjs");
const config = join(repoRoot, ".dependency-cruiser.cjs");
const LAYERS = ["bin", "commands", "common", "formats", "linalg", "surgery", "test", "bench", "fixtures"];

function cruise(cwd: string, dirs: string[]): { status: number; out: string } {
  const r = spawnSync(process.execPath, [depcruise, ...dirs, "--config", config, "--output-type", "err"], { cwd, encoding: "utf8", maxBuffer: 16 << 20 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

test("the import graph keeps the layer rules (.dependency-cruiser.cjs)", () => {
  const r = cruise(repoRoot, LAYERS);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /no dependency violations found/);
});

test("each rule reports a planted violation", () => {
  const dir = mkdtempSync(join(tmpdir(), "lora-layers-"));
  try {
    const files: Record<string, string> = {
      "formats/reads.ts": 'import { x } from "../linalg/arrays.js";\nexport const y = x;\n',
      "linalg/arrays.ts": 'import { z } from "../formats/bytes.js";\nexport const x = z;\n',
      "formats/bytes.ts": 'import { w } from "../surgery/domain.js";\nexport const z = w;\n',
      "surgery/domain.ts": 'import { v } from "../commands/one/run.js";\nexport const w = v;\n',
      "commands/one/run.ts": 'import { u } from "../two/run.js";\nexport const v = u;\n',
      "commands/two/run.ts": 'import { t } from "../../common/ground.js";\nexport const u = t;\n',
      "common/ground.ts": 'import { s } from "../bin/main.js";\nexport const t = s;\n',
      "bin/main.ts": 'import { y } from "../formats/reads.js";\nexport const s = y;\n',
      "tsconfig.json": JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", strict: true } }),
    };
    for (const [p, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, p)), { recursive: true });
      writeFileSync(join(dir, p), text);
    }
    const r = cruise(dir, ["bin", "commands", "common", "formats", "linalg", "surgery"]);
    assert.notEqual(r.status, 0, r.out);
    for (const rule of [
      "no-circular",
      "formats-not-linalg",
      "linalg-not-formats",
      "common-is-the-ground",
      "lower-layers-not-surgery",
      "nothing-below-commands-imports-commands",
      "no-command-imports-another",
      "nothing-imports-bin",
    ]) {
      assert.match(r.out, new RegExp(`error ${rule}:`), `${rule} was not reported:\n${r.out}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
