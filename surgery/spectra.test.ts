// moduleSpectra's scheduling: a module refused for NaN stops the adapter, and the modules whose
// spectra were started ahead of it are waited for before the backend's lanes end (no native call
// may still run when the BLAS thread count is restored).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAdapter } from "../formats/adapter/index.js";
import { Rng } from "../linalg/random.js";
import { testBackends } from "../test/backends.js";
import { smallModules, writeSmallAdapter } from "../test/small-adapter.js";
import { moduleSpectra } from "./spectra.js";
import { slowedBackend } from "../test/slowed-backend.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`spectra.test seed=${seed}`);
const work = mkdtempSync(join(tmpdir(), "lora-spectra-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

test("a NaN in the first module: the spectra started ahead settle before the lanes end", async () => {
  const rng = new Rng(seed);
  const mods = smallModules(rng, 5, false, { minDim: 8, spread: 20, maxRank: 6 });
  mods[0]!.A[2] = Number.NaN;
  const path = join(work, "nan-first");
  await writeSmallAdapter(path, false, mods);
  for (const be of await testBackends()) {
    const { backend, stats } = slowedBackend(be, ["factorSpectrum"], "fast");
    const a = await loadAdapter(path);
    try {
      await assert.rejects(moduleSpectra(a, backend), (e: Error) => /holds NaN at element 2/.test(e.message), be.name);
    } finally {
      await a.file.close();
    }
    assert.ok(stats.calls > 1, `${be.name}: modules were started ahead (${stats.calls} calls)`);
    assert.equal(stats.atEnd, 0, `${be.name}: no call in flight when the lanes ended`);
  }
});
