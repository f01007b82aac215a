// lora diff against independent references: factors built with principal angles known by
// construction (column and row spaces rotated by chosen angles, down to 1e-9 rad), and dense
// float64 cosines / norms of the differences computed here and with numpy when present.
// PEFT and kohya inputs of different ranks, near-identical and disjoint modules, --signs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAdapter } from "../formats/adapter/index.js";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../formats/safetensors/index.js";
import { gemm64 } from "../linalg/js/dense.js";
import { Rng } from "../linalg/random.js";
import { hasNumpy, numpy, orth } from "../test/reference.js";
import { testBackends } from "../test/backends.js";
import { diffAdapters } from "./diff.js";
import { runCli as cli } from "../test/cli.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`diff.test seed=${seed}`);
const work = mkdtempSync(join(tmpdir(), "lora-diff-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

interface Factors {
  B: Float64Array;
  A: Float64Array;
  out: number;
  inn: number;
  r: number;
  scale: number;
}

const mul = (x: Float64Array, m: number, k: number, y: Float64Array, n: number) => gemm64(x, m, k, y, k, n, false, false, 1).data;
const tr = (x: Float64Array, m: number, n: number) => {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = x[i * n + j]!;
  return t;
};

/**
 * Two k-dimensional subspaces of R^n with principal angles `angles` (k of them): X = Q[:, :k] and
 * Y whose i-th basis vector is cos θᵢ·Q[:, i] + sin θᵢ·Q[:, k+i], mixed by a random k×k rotation.
 */
function pairWithAngles(rng: Rng, n: number, angles: number[]): { X: Float64Array; Y: Float64Array } {
  const k = angles.length,
    Q = orth(rng, n, 2 * k);
  const X = new Float64Array(n * k),
    Y0 = new Float64Array(n * k);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < k; j++) {
      X[i * k + j] = Q[i * 2 * k + j]!;
      Y0[i * k + j] = Math.cos(angles[j]!) * Q[i * 2 * k + j]! + Math.sin(angles[j]!) * Q[i * 2 * k + k + j]!;
    }
  return { X, Y: mul(Y0, n, k, orth(rng, k, k), k) };
}

/** Factors of ΔW = s·B·A with column space span(X) (out×k) and row space span(V) (in×k): B = X·C, A = Vᵀ. */
function factorsOn(rng: Rng, X: Float64Array, V: Float64Array, out: number, inn: number, k: number, scale: number): Factors {
  const C = rng.normals(k * k);
  for (let i = 0; i < k; i++) C[i * k + i] += 3; // well conditioned
  return { B: mul(X, out, k, C, k), A: tr(V, inn, k), out, inn, r: k, scale };
}

function randomFactors(rng: Rng, out: number, inn: number, r: number, scale: number): Factors {
  return { B: rng.normals(out * r), A: rng.normals(r * inn), out, inn, r, scale };
}

function dense(f: Factors): Float64Array {
  return gemm64(f.B, f.out, f.r, f.A, f.r, f.inn, false, false, f.scale).data;
}

async function writePeft(dir: string, mods: Record<string, Factors>, dtype: "F32" | "F64" = "F32"): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const specs: TensorSpec[] = [];
  const alphas: Record<string, number> = {};
  for (const [path, f] of Object.entries(mods)) {
    const base = `base_model.model.${path}`;
    specs.push({ name: `${base}.lora_A.weight`, dtype, shape: [f.r, f.inn], data: encodeFloats(dtype, f.A) });
    specs.push({ name: `${base}.lora_B.weight`, dtype, shape: [f.out, f.r], data: encodeFloats(dtype, f.B) });
    alphas[path] = f.scale * f.r;
  }
  writeFileSync(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
  const first = Object.values(mods)[0]!;
  writeFileSync(
    join(dir, "adapter_config.json"),
    JSON.stringify({
      peft_type: "LORA",
      r: first.r,
      lora_alpha: first.r,
      target_modules: ["q_proj", "v_proj", "o_proj", "up_proj"],
      alpha_pattern: alphas,
      rank_pattern: Object.fromEntries(Object.entries(mods).map(([p, f]) => [p, f.r])),
    }),
  );
  return dir;
}

async function writeKohya(file: string, mods: Record<string, Factors>, dtype: "F32" | "F64" = "F32"): Promise<string> {
  const specs: TensorSpec[] = [];
  for (const [path, f] of Object.entries(mods)) {
    const stem = "lora_" + path.replace(/\./g, "_");
    specs.push({ name: `${stem}.lora_down.weight`, dtype, shape: [f.r, f.inn], data: encodeFloats(dtype, f.A) });
    specs.push({ name: `${stem}.lora_up.weight`, dtype, shape: [f.out, f.r], data: encodeFloats(dtype, f.B) });
    specs.push({ name: `${stem}.alpha`, dtype: "F64", shape: [], data: encodeFloats("F64", Float64Array.of(f.scale * f.r)) });
  }
  writeFileSync(file, await serializeSafetensors(specs, null));
  return file;
}

/** Float32 storage rounds the factors: the references use the values as stored. */
function asStored(f: Factors): Factors {
  return { ...f, B: Float64Array.from(Float32Array.from(f.B)), A: Float64Array.from(Float32Array.from(f.A)) };
}

const backends = await testBackends();

test("diff: principal angles known by construction, cosines and differences equal dense float64 (PEFT vs kohya, ranks differ)", async () => {
  const rng = new Rng(seed);
  const anglesOut = [1e-9, 1e-5, 0.3, 1.2];
  const anglesIn = [2e-8, 0.01, 0.7, Math.PI / 2 - 1e-3];
  const out = 48,
    inn = 40,
    k = anglesOut.length;
  const cols = pairWithAngles(rng, out, anglesOut),
    rows = pairWithAngles(rng, inn, anglesIn);
  const a: Record<string, Factors> = {
    "model.layers.0.self_attn.q_proj": factorsOn(rng, cols.X, rows.X, out, inn, k, 0.5),
    "model.layers.0.self_attn.v_proj": randomFactors(rng, 32, 24, 8, 2),
    "model.layers.0.mlp.up_proj": randomFactors(rng, 16, 12, 4, 1),
    "model.layers.1.self_attn.o_proj": randomFactors(rng, 20, 20, 3, 1),
  };
  const near = a["model.layers.0.mlp.up_proj"]!;
  const b: Record<string, Factors> = {
    "model.layers.0.self_attn.q_proj": factorsOn(rng, cols.Y, rows.Y, out, inn, k, 2),
    "model.layers.0.self_attn.v_proj": randomFactors(rng, 32, 24, 5, 1.5),
    // the same ΔW up to a 1e-6 relative perturbation of B, split differently (rank 4 → same)
    "model.layers.0.mlp.up_proj": { ...near, B: Float64Array.from(near.B, (x) => x * (1 + 1e-6 * rng.normal())) },
    "model.layers.2.self_attn.q_proj": randomFactors(rng, 20, 20, 3, 1),
  };
  const pa = await writePeft(join(work, "a"), a, "F64");
  const pb = await writeKohya(join(work, "b.safetensors"), b, "F64");
  const A = await loadAdapter(pa),
    B = await loadAdapter(pb);
  try {
    for (const be of backends) {
      const rep = await diffAdapters(A, B, be, { signs: true });
      assert.deepEqual(rep.only_in_a, ["model.layers.1.self_attn.o_proj"], be.name);
      assert.deepEqual(rep.only_in_b, ["lora_model_layers_2_self_attn_q_proj"], be.name);
      assert.equal(rep.modules.length, 3);
      const q = rep.modules.find((m) => m.name === "model.layers.0.self_attn.q_proj")!;
      const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);
      q.principal_angles_out.forEach((t, i) => assert.ok(Math.abs(t - sorted(anglesOut)[i]!) < 1e-9, `${be.name} out angle ${i}: ${t} vs ${anglesOut[i]}`));
      q.principal_angles_in.forEach((t, i) => assert.ok(Math.abs(t - sorted(anglesIn)[i]!) < 1e-9, `${be.name} in angle ${i}: ${t} vs ${anglesIn[i]}`));
      for (const m of rep.modules) {
        const fa = a[m.name]!,
          fb = b[m.name]!; // stored as F64: exactly these values
        const wa = dense(fa),
          wb = dense(fb);
        let dot = 0,
          na = 0,
          nb = 0,
          nd = 0,
          both = 0,
          differ = 0;
        for (let i = 0; i < wa.length; i++) {
          dot += wa[i]! * wb[i]!;
          na += wa[i]! ** 2;
          nb += wb[i]! ** 2;
          nd += (wa[i]! - wb[i]!) ** 2;
          if (wa[i] !== 0 && wb[i] !== 0) {
            both++;
            if (wa[i]! > 0 !== wb[i]! > 0) differ++;
          }
        }
        assert.ok(Math.abs(m.cosine! - dot / Math.sqrt(na * nb)) < 1e-9, `${be.name} ${m.name} cosine ${m.cosine} vs ${dot / Math.sqrt(na * nb)}`);
        const rel = Math.sqrt(nd / na);
        assert.ok(Math.abs(m.relative_difference! - rel) <= 1e-9 * rel + 1e-12, `${be.name} ${m.name} rel diff ${m.relative_difference} vs ${rel}`);
        assert.ok(Math.abs(m.norm_a - Math.sqrt(na)) <= 1e-12 * Math.sqrt(na));
        assert.ok(Math.abs(m.sign_conflict! - differ / both) < 1e-12, `${be.name} ${m.name} signs`);
        assert.equal(m.principal_angles_out.length, Math.min(fa.r, fb.r));
        for (const xs of [m.principal_angles_out, m.principal_angles_in]) for (let i = 1; i < xs.length; i++) assert.ok(xs[i]! >= xs[i - 1]!, "ascending");
      }
      const near1 = rep.modules.find((m) => m.name === "model.layers.0.mlp.up_proj")!;
      assert.ok(near1.relative_difference! > 1e-8 && near1.relative_difference! < 1e-5, `near-identical: ${near1.relative_difference}`);
      assert.ok(near1.principal_angles_out[3]! < 1e-4);
    }
  } finally {
    await A.file.close();
    await B.file.close();
  }
});

