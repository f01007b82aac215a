// Catalog truncate with --max-bytes: the kept energy is the optimum of the global allocation
// (brute force over every rank combination of a small catalog, from dense float64 spectra), every
// output's ΔW is the optimal truncation at its allotted ranks, and the outputs fit the budget.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAdapter, openAdapterSource, readFactors } from "../../formats/adapter/index.js";
import { encodeFloats, type TensorSpec } from "../../formats/safetensors/index.js";
import { gemm64 } from "../../linalg/js/dense.js";
import { Rng } from "../../linalg/random.js";
import { denseDelta, denseSingularValues, optimal, relDiff } from "../../test/reference.js";
import { testBackends } from "../../test/backends.js";
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

async function make(rng: Rng, path: string, kohya: boolean): Promise<Made> {
  // Stored as F32: the references use the stored values.
  const mods: M[] = smallModules(rng, 2, kohya, { minDim: 6, spread: 10, maxRank: 3, bScale: () => 1 + rng.int(3) }).map((m, i) => ({
    ...m,
    key: `blk_${i}_proj`,
  }));
  const head: TensorSpec[] = kohya ? [] : [{ name: "base_model.model.head.weight", dtype: "F32", shape: [3], data: encodeFloats("F32", rng.normals(3)) }];
  await writeSmallAdapter(path, kohya, mods, head);
  return { path, kohya, mods, passthrough: kohya ? 0 : 12 };
}

async function tensorBytes(p: string): Promise<number> {
  const s = await openAdapterSource(p);
  try {
    return s.file.header.tensors.reduce((x, t) => x + t.end - t.begin, 0);
  } finally {
    await s.file.close();
  }
}

test("catalog truncate --max-bytes: global optimum (brute force), optimal ΔW per output, within the budget", async () => {
  const rng = new Rng(seed);
  const made: Made[] = [];
  for (let i = 0; i < 3; i++) made.push(await make(rng, join(work, i % 2 ? `k${i}.safetensors` : `p${i}`), i % 2 === 1));
  // Dense float64 σ² of every module; unit cost (out+in)·4 bytes (F32 outputs); fixed bytes: passthrough + one F32 alpha per kohya module.
  const all = made.flatMap((a) =>
    a.mods.map((m) => ({
      a,
      m,
      s2: denseSingularValues(denseDelta(m.B, m.A, m.out, m.r, m.inn, m.scale), m.out, m.inn)
        .slice(0, m.r)
        .map((s) => s * s),
      cost: 4 * (m.out + m.inn),
    })),
  );
  const fixed = made.reduce((s, a) => s + a.passthrough + (a.kohya ? 4 * a.mods.length : 0), 0);
  const full = fixed + all.reduce((s, x) => s + x.cost * x.m.r, 0);
  for (const be of await testBackends()) {
    for (const frac of [0.25, 0.5, 0.8]) {
      const maxBytes = Math.floor(full * frac);
      // brute force over every rank combination
      let best = 0;
      const rec = (i: number, bytes: number, v: number): void => {
        if (bytes > maxBytes) return;
        if (i === all.length) {
          best = Math.max(best, v);
          return;
        }
        let acc = v;
        for (let k = 0; k <= all[i]!.m.r; k++) {
          if (k > 0) acc += all[i]!.s2[k - 1]!;
          rec(i + 1, bytes + k * all[i]!.cost, acc);
        }
      };
      rec(0, fixed, 0);
      const dir = join(work, `out-${be.name}-${frac}`);
      const rep = await runCatalogTruncate(
        made.map((a) => a.path),
        dir,
        { score: "energy", minRank: 0, rho: 2, alphaMode: "keep", kohyaCompat: false, force: false },
        { maxBytes },
        { backend: be },
      );
      assert.ok(rep.optimal);
      assert.ok(Math.abs(rep.kept_energy! - best) <= 1e-9 * best, `${be.name} ${frac}: kept ${rep.kept_energy} vs brute force ${best}`);
      let written = 0;
      for (const a of rep.adapters) {
        if (a.dropped) continue;
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
            assert.ok(relDiff(got, P) < 1e-6, `${be.name} ${a.input} ${m.key} rank ${k}: ${relDiff(got, P)}`);
          }
        } finally {
          await out.file.close();
        }
      }
      assert.ok(written <= maxBytes, `${written} > ${maxBytes}`);
      assert.equal(written, rep.bytes);
    }
  }
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
