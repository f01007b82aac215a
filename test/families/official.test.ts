// Files written by the methods' own code (issue 14): PEFT's AdaLoRA (gen_adalora.py, PEFT itself),
// IncreLoRA's SVDLinear (gen_increlora.py) and LoRA-XS's initialisation on PEFT (gen_loraxs.py), each
// with the ΔW its own code computes (get_delta_weight / loraW) as the reference. Read ≤ 1e-6, spectra
// ≤ 1e-6·σ₁ of numpy's SVD of that ΔW, convert --to peft ≤ 1e-6 and loaded so by PEFT (peft-check).
// Needs Debian's python3-torch, a PEFT src/ (LORA_PEFT_SRC or /tmp/peft-src) and, for IncreLoRA and
// LoRA-XS, their checkouts under LORA_FAMILY_SRC (default /tmp/family-src/{IncreLoRA,LoRA-XS});
// nothing of theirs is part of this repository. Each test skips with one line when a piece is absent.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { runCli } from "../cli.js";
import { peftCheckUnavailable, peftDeltas } from "../peft-check.js";
import { repoRoot, sharedDir } from "../paths.js";
import { numpy } from "../reference.js";
import { assertDeltas, deltas, refSpectrum } from "./check.js";
import type { Ref } from "./files.js";
import { tempDir } from "../temp-dir.js";

const peftSrc = process.env["LORA_PEFT_SRC"] ?? "/tmp/peft-src";
const familySrc = process.env["LORA_FAMILY_SRC"] ?? "/tmp/family-src";
const checkDir = join(sharedDir, "tools", "peft-check");
const gen = (f: string) => join(repoRoot, "test", "families", f);

function unavailable(checkout?: string): string | false {
  const p = peftCheckUnavailable();
  if (p) return p;
  if (checkout && !existsSync(join(familySrc, checkout))) return `${checkout} checkout not found under ${familySrc} (set LORA_FAMILY_SRC)`;
  return false;
}

/** An .npz of dense matrices as references (module name → out×in). */
function npzRefs(npz: string): Map<string, Ref> {
  const got = numpy<Record<string, { shape: number[]; data: number[] }>>(
    "d = np.load(inp['npz'])\nprint(json.dumps({k: {'shape': list(d[k].shape), 'data': d[k].ravel().tolist()} for k in d.files}))",
    { npz },
  );
  return new Map(Object.entries(got).map(([k, v]) => [k, { out: v.shape[0]!, in: v.shape[1]!, W: Float64Array.from(v.data) }]));
}

function run(args: string[]): void {
  const r = spawnSync("/usr/bin/python3", args, { encoding: "utf8" });
  assert.equal(r.status, 0, `${args[0]} failed:\n${r.stderr.slice(-3000)}`);
}

async function check(input: string, refs: Map<string, Ref>, label: string): Promise<void> {
  assert.ok(refs.size > 0, `${label}: no reference modules`);
  // A module whose whole budget was pruned has ΔW = 0 in its own code, and is not listed by lora.
  const live = new Map([...refs].filter(([, r]) => r.W.some((x) => x !== 0)));
  const got = await deltas(input);
  assertDeltas(got, live, 1e-6, `${label} read`);
  for (const n of refs.keys()) if (!live.has(n)) assert.ok(!got.has(n), `${label}: ${n} has ΔW = 0 but is listed`);
  const insp = await runCli(["inspect", input, "--json", "--backend", "js"]);
  assert.equal(insp.code, 0, insp.err);
  const rep = JSON.parse(insp.out) as { modules: { name: string; singular_values: number[] }[] };
  for (const [name, r] of refs) {
    const want = refSpectrum(r);
    const m = rep.modules.find((x) => x.name === name);
    if (!m) {
      assert.ok(want[0]! <= 1e-6, `${label}: ${name} missing though its ΔW is not zero`);
      continue;
    }
    m.singular_values.forEach((s, i) => assert.ok(Math.abs(s - want[i]!) <= 1e-6 * want[0]!, `${label} ${name} σ${i + 1}: ${s} vs ${want[i]}`));
  }
  const out = join(tempDir("lora-official-"), "peft");
  const c = await runCli(["convert", input, "--to", "peft", "-o", out, "--backend", "js"]);
  assert.equal(c.code, 0, c.err);
  assertDeltas(await deltas(out), live, 1e-6, `${label} → peft`);
  const loaded = npzRefs(peftDeltas(out));
  assertDeltas(new Map([...loaded].map(([k, v]) => [k, v.W])), live, 1e-6, `${label} → peft, loaded by PEFT`);
}

test("AdaLoRA saved by PEFT itself (budget allocation, rank_pattern)", { skip: unavailable() }, async () => {
  const dir = join(tempDir("lora-adalora-"), "ada");
  run([gen("gen_adalora.py"), peftSrc, checkDir, dir, "7"]);
  await check(dir, npzRefs(join(dir, "peft_delta.npz")), "PEFT AdaLoRA");
});

test("IncreLoRA checkpoint from IncreLoRA's own SVDLinear (grown chunks)", { skip: unavailable("IncreLoRA") }, async () => {
  const dir = join(tempDir("lora-increlora-"), "inc");
  run([gen("gen_increlora.py"), join(familySrc, "IncreLoRA"), checkDir, dir, "7"]);
  await check(join(dir, "model.safetensors"), npzRefs(join(dir, "ref_delta.npz")), "IncreLoRA");
});

test("LoRA-XS adapter from LoRA-XS's own initialisation, saved by PEFT", { skip: unavailable("LoRA-XS") }, async () => {
  const dir = join(tempDir("lora-loraxs-"), "xs");
  run([gen("gen_loraxs.py"), join(familySrc, "LoRA-XS"), peftSrc, checkDir, dir, "7"]);
  await check(dir, npzRefs(join(dir, "ref_delta.npz")), "LoRA-XS");
});
