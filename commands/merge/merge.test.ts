// lora merge against independent float64 references (issue 6 "Done when"), on fresh random
// adapters written to a temp directory (seed printed; LORA_TEST_SEED=<n> replays), plus the
// golden toy examples of docs/algorithms.md §9.6 (LoRA-LEGO) and §9.8 (LoRA-FAIR ridge).
//
// References are computed here from the values written to the inputs (rounded to F32 as the
// files hold them) with scales computed here from r, alpha and use_rslora (α/r or α/√r), as dense
// out×in float64 products; the merged file is read back with loadAdapter. Tolerances (relative
// Frobenius): exact methods ≤ 1e-6 (F32 output rounding ~1e-7); svd vs the dense optimal rank-K
// approximation ≤ 1e-5; golden numbers to their printed 6 decimals (5e-7 absolute, 2e-6 for
// values printed from sums); ties/dare dense merge vs the reference ≤ 1e-12.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { jsBackend } from "../../linalg/js/index.js";
import { svd64 } from "../../linalg/js/dense.js";
import { Rng } from "../../linalg/random.js";
import type { Mat } from "../../linalg/types.js";
import { mergeFair } from "../../surgery/merge/fair.js";
import { mergeLego } from "../../surgery/merge/lego.js";
import type { MergeTerm } from "../../surgery/merge/types.js";
import { MERGE_DEFAULTS, runMerge, type MergeOptions, type MergeReport } from "./run.js";
import { dareRng, deriveSeed, mergeDense, type TiesOptions } from "../../surgery/merge/ties.js";

