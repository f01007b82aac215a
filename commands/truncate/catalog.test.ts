// Catalog truncate with --max-bytes: the kept energy is the optimum of the global allocation
// (brute force over every rank combination of a small catalog, from dense float64 spectra, an
// adapter's passthrough and alphas counted only when it keeps a rank: one that keeps none is not
// written), every output's ΔW is the optimal truncation at its allotted ranks, the outputs fit the
// budget and their bytes are the brute force's. Also a catalog whose large passthrough makes
// dropping a whole adapter the optimum.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { loadAdapter, openAdapterSource, readFactors } from "../../formats/adapter/index.js";
import { encodeFloats, type TensorSpec } from "../../formats/safetensors/index.js";
import { gemm64 } from "../../linalg/js/dense.js";
import { Rng } from "../../linalg/random.js";
import { denseDelta, denseSingularValues, optimal, relDiff } from "../../test/reference.js";
import { testBackends } from "../../test/backends.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { runCatalogTruncate } from "./catalog.js";
import { runCli as cli } from "../../test/cli.js";
import { smallModules, type SmallModule, writeSmallAdapter } from "../../test/small-adapter.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`catalog truncate test seed=${seed}`);
const work = mkdtempSync(join(tmpdir(), "lora-cattrunc-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

interface M extends SmallModule {
  key: string;
}
interface Made {
  path: string;
  kohya: boolean;
  mods: M[];
  passthrough: number;
}

/** A small adapter; a PEFT one carries a passthrough head of `head` F32 values (a classifier). */
async function make(rng: Rng, path: string, kohya: boolean, head = 3): Promise<Made> {
  // Stored as F32: the references use the stored values.
  const mods: M[] = smallModules(rng, 2, kohya, { minDim: 6, spread: 10, maxRank: 3, bScale: () => 1 + rng.int(3) }).map((m, i) => ({
    ...m,
    key: `blk_${i}_proj`,
  }));
  const extra: TensorSpec[] =
    kohya || head === 0 ? [] : [{ name: "base_model.model.head.weight", dtype: "F32", shape: [head], data: encodeFloats("F32", rng.normals(head)) }];
  await writeSmallAdapter(path, kohya, mods, extra);
  return { path, kohya, mods, passthrough: kohya ? 0 : 4 * head };
}

async function tensorBytes(p: string): Promise<number> {
  const s = await openAdapterSource(p);
  try {
    return s.file.header.tensors.reduce((x, t) => x + t.end - t.begin, 0);
  } finally {
    await s.file.close();
  }
}

/**
 * Brute force over every rank combination: the most energy whose bytes fit, an adapter's fixed bytes
 * (passthrough, one F32 alpha per kohya module: what the allocation counts) paid only when it keeps a
 * rank, or (upfront) by every adapter whatever it keeps, as the allocation did before. `written`: the
 * optimum's bytes as the outputs hold them (a kohya output has alphas only for the modules it keeps).
 */
function bruteForce(made: Made[], maxBytes: number, upfront = false) {
  const all = made.flatMap((a, ai) =>
    a.mods.map((m) => ({
      ai,
      s2: denseSingularValues(denseDelta(m.B, m.A, m.out, m.r, m.inn, m.scale), m.out, m.inn)
        .slice(0, m.r)
        .map((s) => s * s),
      r: m.r,
      cost: 4 * (m.out + m.inn),
    })),
  );
  const fixed = made.map((a) => a.passthrough + (a.kohya ? 4 * a.mods.length : 0));
  const ks = all.map(() => 0);
  let best = { energy: 0, bytes: 0, written: 0, ks: ks.slice() };
  const rec = (i: number, v: number): void => {
    if (i === all.length) {
      let bytes = 0,
        written = 0;
      made.forEach((a, ai) => {
        const mine = all.flatMap((x, j) => (x.ai === ai ? [j] : []));
        const kept = mine.filter((j) => ks[j]! > 0);
        const units = kept.reduce((s, j) => s + ks[j]! * all[j]!.cost, 0);
        if (kept.length || upfront) bytes += fixed[ai]! + units;
        if (kept.length) written += a.passthrough + (a.kohya ? 4 * kept.length : 0) + units;
      });
      if (bytes <= maxBytes && v > best.energy) best = { energy: v, bytes, written, ks: ks.slice() };
      return;
    }
    let acc = v;
    for (let k = 0; k <= all[i]!.r; k++) {
      if (k > 0) acc += all[i]!.s2[k - 1]!;
      ks[i] = k;
      rec(i + 1, acc);
    }
    ks[i] = 0;
  };
  rec(0, 0);
  const full = fixed.reduce((s, f) => s + f, 0) + all.reduce((s, x) => s + x.cost * x.r, 0);
  /** Which adapters the optimum writes. */
  const writes = made.map((_, ai) => all.some((x, j) => x.ai === ai && best.ks[j]! > 0));
  return { ...best, full, writes };
}

/** Runs the catalog truncate at maxBytes and checks it against the brute force; returns the report. */
async function checkAgainstBruteForce(made: Made[], maxBytes: number, dir: string, be: LinalgBackend) {
  const best = bruteForce(made, maxBytes);
  const rep = await runCatalogTruncate(
    made.map((a) => a.path),
    dir,
    { score: "energy", minRank: 0, rho: 2, alphaMode: "keep", kohyaCompat: false, force: false },
    { maxBytes },
    { backend: be },
  );
  const what = `${be.name} max ${maxBytes}`;
  assert.equal(rep.optimal, true, what);
  assert.ok(Math.abs(rep.kept_energy! - best.energy) <= 1e-9 * best.energy, `${what}: kept ${rep.kept_energy} vs brute force ${best.energy}`);
  assert.deepEqual(
    rep.adapters.map((a) => !a.dropped),
    best.writes,
    `${what}: adapters written`,
  );
  let written = 0;
  for (const a of rep.adapters) {
    const src0 = made.find((m) => m.path === a.input)!;
    assert.equal(
      a.rank_in,
      src0.mods.reduce((s, m) => s + m.r, 0),
      `${what}: ${a.input} rank in`,
    );
    if (a.dropped) {
      assert.ok(!existsSync(join(dir, basename(a.input))), `${what}: ${a.input} dropped but written`);
      continue;
    }
    assert.ok(existsSync(a.output));
    written += await tensorBytes(a.output);
    const src = made.find((m) => m.path === a.input)!;
    const out = await loadAdapter(a.output);
    try {
      for (const m of src.mods) {
        const o = out.modules.find((x) => x.matchKey.endsWith(m.key));
        const W = denseDelta(m.B, m.A, m.out, m.r, m.inn, m.scale);
        const k = o ? o.rank : 0;
        const P = optimal(W, m.out, m.inn, k).P;
        if (!o) {
          assert.ok(P.every((x) => x === 0));
          continue;
        }
        const f = await readFactors(out, o, "f64");
        const got = gemm64(f.B.data, o.out, o.rank, f.A.data, o.rank, o.in, false, false, o.scale).data;
        assert.ok(relDiff(got, P) < 1e-6, `${what} ${a.input} ${m.key} rank ${k}: ${relDiff(got, P)}`);
      }
    } finally {
      await out.file.close();
    }
  }
  assert.ok(written <= maxBytes, `${what}: ${written} > ${maxBytes}`);
  assert.equal(written, rep.bytes, what);
  assert.equal(rep.bytes, best.written, `${what}: bytes of the brute-force optimum`);
  return { rep, best };
}

test("catalog truncate --max-bytes: global optimum (brute force), optimal ΔW per output, within the budget", async () => {
  const rng = new Rng(seed);
  const made: Made[] = [];
  for (let i = 0; i < 3; i++) made.push(await make(rng, join(work, i % 2 ? `k${i}.safetensors` : `p${i}`), i % 2 === 1));
  const { full } = bruteForce(made, 0);
  for (const be of await testBackends())
    for (const frac of [0.25, 0.5, 0.8]) await checkAgainstBruteForce(made, Math.floor(full * frac), join(work, `out-${be.name}-${frac}`), be);
});

test("catalog truncate --max-bytes: adapters with large passthrough; dropping one frees its bytes for the others' ranks (brute force)", async () => {
  // Like distilbert-emotion + distilbert-imdb + gpt2 + sd15 at 5 MB: two PEFT adapters carry a head
  // as large as their factors; reserving both heads up front leaves little for ranks, while the optimum
  // drops one of them whole.
  const rng = new Rng(seed + 2);
  const made: Made[] = [
    await make(rng, join(work, "heavy1"), false, 150),
    await make(rng, join(work, "heavy2"), false, 150),
    await make(rng, join(work, "light3"), false, 0),
    await make(rng, join(work, "light4.safetensors"), true),
  ];
  let dropsHeavy = 0;
  for (const be of await testBackends())
    for (const extra of [50, 200, 400, 800]) {
      // Room for both heads plus `extra` bytes: fits both heavy adapters with a rank or two.
      const maxBytes = 2 * 600 + extra;
      const { best } = await checkAgainstBruteForce(made, maxBytes, join(work, `heavy-${be.name}-${extra}`), be);
      const upfront = bruteForce(made, maxBytes, true);
      if (!(best.writes[0] && best.writes[1]) && upfront.energy < best.energy * (1 - 1e-9)) dropsHeavy++;
    }
  assert.ok(dropsHeavy > 0, "in no budget was dropping a heavy adapter better than reserving both heads");
});

test("lora truncate over a catalog: --rank per adapter into DIR, a bad file skipped (exit 3), name clashes and -o - refused", async () => {
  const rng = new Rng(seed + 1);
  const a = await make(rng, join(work, "ca"), false),
    b = await make(rng, join(work, "cb.safetensors"), true);
  const bad = join(work, "cbad.safetensors");
  writeFileSync(bad, Buffer.from("garbage"));
  const dir = join(work, "cli-out");
  const r = await cli(["truncate", a.path, b.path, bad, "--rank", "1", "-o", dir, "--json", "--backend", "js"]);
  assert.equal(r.code, 3, r.err);
  const doc = JSON.parse(r.out);
  assert.equal(doc.adapters.length, 2);
  assert.equal(doc.failed[0].path, bad);
  assert.ok(existsSync(join(dir, "ca", "adapter_model.safetensors")) && existsSync(join(dir, "cb.safetensors")));
  for (const x of doc.adapters) assert.equal(x.rank, 2);
  assert.equal((await cli(["truncate", a.path, b.path, "--rank", "1", "-o", "-"])).code, 2);
  assert.equal((await cli(["truncate", a.path, b.path, "--max-bytes", "1KB", "--rank", "1", "-o", join(work, "x")])).code, 2);
  assert.equal((await cli(["truncate", a.path, b.path, "--max-bytes", "lots", "-o", join(work, "y")])).code, 2);
});