test("diff: angles between generic subspaces equal numpy's dense SVD route within 1e-9", {
  skip: hasNumpy() ? false : "python3 with numpy not found",
}, async () => {
  const rng = new Rng(seed + 1);
  const fa = asStored(randomFactors(rng, 30, 26, 6, 1)),
    fb = asStored(randomFactors(rng, 30, 26, 4, 0.5));
  const pa = await writePeft(join(work, "na"), { "model.layers.0.self_attn.q_proj": fa });
  const pb = await writePeft(join(work, "nb"), { "model.layers.0.self_attn.q_proj": fb });
  // numpy: dense ΔW, full SVD, rank-k bases, cosines from σ(XᵀY), sines from σ of the residual
  const ref = numpy<{ out: number[]; inn: number[]; cos: number; rel: number }>(
    `
Wa = np.array(inp["a"]).reshape(30, 26); Wb = np.array(inp["b"]).reshape(30, 26)
def bases(W):
    U, S, Vt = np.linalg.svd(W)
    k = int((S > 1e-10 * S[0]).sum())
    return U[:, :k], Vt[:k].T
def angles(X, Y):
    if X.shape[1] < Y.shape[1]: X, Y = Y, X
    c = np.clip(np.linalg.svd(X.T @ Y, compute_uv=False), 0, 1)
    s = np.clip(np.sort(np.linalg.svd(Y - X @ (X.T @ Y), compute_uv=False)), 0, 1)
    return [float(np.arcsin(s[i]) if c[i]**2 >= 0.5 else np.arccos(c[i])) for i in range(Y.shape[1])]
Ua, Va = bases(Wa); Ub, Vb = bases(Wb)
print(json.dumps({"out": angles(Ua, Ub), "inn": angles(Va, Vb), "cos": float((Wa*Wb).sum()/np.linalg.norm(Wa)/np.linalg.norm(Wb)), "rel": float(np.linalg.norm(Wa-Wb)/np.linalg.norm(Wa))}))
`,
    { a: Array.from(dense(fa)), b: Array.from(dense(fb)) },
  );
  const A = await loadAdapter(pa),
    B = await loadAdapter(pb);
  try {
    for (const be of backends) {
      const m = (await diffAdapters(A, B, be, { signs: false })).modules[0]!;
      assert.equal(m.principal_angles_out.length, 4);
      m.principal_angles_out.forEach((t, i) => assert.ok(Math.abs(t - ref.out[i]!) < 1e-9, `${be.name} out ${i}: ${t} vs ${ref.out[i]}`));
      m.principal_angles_in.forEach((t, i) => assert.ok(Math.abs(t - ref.inn[i]!) < 1e-9, `${be.name} in ${i}: ${t} vs ${ref.inn[i]}`));
      assert.ok(Math.abs(m.cosine! - ref.cos) < 1e-9);
      assert.ok(Math.abs(m.relative_difference! - ref.rel) < 1e-9 * ref.rel);
      assert.equal(m.sign_conflict, undefined);
    }
  } finally {
    await A.file.close();
    await B.file.close();
  }
});

