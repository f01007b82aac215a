// Catalog mode of inspect: input expansion (directories of adapters, globs, --from-list), one row
// per adapter with totals and spectra-derived figures equal to independent dense float64 values,
// a bad file reported and skipped with exit 3 at the end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Rng } from "../linalg/random.js";
import { denseDelta, denseSingularValues } from "../test/reference.js";
import { testBackends } from "../test/backends.js";
import { summarizeCatalog } from "./catalog.js";
import { expandInputs } from "./catalog-inputs.js";
import { runCli as cli } from "../test/cli.js";
import { smallModules, type SmallModule, writeSmallAdapter } from "../test/small-adapter.js";
import { slowedBackend } from "../test/slowed-backend.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`catalog.test seed=${seed}`);
const work = mkdtempSync(join(tmpdir(), "lora-catalog-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

interface Made {
  path: string;
  mods: SmallModule[];
}

async function adapter(rng: Rng, path: string, kohya: boolean): Promise<Made> {
  const mods = smallModules(rng, 2 + rng.int(3), kohya, { minDim: 8, spread: 20, maxRank: 6 });
  await writeSmallAdapter(path, kohya, mods);
  return { path, mods };
}

test("catalog inspect: expansion, one row per adapter equal to dense float64 figures, bad file skipped", async () => {
  const rng = new Rng(seed);
  const dir = join(work, "catalog");
  mkdirSync(dir);
  const made: Made[] = [];
  for (let i = 0; i < 6; i++) made.push(await adapter(rng, join(dir, i % 2 ? `k${i}.safetensors` : `p${i}`), i % 2 === 1));
  writeFileSync(join(dir, "broken.safetensors"), Buffer.from("garbage"));
  writeFileSync(join(dir, "notes.txt"), "not an adapter");
  const all = await expandInputs([dir]);
  assert.deepEqual(all, [join(dir, "broken.safetensors"), ...made.map((m) => m.path).sort()].sort());
  assert.deepEqual(
    await expandInputs([join(dir, "k*.safetensors")]),
    made.filter((m) => m.path.endsWith(".safetensors")).map((m) => m.path),
  );
  const list = join(work, "list.txt");
  writeFileSync(list, `# two of them\n${made[0]!.path}\n\n${made[1]!.path}\n`);
  assert.deepEqual(await expandInputs([], [list]), [made[0]!.path, made[1]!.path]);

  for (const be of await testBackends()) {
    const rep = await summarizeCatalog(all, be);
    // Adapters finish in any order (a fixed number in flight), rows come back in input order.
    assert.deepEqual(
      rep.adapters.map((a) => a.path),
      all.filter((p) => !p.endsWith("broken.safetensors")),
    );
    const reversed = await summarizeCatalog([...all].reverse(), be);
    assert.deepEqual(
      reversed.adapters.map((a) => a.path),
      [...all].reverse().filter((p) => !p.endsWith("broken.safetensors")),
    );
    assert.equal(rep.failed.length, 1);
    assert.equal(rep.failed[0]!.path, join(dir, "broken.safetensors"));
    assert.equal(rep.failed[0]!.exit, 3);
    for (const m of made) {
      const row = rep.adapters.find((a) => a.path === m.path)!;
      assert.equal(row.modules, m.mods.length);
      assert.equal(
        row.total_rank,
        m.mods.reduce((s, x) => s + x.r, 0),
      );
      assert.equal(
        row.parameters,
        m.mods.reduce((s, x) => s + x.r * (x.out + x.inn), 0),
      );
      assert.equal(row.bytes, 4 * row.parameters);
      let eff = 0,
        total = 0,
        half = 0;
      for (const x of m.mods) {
        const S = denseSingularValues(denseDelta(x.B, x.A, x.out, x.r, x.inn, x.scale), x.out, x.inn).slice(0, x.r);
        const sum = S.reduce((a, b) => a + b, 0);
        eff += Math.exp(-S.reduce((h, s) => h + (s > 0 ? (s / sum) * Math.log(s / sum) : 0), 0));
        S.forEach((s, i) => {
          total += s * s;
          if (i < Math.max(1, Math.floor(x.r / 2))) half += s * s;
        });
      }
      assert.ok(Math.abs(row.effective_rank - eff) < 1e-8 * eff, `${be.name} ${m.path} eff ${row.effective_rank} vs ${eff}`);
      assert.ok(Math.abs(row.energy_at_half_rank - half / total) < 1e-9, `${be.name} ${m.path} half`);
    }
  }
});

test("lora inspect with several inputs: TSV rows, --json adapters[], skipped file named, exit 3; --budget refused", async () => {
  const rng = new Rng(seed + 1);
  const a = await adapter(rng, join(work, "ca"), false),
    b = await adapter(rng, join(work, "cb.safetensors"), true);
  const bad = join(work, "cbad.safetensors");
  writeFileSync(bad, Buffer.from("garbage"));
  const ok = await cli(["inspect", a.path, b.path, "--backend", "js"]);
  assert.equal(ok.code, 0, ok.err);
  assert.equal(ok.out.trim().split("\n").length, 2);
  assert.deepEqual(ok.out.split("\n")[0]!.split("\t").slice(0, 2), [a.path, "peft"]);
  const j = await cli(["inspect", a.path, b.path, bad, "--json", "--backend", "js"]);
  assert.equal(j.code, 3);
  const doc = JSON.parse(j.out);
  assert.equal(doc.adapters.length, 2);
  for (const k of ["path", "format", "modules", "total_rank", "parameters", "bytes", "effective_rank"]) assert.ok(k in doc.adapters[0], k);
  assert.equal(doc.failed[0].path, bad);
  const u = await cli(["inspect", a.path, b.path, "--budget", "4"]);
  assert.equal(u.code, 2);
});

test("catalog inspect: a non-finite value in one module of a batched adapter fails that adapter (exit 3, the module named), the others are summarised", async () => {
  const rng = new Rng(seed + 7);
  const dir = join(work, "catalog-nan");
  mkdirSync(dir);
  const good = await adapter(rng, join(dir, "good.safetensors"), true);
  const mods = smallModules(rng, 4, true, { minDim: 8, spread: 20, maxRank: 6 });
  mods[2]!.A[3] = Number.NaN; // the third of four modules: inside the batch of one factorSpectra call
  const bad = join(dir, "nan.safetensors");
  await writeSmallAdapter(bad, true, mods);
  for (const be of await testBackends()) {
    const rep = await summarizeCatalog([bad, good.path], be);
    assert.deepEqual(
      rep.adapters.map((a) => a.path),
      [good.path],
      be.name,
    );
    assert.equal(rep.failed.length, 1);
    assert.equal(rep.failed[0]!.path, bad);
    assert.equal(rep.failed[0]!.exit, 3);
    assert.match(rep.failed[0]!.error, /lora_unet_blk_2_proj\.lora_down\.weight holds NaN at element 3/, be.name);
  }
});

test("catalog: an unexpected failure in one adapter waits for the others' native calls before the lanes end", async () => {
  const rng = new Rng(seed + 11);
  const dir = join(work, "catalog-throw");
  mkdirSync(dir);
  const paths: string[] = [];
  for (let i = 0; i < 4; i++) paths.push((await adapter(rng, join(dir, `a${i}.safetensors`), true)).path);
  const [be] = await testBackends();
  // The first call fails at once with an error that is not a refusal of one adapter (which stops the
  // catalog); the other adapters' calls are still running then.
  const { backend, stats } = slowedBackend(be!, ["factorSpectrum", "factorSpectra"], "fail");
  await assert.rejects(summarizeCatalog(paths, backend), /injected failure/);
  assert.ok(stats.calls > 1, `adapters were in flight side by side (${stats.calls} calls)`);
  assert.equal(stats.atEnd, 0, "no call in flight when the lanes ended");
});