const SEED = process.env["LORA_TEST_SEED"] !== undefined ? Number(process.env["LORA_TEST_SEED"]) : Date.now() % 1_000_000;
console.log(`merge.test seed=${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

const tmp = mkdtempSync(join(tmpdir(), "lora-merge-test-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const fresh = (name: string) => join(tmp, `${name}-${++counter}`);

// ---------------------------------------------------------------------------------------------
// Synthetic adapters

interface Mod {
  path: string;
  out: number;
  in: number;
  rank: number;
  alpha: number;
  B: Float64Array;
  A: Float64Array;
}
interface Fake {
  dir: string;
  rslora: boolean;
  mods: Mod[];
  passthrough?: Record<string, Float64Array>;
}

const f32 = (x: Float64Array) => Float64Array.from(Float32Array.from(x));

function randomMod(rng: Rng, path: string, out: number, inn: number, rank: number, alpha: number, sharedA?: Float64Array): Mod {
  return { path, out, in: inn, rank, alpha, B: f32(rng.normals(out * rank, 0.1)), A: sharedA ?? f32(rng.normals(rank * inn, 1 / Math.sqrt(inn))) };
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

async function writeFake(dir: string, rslora: boolean, mods: Mod[], passthrough: Record<string, Float64Array> = {}): Promise<Fake> {
  const specs: TensorSpec[] = [];
  for (const m of mods) {
    specs.push({ name: `base_model.model.${m.path}.lora_A.weight`, dtype: "F32", shape: [m.rank, m.in], data: encodeFloats("F32", m.A) });
    specs.push({ name: `base_model.model.${m.path}.lora_B.weight`, dtype: "F32", shape: [m.out, m.rank], data: encodeFloats("F32", m.B) });
  }
  for (const [name, v] of Object.entries(passthrough)) specs.push({ name, dtype: "F32", shape: [v.length], data: encodeFloats("F32", v) });
  const r = mods[0]!.rank,
    alpha = mods[0]!.alpha;
  const rank_pattern: Record<string, number> = {},
    alpha_pattern: Record<string, number> = {};
  for (const m of mods) {
    if (m.rank !== r) rank_pattern[esc(m.path)] = m.rank;
    if (m.alpha !== alpha) alpha_pattern[esc(m.path)] = m.alpha;
  }
  const config = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    r,
    lora_alpha: alpha,
    use_rslora: rslora,
    use_dora: false,
    target_modules: mods.map((m) => m.path),
    rank_pattern,
    alpha_pattern,
    fan_in_fan_out: false,
    bias: "none",
  };
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
  await writeFile(join(dir, "adapter_config.json"), JSON.stringify(config));
  return { dir, rslora, mods, passthrough };
}

/** Independent scale rule: α/r, or α/√r with rsLoRA. */
const scaleOf = (f: Fake, m: Mod) => (f.rslora ? m.alpha / Math.sqrt(m.rank) : m.alpha / m.rank);

function dense(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inn: number, s = 1): Float64Array {
  const c = new Float64Array(out * inn);
  for (let i = 0; i < out; i++)
    for (let p = 0; p < r; p++) {
      const b = s * B[i * r + p]!;
      for (let j = 0; j < inn; j++) c[i * inn + j] += b * A[p * inn + j]!;
    }
  return c;
}

/** Σ wᵢ sᵢ Bᵢ Aᵢ per module path, over the fakes holding it. */
function target(fakes: Fake[], weights: number[]): Map<string, { out: number; in: number; T: Float64Array }> {
  const res = new Map<string, { out: number; in: number; T: Float64Array }>();
  fakes.forEach((f, i) => {
    for (const m of f.mods) {
      const e = res.get(m.path) ?? { out: m.out, in: m.in, T: new Float64Array(m.out * m.in) };
      const d = dense(m.B, m.A, m.out, m.rank, m.in, weights[i]! * scaleOf(f, m));
      for (let j = 0; j < d.length; j++) e.T[j] += d[j]!;
      res.set(m.path, e);
    }
  });
  return res;
}

/** ΔW of every module of a written adapter (scale from the adapter's own config). */
async function readDeltas(path: string): Promise<Map<string, { dw: Float64Array; rank: number; scale: number }>> {
  const a = await loadAdapter(path);
  try {
    const out = new Map<string, { dw: Float64Array; rank: number; scale: number }>();
    for (const m of a.modules) {
      const f = await readFactors(a, m, "f64");
      out.set(m.path, { dw: dense(f.B.data, f.A.data, m.out, m.rank, m.in, m.scale), rank: m.rank, scale: m.scale });
    }
    return out;
  } finally {
    await a.file.close();
  }
}

function relErr(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let n = 0,
    d = 0;
  for (let i = 0; i < ref.length; i++) {
    n += (x[i]! - ref[i]!) ** 2;
    d += ref[i]! ** 2;
  }
  return Math.sqrt(n / d);
}

function opts(inputs: string[], output: string, o: Partial<MergeOptions>): MergeOptions {
  return { ...MERGE_DEFAULTS, inputs, output, method: "svd", ...o } as MergeOptions;
}

const run = (o: MergeOptions): Promise<MergeReport> => runMerge(o, { backend: jsBackend });

/** Three inputs differing in rank, alpha, rsLoRA, rank/alpha patterns and target modules. */
async function mixedInputs(rng: Rng): Promise<Fake[]> {
  const a = await writeFake(fresh("a"), false, [
    randomMod(rng, "model.layers.0.self_attn.q_proj", 24, 20, 4, 8),
    randomMod(rng, "model.layers.0.self_attn.v_proj", 24, 20, 4, 8),
    randomMod(rng, "model.layers.0.mlp.down_proj", 20, 36, 4, 4),
  ]);
  const b = await writeFake(fresh("b"), true, [
    randomMod(rng, "model.layers.0.self_attn.q_proj", 24, 20, 8, 16),
    randomMod(rng, "model.layers.0.self_attn.v_proj", 24, 20, 6, 3),
    randomMod(rng, "model.layers.0.self_attn.k_proj", 24, 20, 2, 5),
  ]);
  const c = await writeFake(fresh("c"), false, [
    randomMod(rng, "model.layers.0.self_attn.q_proj", 24, 20, 3, 12),
    randomMod(rng, "model.layers.0.mlp.down_proj", 20, 36, 5, 7),
  ]);
  return [a, b, c];
}

// ---------------------------------------------------------------------------------------------

describe("exact and optimal merges against dense float64 references", () => {
  test("cat equals Σ wᵢΔWᵢ (≤ 1e-6) across mixed ranks, alphas, rsLoRA and target modules", async () => {
    const rng = new Rng(SEED);
    const fakes = await mixedInputs(rng);
    const weights = [0.3 + rng.uniform(), -0.5 * rng.uniform(), 0.2 + rng.uniform()];
    const out = fresh("cat");
    const rep = await run(
      opts(
        fakes.map((f) => f.dir),
        out,
        { method: "cat", weights },
      ),
    );
    const T = target(fakes, weights);
    const got = await readDeltas(out);
    assert.equal(got.size, T.size, "union of the target modules");
    for (const [path, t] of T) {
      const g = got.get(path)!;
      assert.ok(relErr(g.dw, t.T) <= 1e-6, `${path}: ${relErr(g.dw, t.T)}`);
      assert.equal(g.scale, 1, "scale folded (alpha = rank)");
      const ranks = fakes.map((f) => f.mods.find((m) => m.path === path)?.rank ?? 0);
      assert.equal(
        g.rank,
        ranks.reduce((s, x) => s + x, 0),
        "rank Σ rᵢ",
      );
      const mr = rep.modules.find((m) => m.name === path)!;
      assert.deepEqual(mr.rank_in, ranks);
      // The reported error is the written factors' (their rounding to F32), as a dense float64 difference gives it.
      const dense = relErr(g.dw, t.T);
      assert.ok(Math.abs(mr.relative_error - dense) <= 1e-6 * dense + 1e-14, `${path}: reported ${mr.relative_error}, dense ${dense}`);
    }
    assert.ok(rep.notes.some((n) => /only some inputs/.test(n)));
  });

  test("svd equals the optimal rank-K approximation of Σ wᵢΔWᵢ (≤ 1e-5) vs a dense float64 SVD", async () => {
    const rng = new Rng(SEED + 1);
    const fakes = await mixedInputs(rng);
    const weights = [0.5, 0.3, 0.2];
    for (const K of [undefined, 3]) {
      const out = fresh("svd");
      const rep = await run(
        opts(
          fakes.map((f) => f.dir),
          out,
          { method: "svd", weights, ...(K ? { rank: K } : {}) },
        ),
      );
      const T = target(fakes, weights);
      const got = await readDeltas(out);
      for (const [path, t] of T) {
        const maxR = Math.max(...fakes.map((f) => f.mods.find((m) => m.path === path)?.rank ?? 0));
        const k = Math.min(
          K ?? maxR,
          fakes.reduce((s, f) => s + (f.mods.find((m) => m.path === path)?.rank ?? 0), 0),
        );
        const s = svd64(t.T, t.out, t.in); // Jacobi, independent of the QR-core route
        const best = new Float64Array(t.out * t.in);
        const kk = s.k;
        for (let i = 0; i < t.out; i++)
          for (let c = 0; c < k; c++) {
            const u = s.U[i * kk + c]! * s.S[c]!;
            for (let j = 0; j < t.in; j++) best[i * t.in + j] += u * s.Vt[c * t.in + j]!;
          }
        const g = got.get(path)!;
        assert.equal(g.rank, k);
        const normT = Math.sqrt(t.T.reduce((a, x) => a + x * x, 0));
        let diff = 0;
        for (let i = 0; i < best.length; i++) diff += (g.dw[i]! - best[i]!) ** 2;
        assert.ok(Math.sqrt(diff) / normT <= 1e-5, `${path} K=${k}: ${Math.sqrt(diff) / normT}`);
        // reported error = the Eckart–Young tail
        let tail = 0;
        for (let c = k; c < s.S.length; c++) tail += s.S[c]! ** 2;
        const mr = rep.modules.find((m) => m.name === path)!;
        assert.ok(Math.abs(mr.relative_error - Math.sqrt(tail) / normT) <= 1e-5, `${path}: reported ${mr.relative_error}, tail ${Math.sqrt(tail) / normT}`);
      }
    }
  });

  test("linear is PEFT's (Σ√(w·s)Bᵢ)(Σ sign·√|w·s|Aᵢ) (≤ 1e-6)", async () => {
    const rng = new Rng(SEED + 2);
    const a = await writeFake(fresh("la"), false, [randomMod(rng, "m.q", 10, 8, 3, 6)]);
    const b = await writeFake(fresh("lb"), true, [randomMod(rng, "m.q", 10, 8, 3, 2)]);
    const w = [0.6, 0.4];
    const out = fresh("linear");
    await run(opts([a.dir, b.dir], out, { method: "linear", weights: w }));
    const B = new Float64Array(30),
      A = new Float64Array(24);
    [a, b].forEach((f, i) => {
      const m = f.mods[0]!,
        g = Math.sqrt(w[i]! * scaleOf(f, m));
      m.B.forEach((v, j) => (B[j] += g * v));
      m.A.forEach((v, j) => (A[j] += g * v));
    });
    const ref = dense(B, A, 10, 3, 8);
    const got = (await readDeltas(out)).get("m.q")!;
    assert.ok(relErr(got.dw, ref) <= 1e-6);
  });
});

describe("lego", () => {
  test("N identical inputs with k = r return the input's ΔW (≤ 1e-6)", async () => {
    const rng = new Rng(SEED + 3);
    const mods = [randomMod(rng, "m.q", 30, 24, 6, 12), randomMod(rng, "m.v", 30, 24, 4, 3)];
    const f = await writeFake(fresh("same"), true, mods);
    for (const paramNorm of ["inf", "2"] as const) {
      const out = fresh("lego-same");
      const rep = await run(opts([f.dir, f.dir, f.dir], out, { method: "lego", seed: SEED, paramNorm }));
      const got = await readDeltas(out);
      for (const m of mods) {
        const ref = dense(m.B, m.A, m.out, m.rank, m.in, scaleOf(f, m));
        assert.equal(got.get(m.path)!.rank, m.rank);
        assert.ok(relErr(got.get(m.path)!.dw, ref) <= 1e-6, `${m.path}: ${relErr(got.get(m.path)!.dw, ref)}`);
      }
      assert.ok(rep.totals.relative_error <= 1e-6);
    }
  });

  test("k = total units with reweighting off equals cat with unit weights (≤ 1e-6)", async () => {
    const rng = new Rng(SEED + 4);
    const a = await writeFake(fresh("ka"), false, [randomMod(rng, "m.q", 16, 12, 3, 6)]);
    const b = await writeFake(fresh("kb"), true, [randomMod(rng, "m.q", 16, 12, 5, 4)]);
    const lego = fresh("lego-all"),
      cat = fresh("cat-all");
    await run(opts([a.dir, b.dir], lego, { method: "lego", rank: 8, paramReweight: false, outputReweight: false, seed: SEED }));
    await run(opts([a.dir, b.dir], cat, { method: "cat", weights: [1, 1] }));
    const l = (await readDeltas(lego)).get("m.q")!,
      c = (await readDeltas(cat)).get("m.q")!;
    assert.equal(l.rank, 8);
    assert.ok(relErr(l.dw, c.dw) <= 1e-6, String(relErr(l.dw, c.dw)));
  });

  test("golden §9.6: two rank-2 LoRAs, k = 2, Lloyd from the first k units", async () => {
    const mat = (rows: number, cols: number, d: number[]): Mat<Float64Array> => ({ rows, cols, data: Float64Array.from(d) });
    const terms: MergeTerm[] = [
      { input: 0, B: mat(3, 2, [1, 0, 0, 1, 1, 1]), A: mat(2, 3, [1, 0, 0, 0, 1, 0]), scale: 1, weight: 0.5 },
      { input: 1, B: mat(3, 2, [1.2, 0, 0, -1, 1, 0]), A: mat(2, 3, [0.9, 0.1, 0, 0, -1, 0.2]), scale: 1, weight: 0.5 },
    ];
    const cases: [boolean, "inf" | "2", number[], number[]][] = [
      [false, "inf", [0, 1, 0, 0], [0.982626, -0.465455, 0.103434, -0.446648, 1.21157, -0.047016, 0.893297, 0.57686, 0.094031]],
      [false, "2", [0, 1, 0, 0], [0.800923, -0.379385, 0.084308, -0.364056, 1.172448, -0.038322, 0.728112, 0.655105, 0.076643]],
      [true, "inf", [0, 1, 0, 1], [1.045, 0.055, 0, 0, 1, -0.1, 0.95, 0.55, -0.05]],
      [true, "2", [0, 1, 0, 1], [1.049579, 0.055241, 0, 0, 1.104837, -0.110484, 0.954163, 0.602638, -0.055242]],
    ];
    for (const [canon, norm, labels, dW] of cases) {
      const r = await mergeLego(jsBackend, terms, {
        k: 2,
        paramReweight: true,
        outputReweight: true,
        paramNorm: norm,
        signCanonicalize: canon,
        nInit: 1,
        maxIter: 300,
        tol: 1e-4,
        seed: 0,
        init: "first",
      });
      assert.deepEqual(r.details.labels, labels, `labels (canon ${canon}, L${norm})`);
      const got = dense(r.B.data, r.A.data, 3, 2, 3);
      got.forEach((v, i) => assert.ok(Math.abs(v - dW[i]!) <= 2e-6, `canon ${canon} L${norm} ΔW[${i}] = ${v}, golden ${dW[i]}`));
    }
  });

  test("same seed ⇒ byte-identical output file; the seed matters", async () => {
    const rng = new Rng(SEED + 5);
    const fakes = await Promise.all(
      [0, 1, 2].map(async (i) => writeFake(fresh(`s${i}`), i === 1, [randomMod(rng, "m.q", 20, 16, 6, 6), randomMod(rng, "m.v", 20, 16, 6, 12)])),
    );
    const dirs = fakes.map((f) => f.dir);
    const o1 = fresh("seed-a"),
      o2 = fresh("seed-b"),
      o3 = fresh("seed-c");
    await run(opts(dirs, o1, { method: "lego", seed: 11, rank: 5, nInit: 2 }));
    await run(opts(dirs, o2, { method: "lego", seed: 11, rank: 5, nInit: 2 }));
    await run(opts(dirs, o3, { method: "lego", seed: 12, rank: 5, nInit: 1 }));
    const bytes = (d: string) => readFileSync(join(d, "adapter_model.safetensors"));
    assert.ok(bytes(o1).equals(bytes(o2)), "same seed, same bytes");
    assert.equal(readFileSync(join(o1, "adapter_config.json"), "utf8"), readFileSync(join(o2, "adapter_config.json"), "utf8"));
    assert.ok(!bytes(o1).equals(bytes(o3)), "another seed, other clusters");
  });

  test("the native backend (when built) gives the same merge as the js one (≤ 1e-6)", async (t) => {
    let cpu;
    try {
      const p = (await import("../../linalg/native.js")).probeCpu();
      if (p.ok) cpu = p.backend;
    } catch {
      /* not built */
    }
    if (!cpu) {
      t.skip("cpu addon not built");
      return;
    }
    const rng = new Rng(SEED + 13);
    const fakes = await Promise.all([0, 1, 2].map(async (i) => writeFake(fresh(`nb${i}`), i === 2, [randomMod(rng, "m.q", 40, 30, 6, 12)])));
    const dirs = fakes.map((f) => f.dir);
    for (const method of ["lego", "svd", "ties"] as const) {
      const oj = fresh(`js-${method}`),
        oc = fresh(`cpu-${method}`);
      await runMerge(opts(dirs, oj, { method, seed: 4 }), { backend: jsBackend });
      await runMerge(opts(dirs, oc, { method, seed: 4 }), { backend: cpu });
      const a = (await readDeltas(oj)).get("m.q")!.dw,
        b = (await readDeltas(oc)).get("m.q")!.dw;
      assert.ok(relErr(b, a) <= 1e-6, `${method}: ${relErr(b, a)}`);
    }
  });

  test("k > total units is refused (InvalidInputError), nothing written; negative weights are a usage error", async () => {
    const rng = new Rng(SEED + 6);
    const a = await writeFake(fresh("ua"), false, [randomMod(rng, "m.q", 8, 8, 2, 2)]);
    const b = await writeFake(fresh("ub"), false, [randomMod(rng, "m.q", 8, 8, 3, 3)]);
    const out = fresh("lego-k");
    await assert.rejects(
      run(opts([a.dir, b.dir], out, { method: "lego", rank: 6 })),
      (e: unknown) => e instanceof InvalidInputError && /only 5 rank units/.test((e as Error).message),
    );
    assert.ok(!existsSync(out));
    await assert.rejects(run(opts([a.dir, b.dir], out, { method: "lego", weights: [1, -1] })), UsageError);
  });
});

// ---------------------------------------------------------------------------------------------
// ties / dare: a straightforward reference of PEFT's merge_utils (and mergekit's variant)

/** Stable sort by |t| descending (index ascending on ties), keep the first ⌊density·n⌋. */
function refMagnitude(t: Float64Array, density: number): Float64Array {
  if (density >= 1) return Float64Array.from(t);
  const k = Math.floor(density * t.length);
  const order = Array.from(t.keys()).sort((i, j) => Math.abs(t[j]!) - Math.abs(t[i]!) || i - j);
  const out = new Float64Array(t.length);
  for (const i of order.slice(0, k)) out[i] = t[i]!;
  return out;
}

function refRandom(t: Float64Array, density: number, seed: number, key: string, input: number): Float64Array {
  const rng = dareRng(seed, key, input);
  const mask = Array.from(t, () => (rng.uniform() < density ? 1 : 0));
  return Float64Array.from(t, (v, i) => (v * mask[i]!) / density);
}

function refMerge(
  tasks: Float64Array[],
  w: number[],
  o: { method: string; density: number; mode: "peft" | "mergekit"; sign: "total" | "frequency"; seed: number; key: string; inputs: number[] },
): Float64Array {
  const n = tasks[0]!.length;
  const T = tasks.map((t, i) =>
    o.method === "ties" || o.method === "magnitude_prune" ? refMagnitude(t, o.density) : refRandom(t, o.density, o.seed, o.key, o.inputs[i]!),
  );
  const out = new Float64Array(n);
  if (o.method === "dare" || o.method === "magnitude_prune") {
    for (let i = 0; i < n; i++) out[i] = T.reduce((s, t, j) => s + w[j]! * t[i]!, 0);
    return out;
  }
  const elect = o.mode === "peft" ? T : T.map((t, j) => t.map((v) => w[j]! * v));
  for (let i = 0; i < n; i++) {
    const mag = o.sign === "total" ? elect.reduce((s, t) => s + t[i]!, 0) : elect.reduce((s, t) => s + Math.sign(t[i]!), 0);
    const major = mag >= 0 ? 1 : -1;
    let num = 0,
      cnt = 0,
      wsum = 0;
    T.forEach((t, j) => {
      if (Math.sign(elect[j]![i]!) === major) {
        num += w[j]! * t[i]!;
        cnt += 1;
        wsum += w[j]!;
      }
    });
    if (o.mode === "peft") out[i] = num / Math.max(cnt, 1);
    else out[i] = o.method === "ties" ? num / (wsum === 0 ? 1 : wsum) : num;
  }
  return out;
}

describe("ties / dare / dare_ties / magnitude_prune", () => {
  const methods = ["ties", "dare", "dare_ties", "magnitude_prune"] as const;

  test("dense merge matches the reference implementation (≤ 1e-12), both --ties-mode, both majority rules", async () => {
    const rng = new Rng(SEED + 7);
    const out = 9,
      inn = 7;
    const terms: MergeTerm[] = [3, 2, 4].map((r, i) => ({
      input: [0, 2, 3][i]!,
      B: { rows: out, cols: r, data: rng.normals(out * r) },
      A: { rows: r, cols: inn, data: rng.normals(r * inn) },
      scale: 0.5 + rng.uniform(),
      weight: [0.5, 0.8, -0.3][i]!,
    }));
    const tasks = terms.map((t) => dense(t.B.data, t.A.data, out, t.A.rows, inn, t.scale));
    for (const method of methods)
      for (const mode of ["peft", "mergekit"] as const)
        for (const sign of ["total", "frequency"] as const)
          for (const density of [0.3, 0.5, 1]) {
            const o: TiesOptions = { method, density, mode, majoritySign: sign, rank: 3, seed: SEED, moduleKey: "layers_0_q" };
            const got = await mergeDense(jsBackend, terms, o);
            const ref = refMerge(
              tasks,
              terms.map((t) => t.weight),
              { method, density, mode, sign, seed: SEED, key: "layers_0_q", inputs: terms.map((t) => t.input) },
            );
            let maxd = 0,
              maxr = 0;
            ref.forEach((v, i) => {
              maxd = Math.max(maxd, Math.abs(v - got.data[i]!));
              maxr = Math.max(maxr, Math.abs(v));
            });
            assert.ok(maxd <= 1e-12 * Math.max(maxr, 1), `${method}/${mode}/${sign}/density ${density}: max diff ${maxd}`);
          }
  });

  test("DARE keeps ≈ density of the entries, with a different mask per input and per seed", () => {
    const a = dareRng(SEED, "k", 0),
      b = dareRng(SEED, "k", 1),
      c = dareRng(SEED + 1, "k", 0);
    let kept = 0,
      same = 0,
      sameSeed = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const x = a.uniform() < 0.3,
        y = b.uniform() < 0.3,
        z = c.uniform() < 0.3;
      kept += +x;
      same += +(x === y);
      sameSeed += +(x === z);
    }
    assert.ok(Math.abs(kept / n - 0.3) < 0.02);
    assert.ok(same / n < 0.7 && sameSeed / n < 0.7, "independent streams (0.58 expected)");
    assert.notEqual(deriveSeed(1, "a"), deriveSeed(1, "b"));
  });

  test("end to end at full rank the file holds the reference merge (≤ 1e-6); deterministic per seed", async () => {
    const rng = new Rng(SEED + 8);
    const fa = await writeFake(fresh("ta"), false, [randomMod(rng, "m.q", 10, 8, 3, 6)]);
    const fb = await writeFake(fresh("tb"), true, [randomMod(rng, "m.q", 10, 8, 2, 4)]);
    const w = [0.7, 0.4];
    const tasks = [fa, fb].map((f) => {
      const m = f.mods[0]!;
      return dense(m.B, m.A, 10, m.rank, 8, scaleOf(f, m));
    });
    for (const method of methods) {
      const o1 = fresh(method),
        o2 = fresh(method),
        o3 = fresh(method);
      await run(opts([fa.dir, fb.dir], o1, { method, weights: w, rank: 8, density: 0.4, seed: 5 }));
      await run(opts([fa.dir, fb.dir], o2, { method, weights: w, rank: 8, density: 0.4, seed: 5 }));
      await run(opts([fa.dir, fb.dir], o3, { method, weights: w, rank: 8, density: 0.4, seed: 6 }));
      const ref = refMerge(tasks, w, { method, density: 0.4, mode: "peft", sign: "total", seed: 5, key: "m_q", inputs: [0, 1] });
      const got = (await readDeltas(o1)).get("m.q")!;
      assert.equal(got.rank, 8);
      assert.ok(relErr(got.dw, ref) <= 1e-6, `${method}: ${relErr(got.dw, ref)}`);
      const bytes = (d: string) => readFileSync(join(d, "adapter_model.safetensors"));
      assert.ok(bytes(o1).equals(bytes(o2)), `${method}: same seed, same bytes`);
      if (method.startsWith("dare")) assert.ok(!bytes(o1).equals(bytes(o3)), `${method}: the seed changes the masks`);
    }
  });
});

describe("ffa and fair", () => {
  test("ffa is exact on shared-A inputs (≤ 1e-6) and keeps A; refuses differing A unless --project", async () => {
    const rng = new Rng(SEED + 9);
    const A = f32(rng.normals(4 * 12, 0.3));
    const fakes = [
      await writeFake(fresh("fa"), false, [randomMod(rng, "m.q", 14, 12, 4, 8, A)]),
      await writeFake(fresh("fb"), false, [randomMod(rng, "m.q", 14, 12, 4, 4, A)]),
      await writeFake(fresh("fc"), true, [randomMod(rng, "m.q", 14, 12, 4, 2, A)]),
    ];
    const w = [0.2, 0.5, 0.3];
    const out = fresh("ffa");
    const rep = await run(
      opts(
        fakes.map((f) => f.dir),
        out,
        { method: "ffa", weights: w },
      ),
    );
    const got = (await readDeltas(out)).get("m.q")!;
    assert.ok(relErr(got.dw, target(fakes, w).get("m.q")!.T) <= 1e-6);
    assert.equal(got.rank, 4);
    assert.equal(rep.modules[0]!["projected"], false);
    const a = await loadAdapter(out);
    try {
      assert.deepEqual(Array.from(await a.file.readFloat64(a.modules[0]!.A)), Array.from(A));
    } finally {
      await a.file.close();
    }

    const other = await writeFake(fresh("fd"), false, [randomMod(rng, "m.q", 14, 12, 4, 8)]);
    const refused = fresh("ffa-no");
    await assert.rejects(
      run(opts([fakes[0]!.dir, other.dir], refused, { method: "ffa" })),
      (e: unknown) => e instanceof InvalidInputError && /share A/.test((e as Error).message),
    );
    assert.ok(!existsSync(refused), "nothing written");
    const proj = fresh("ffa-proj");
    const prep = await run(opts([fakes[0]!.dir, other.dir], proj, { method: "ffa", project: true, rank: 8 }));
    // rank 8 = the whole row space of the two rank-4 A's: the projection is exact
    assert.ok(prep.modules[0]!.relative_error <= 1e-6, String(prep.modules[0]!.relative_error));
    assert.equal(prep.modules[0]!["projected"], true);
  });

  test("fair ridge reproduces golden §9.8; cosine-sgd improves on FedIT", async () => {
    const mat = (rows: number, cols: number, d: number[]): Mat<Float64Array> => ({ rows, cols, data: Float64Array.from(d) });
    const terms: MergeTerm[] = [
      { input: 0, B: mat(3, 2, [1, 0, 0, 1, 1, 1]), A: mat(2, 2, [1, 2, 0, 1]), scale: 1, weight: 0.5 },
      { input: 1, B: mat(3, 2, [0, 1, 1, 0, 2, 0]), A: mat(2, 2, [1, 0, 1, 1]), scale: 1, weight: 0.5 },
    ];
    for (const [lambda, residual, cos, dbn] of [
      [0, 0, 1, 0.866025],
      [0.01, 0.02178, 0.999971, 0.805741],
      [1, 0.288675, 0.995136, 0.408248],
    ] as const) {
      const r = await mergeFair(jsBackend, terms, { solver: "ridge", lambda, steps: 0, lr: 0.01 });
      assert.ok(Math.abs(r.details.residual - residual) <= 1e-6, `λ=${lambda} residual ${r.details.residual}`);
      assert.ok(Math.abs(r.details.cos - cos) <= 1e-6, `λ=${lambda} cos ${r.details.cos}`);
      assert.ok(Math.abs(r.details.delta_b_norm - dbn) <= 1e-6, `λ=${lambda} ‖ΔB‖ ${r.details.delta_b_norm}`);
      assert.ok(Math.abs(r.details.fedit_residual - 0.968246) <= 1e-6);
      // residual recomputed densely from the returned factors
      const T = new Float64Array(6);
      for (const t of terms) dense(t.B.data, t.A.data, 3, 2, 2, t.weight).forEach((v, i) => (T[i] += v));
      const P = dense(r.B.data, r.A.data, 3, 2, 2);
      assert.ok(Math.abs(Math.sqrt(P.reduce((s, v, i) => s + (v - T[i]!) ** 2, 0)) - residual) <= 1e-6);
    }
    const fed = await mergeFair(jsBackend, terms, { solver: "ridge", lambda: 1e12, steps: 0, lr: 0.01 }); // ΔB → 0: FedIT
    const sgd = await mergeFair(jsBackend, terms, { solver: "cosine-sgd", lambda: 0.01, steps: 500, lr: 0.05 });
    assert.ok(sgd.details.cos > fed.details.cos + 1e-3 && sgd.details.cos > 0.99, `sgd cos ${sgd.details.cos} vs FedIT ${fed.details.cos}`);
  });

  test("fair refuses inputs of different ranks", async () => {
    const rng = new Rng(SEED + 10);
    const a = await writeFake(fresh("ra"), false, [randomMod(rng, "m.q", 8, 8, 2, 2)]);
    const b = await writeFake(fresh("rb"), false, [randomMod(rng, "m.q", 8, 8, 3, 3)]);
    await assert.rejects(run(opts([a.dir, b.dir], fresh("fair"), { method: "fair" })), InvalidInputError);
  });
});

describe("refusals write nothing", () => {
  test("differing passthrough: error by default; first keeps input 0's, drop leaves it out; identical ones always kept", async () => {
    const rng = new Rng(SEED + 11);
    const head0 = f32(rng.normals(4)),
      head1 = f32(rng.normals(4)),
      shared = f32(rng.normals(3));
    const a = await writeFake(fresh("pa"), false, [randomMod(rng, "m.q", 8, 8, 2, 2)], {
      "base_model.model.head.weight": head0,
      "base_model.model.norm.weight": shared,
    });
    const b = await writeFake(fresh("pb"), false, [randomMod(rng, "m.q", 8, 8, 2, 2)], {
      "base_model.model.head.weight": head1,
      "base_model.model.norm.weight": shared,
    });
    const out = fresh("pt");
    await assert.rejects(
      run(opts([a.dir, b.dir], out, { method: "cat" })),
      (e: unknown) => e instanceof InvalidInputError && /passthrough/.test((e as Error).message),
    );
    assert.ok(!existsSync(out));
    const first = fresh("pt-first");
    const r1 = await run(opts([a.dir, b.dir], first, { method: "cat", passthrough: "first" }));
    assert.deepEqual(r1.passthrough.conflicts, ["base_model.model.head.weight"]);
    const ad = await loadAdapter(first);
    try {
      assert.deepEqual(Array.from(await ad.file.readFloat64("base_model.model.head.weight")), Array.from(head0));
      assert.deepEqual(Array.from(await ad.file.readFloat64("base_model.model.norm.weight")), Array.from(shared));
    } finally {
      await ad.file.close();
    }
    const drop = fresh("pt-drop");
    const r2 = await run(opts([a.dir, b.dir], drop, { method: "cat", passthrough: "drop" }));
    assert.deepEqual(r2.passthrough.dropped, ["base_model.model.head.weight"]);
    const dd = await loadAdapter(drop);
    try {
      assert.deepEqual(
        dd.passthrough.map((t) => t.name),
        ["base_model.model.norm.weight"],
      );
    } finally {
      await dd.file.close();
    }
  });

  test("mismatched shapes are refused (exit 3), wrong --weights count is a usage error (exit 2)", async () => {
    const rng = new Rng(SEED + 12);
    const a = await writeFake(fresh("sa"), false, [randomMod(rng, "m.q", 8, 8, 2, 2)]);
    const b = await writeFake(fresh("sb"), false, [randomMod(rng, "m.q", 8, 6, 2, 2)]);
    const out = fresh("shape");
    await assert.rejects(
      run(opts([a.dir, b.dir], out, { method: "svd" })),
      (e: unknown) => e instanceof InvalidInputError && /cannot be merged/.test((e as Error).message),
    );
    assert.ok(!existsSync(out));
    await assert.rejects(
      run(opts([a.dir, a.dir], out, { method: "svd", weights: [1] })),
      (e: unknown) => e instanceof UsageError && (e as UsageError).exitCode === 2,
    );
  });
});

describe("a target that cancels (an adapter merged with its negation)", () => {
  // T = ΔW − ΔW is 0 exactly; computed from the factors it is rounding noise (~1e-16 of the terms).
  // Reported: target_norm 0 and relative error 0 where the output is 0 too (every method but
  // dare's, whose masks differ per input), infinite (null in JSON) where it is not, with a note.
  test("target_norm 0, relative error 0 (or ∞ → null for dare), a note, and a report the schema accepts", async () => {
    const rng = new Rng(SEED + 20);
    const a = await writeFake(fresh("neg"), false, [
      randomMod(rng, "model.layers.0.q_proj", 24, 20, 4, 8),
      randomMod(rng, "model.layers.0.v_proj", 16, 20, 3, 6),
    ]);
    const { validate } = await import("../../test/json-schema.js");
    const { repoRoot } = await import("../../test/paths.js");
    const schemas = join(repoRoot, "docs", "schemas");
    const schema = JSON.parse(readFileSync(join(schemas, "merge.schema.json"), "utf8")) as Record<string, unknown>;
    for (const method of ["cat", "svd", "linear", "ties", "magnitude_prune", "dare"] as const) {
      const rep = await run(opts([a.dir, a.dir], fresh(`neg-${method}`), { method, weights: [1, -1] }));
      const zero = method !== "dare";
      for (const m of rep.modules) {
        assert.equal(m.target_norm, 0, `${method} ${m.name}: target_norm`);
        assert.equal(m.relative_error, zero ? 0 : Infinity, `${method} ${m.name}: relative_error`);
        assert.equal(m.retained_energy, undefined, `${method} ${m.name}: no share of a target that is rounding noise`);
      }
      assert.equal(rep.totals.relative_error, zero ? 0 : Infinity, `${method}: total`);
      const note = rep.notes.find((n) => /cancels to the rounding level/.test(n));
      assert.ok(note, `${method}: a note says so (${rep.notes.join(" | ")})`);
      if (!zero) assert.match(note, /infinite \(null in --json\) for the 2/);
      const doc = JSON.parse(JSON.stringify(rep)) as { modules: { relative_error: unknown }[] };
      if (!zero) assert.equal(doc.modules[0]!.relative_error, null);
      assert.deepEqual(validate(doc, schema, schemas), [], `${method}: report against merge.schema.json`);
    }
  });

  test("a small target that does not cancel to rounding level (T = 10⁻⁹·ΔW) keeps its norm and error", async () => {
    const rng = new Rng(SEED + 21);
    const a = await writeFake(fresh("near"), false, [randomMod(rng, "model.layers.0.q_proj", 24, 20, 4, 8)]);
    const weights = [1, -(1 - 1e-9)];
    const rep = await run(opts([a.dir, a.dir], fresh("near-cat"), { method: "cat", weights }));
    const T = target([a, a], weights).get("model.layers.0.q_proj")!;
    const ref = Math.sqrt(T.T.reduce((s, v) => s + v * v, 0));
    const m = rep.modules[0]!;
    assert.ok(Math.abs(m.target_norm - ref) <= 1e-5 * ref, `target_norm ${m.target_norm} vs dense ${ref}`);
    assert.ok(!rep.notes.some((n) => /cancels/.test(n)), rep.notes.join(" | "));
  });
});