test("lora diff: JSON document, TSV rows and summary, shape mismatch exits 3", async () => {
  const rng = new Rng(seed + 2);
  const pa = await writePeft(join(work, "ca"), {
    "model.layers.0.self_attn.q_proj": randomFactors(rng, 12, 10, 2, 1),
    "model.layers.0.self_attn.v_proj": randomFactors(rng, 12, 10, 2, 1),
  });
  const pb = await writePeft(join(work, "cb"), { "model.layers.0.self_attn.q_proj": randomFactors(rng, 12, 10, 3, 1) });
  const j = await cli(["diff", pa, pb, "--json", "--backend", "js"]);
  assert.equal(j.code, 0, j.err);
  const doc = JSON.parse(j.out);
  assert.deepEqual(Object.keys(doc.modules[0]).slice(0, 1), ["name"]);
  for (const k of ["name", "cosine", "relative_difference", "principal_angles_out", "principal_angles_in"]) assert.ok(k in doc.modules[0], k);
  assert.deepEqual(doc.only_in_a, ["model.layers.0.self_attn.v_proj"]);
  assert.deepEqual(doc.only_in_b, []);
  const t = await cli(["diff", pa, pb, "--backend", "js"]);
  assert.equal(t.code, 0);
  assert.equal(t.out.trim().split("\n").length, 1);
  assert.equal(t.out.split("\t")[0], "model.layers.0.self_attn.q_proj");
  assert.match(t.err, /1 modules compared.*only in A: 1/);
  const pc = await writePeft(join(work, "cc"), { "model.layers.0.self_attn.q_proj": randomFactors(rng, 12, 11, 2, 1) });
  const bad = await cli(["diff", pa, pc, "--backend", "js"]);
  assert.equal(bad.code, 3);
  assert.match(bad.err, /q_proj.*12×10.*12×11/);
  // No module in common: exit 3 naming both, not an empty report with exit 0.
  const pd = await writePeft(join(work, "cd"), { "model.layers.0.mlp.up_proj": randomFactors(rng, 12, 10, 2, 1) });
  for (const args of [[], ["--json"]]) {
    const none = await cli(["diff", pa, pd, "--backend", "js", ...args]);
    assert.equal(none.code, 3, none.err);
    assert.equal(none.out, "");
    assert.match(none.err, /no module in common/);
  }
});
