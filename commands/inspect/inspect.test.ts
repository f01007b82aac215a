// inspect against independent float64 references: singular values and norms of the real adapters
// (dense ΔW + Jacobi eigen route in the test, and numpy when available), ≤ 1e-5 relative.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fixturesDir, needsReal, realDir } from "../../test/paths.js";
import { denseDelta, denseSingularValues, gramSingularValues, hasNumpy, numpy, relClose } from "../../test/reference.js";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { jsBackend } from "../../linalg/js/index.js";
import { runInspect } from "./run.js";

for (const name of ["distilbert-imdb", "distilbert-emotion", "gpt2-tigrinya"]) {
  test(`real adapter ${name}: σ and ‖ΔW‖ against a dense float64 reference (≤1e-5 rel)`, { skip: needsReal(name) }, async () => {
    const dir = join(realDir, name);
    const rep = await runInspect({ input: dir, score: "energy", minRank: 0, rho: 2 }, { backend: jsBackend });
    const a = await loadAdapter(dir);
    try {
      assert.equal(rep.modules.length, a.modules.length);
      // Check a spread of modules (all for the small ones) against the dense route.
      const pick = a.modules.filter((_, i) => a.modules.length <= 12 || i % 5 === 0);
      for (const m of pick) {
        const f = await readFactors(a, m, "f64");
        const ref = gramSingularValues(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale);
        const got = rep.modules.find((x) => x.name === m.name)!;
        ref.forEach((s, i) => assert.ok(relClose(got.singular_values[i]!, s, 1e-5, 1e-7 * ref[0]!), `${m.name} σ${i}: ${got.singular_values[i]} vs ${s}`));
        const dense = denseDelta(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale);
        const fro = Math.sqrt(dense.reduce((x, v) => x + v * v, 0));
        assert.ok(relClose(got.norm, fro, 1e-5), `${m.name} norm ${got.norm} vs ${fro}`);
        assert.ok(Math.abs(got.energy[m.rank - 1]! - 1) < 1e-12);
      }
      if (hasNumpy()) {
        const m = pick[0]!;
        const f = await readFactors(a, m, "f64");
        const s = numpy<number[]>(
          "B=np.array(inp['B']).reshape(inp['o'],inp['r']); A=np.array(inp['A']).reshape(inp['r'],inp['i'])\nprint(json.dumps(np.linalg.svd(inp['s']*B@A, compute_uv=False)[:inp['r']].tolist()))",
          { B: Array.from(f.B.data), A: Array.from(f.A.data), o: m.out, r: m.rank, i: m.in, s: m.scale },
        );
        const got = rep.modules.find((x) => x.name === m.name)!;
        s.forEach((x, i) => assert.ok(relClose(got.singular_values[i]!, x, 1e-5, 1e-7 * s[0]!), `numpy σ${i}`));
      }
    } finally {
      await a.file.close();
    }
  });
}

test("example fixture: σ against the fully dense route (Jacobi eigen of ΔWᵀΔW)", async () => {
  const dir = join(fixturesDir, "example");
  const rep = await runInspect({ input: dir, score: "energy", minRank: 0, rho: 2 }, { backend: jsBackend });
  const a = await loadAdapter(dir);
  for (const m of a.modules) {
    const f = await readFactors(a, m, "f64");
    const ref = denseSingularValues(denseDelta(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale), m.out, m.in).slice(0, m.rank);
    const got = rep.modules.find((x) => x.name === m.name)!;
    ref.forEach((s, i) => assert.ok(relClose(got.singular_values[i]!, s, 1e-9, 1e-12), `${m.name} σ${i}`));
  }
  await a.file.close();
});

test("inspect JSON fields (docs/cli.md, inspect) and the budget preview", async () => {
  const rep = await runInspect({ input: join(fixturesDir, "example"), score: "energy", minRank: 0, rho: 2, budget: 20 }, { backend: jsBackend });
  assert.equal(rep.format, "peft");
  assert.equal(rep.dtype, "F32");
  assert.deepEqual(rep.passthrough, ["base_model.model.score.weight"]);
  assert.deepEqual(rep.totals, { modules: 8, rank: 64, params: 8 * 8 * 128 });
  const m = rep.modules[0]!;
  for (const k of ["name", "shape", "rank", "alpha", "scale", "norm", "singular_values", "energy", "effective_rank"]) assert.ok(k in m, k);
  assert.equal(m.singular_values.length, 8);
  assert.ok(m.effective_rank > 1 && m.effective_rank <= 8);
  const r = rep.redistribution!;
  assert.equal(
    Object.values(r.ranks).reduce((s, x) => s + x, 0),
    20,
  );
  // Greedy top-20 of all σ² equals the allocation.
  const all = rep.modules
    .flatMap((mm) => mm.singular_values.map((s) => ({ n: mm.name, e: s * s })))
    .sort((x, y) => y.e - x.e)
    .slice(0, 20);
  const counts: Record<string, number> = {};
  for (const x of all) counts[x.n] = (counts[x.n] ?? 0) + 1;
  for (const mm of rep.modules) assert.equal(r.ranks[mm.name], counts[mm.name] ?? 0, mm.name);
});

test("every backend reports the same spectra (cpu: the native Gram route; js: Householder QR): real and fixture adapters, F32/F16/BF16, conv and embedding", async () => {
  const { testBackends } = await import("../../test/backends.js");
  // The real adapters join in when ../shared is beside the checkout (optional).
  const real = ["gpt2-tigrinya", "sd15-pokemon"].filter((n) => !needsReal(n)).map((n) => join(realDir, n));
  const inputs = [
    ...real,
    join(fixturesDir, "peft-f16-embed-conv"),
    join(fixturesDir, "peft-bf16.safetensors"),
    join(fixturesDir, "kohya-sd.safetensors"),
    join(fixturesDir, "diffusers", "sd15-second.safetensors"),
  ];
  for (const input of inputs) {
    const ref = await runInspect({ input, score: "energy", minRank: 0, rho: 2, budget: 10 }, { backend: jsBackend });
    for (const be of await testBackends()) {
      const rep = await runInspect({ input, score: "energy", minRank: 0, rho: 2, budget: 10 }, { backend: be });
      rep.modules.forEach((m, i) => {
        const r = ref.modules[i]!;
        assert.equal(m.name, r.name);
        m.singular_values.forEach((s, k) =>
          assert.ok(
            Math.abs(s - r.singular_values[k]!) <= 1e-9 * r.singular_values[0]!,
            `${be.name} ${input} ${m.name} σ${k}: ${s} vs ${r.singular_values[k]}`,
          ),
        );
      });
      assert.deepEqual(rep.redistribution?.ranks, ref.redistribution?.ranks, `${be.name} ${input}: --budget 10 allocation`);
    }
  }
});
