// lora apply merging a weight piece by piece (surgery/apply.ts): pieces of 64 rows (the smallest)
// give the very bytes of the default pieces (one piece per weight here), on every backend, with two
// adapters on one weight and a last piece shorter than the others; the result is W + Σ c·s·B·A
// within one rounding of the dtype plus float32 accumulation (a float64 reference built here from
// the generated factors); a NaN in the base is reported at its index in the whole weight.
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { decodeToFloat64 } from "../common/dtype.js";
import { writeAdapter, type OutModule } from "../formats/adapter/write.js";
import { Rng } from "../linalg/random.js";
import { testBackends } from "../test/backends.js";
import { writeGeneratedModel, type PairSpec } from "../test/models.js";
import { runApply } from "./apply.js";
import { slowedBackend } from "../test/slowed-backend.js";

const SEED = process.env.LORA_TEST_SEED !== undefined ? Number(process.env.LORA_TEST_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
console.log(`apply pieces: seed ${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

const tmp = mkdtempSync(join(tmpdir(), "lora-apply-pieces-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

// gate_proj and up_proj are 200×40: pieces of 64 rows are 64, 64, 64 and 8 rows.
const SIZE = { layers: 1, hidden: 40, inter: 200, vocab: 64, kv: 40 };
const GATE = "model.layers.0.mlp.gate_proj";

/** Tensors of a .safetensors file by name: dtype, shape, bytes (parsed here, not by the reader under test). */
function tensorsOf(path: string): Map<string, { dtype: string; shape: number[]; bytes: Uint8Array; at: number }> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array; at: number }>();
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") continue;
    const at = 8 + n + v.data_offsets[0];
    out.set(k, { dtype: v.dtype, shape: v.shape, bytes: buf.subarray(at, 8 + n + v.data_offsets[1]), at });
  }
  return out;
}

interface Factors {
  B: Float32Array;
  A: Float32Array;
  r: number;
  scale: number;
}

/** A PEFT adapter on gate_proj (and q_proj), rank r, alpha 8: its factors are returned for the reference. */
async function adapter(dir: string, rng: Rng, r: number): Promise<Factors> {
  const mk = (path: string, out: number, inn: number) => ({
    path,
    out,
    inn,
    B: Float32Array.from(rng.normals(out * r, 0.05)),
    A: Float32Array.from(rng.normals(r * inn, 0.3)),
  });
  const gate = mk(GATE, SIZE.inter, SIZE.hidden);
  const q = mk("model.layers.0.self_attn.q_proj", SIZE.hidden, SIZE.hidden);
  const modules: OutModule[] = [gate, q].map((m) => ({
    path: m.path,
    kind: "linear",
    rank: r,
    alpha: 8,
    out: m.out,
    in: m.inn,
    dtype: "F32",
    produce: async () => ({ A: m.A, B: m.B }),
  }));
  await writeAdapter(
    dir,
    { format: "peft", modules, passthrough: [], metadata: {}, baseConfig: { base_model_name_or_path: "test/llama" } },
    { force: true, inputs: [] },
  );
  return { B: gate.B, A: gate.A, r, scale: 8 / r };
}

describe("apply in pieces", async () => {
  const backends = await testBackends();
  for (const dtype of ["BF16", "F32"] as const) {
    test(`${dtype}: 64-row pieces give the bytes of whole weights and W + Σ c·s·B·A within one rounding`, async () => {
      const spec: PairSpec = { family: "llama", size: SIZE, dtype, rank: 4, noise: 1e-3, seed: SEED };
      const base = join(tmp, `base-${dtype}`);
      await writeGeneratedModel(base, spec, false, 1);
      const rng = new Rng(SEED + 7);
      const f1 = await adapter(join(tmp, `a1-${dtype}`), rng, 3);
      const f2 = await adapter(join(tmp, `a2-${dtype}`), rng, 5);
      const scales = [0.7, -1.3];
      const W = tensorsOf(join(base, "model.safetensors")).get(`${GATE}.weight`)!;
      const w = decodeToFloat64(dtype, W.bytes);
      for (const be of backends) {
        const outs: Buffer[] = [];
        for (const pieceBytes of [1, undefined]) {
          const out = join(tmp, `out-${dtype}-${be.name}-${pieceBytes ?? "default"}.safetensors`);
          await runApply(
            { base, adapters: [join(tmp, `a1-${dtype}`), join(tmp, `a2-${dtype}`)], output: out, scales, subtract: false, force: true },
            { backend: be, ...(pieceBytes !== undefined ? { pieceBytes } : {}) },
          );
          outs.push(readFileSync(out));
          if (pieceBytes !== 1) continue;
          const got = decodeToFloat64(dtype, tensorsOf(out).get(`${GATE}.weight`)!.bytes);
          const u = dtype === "BF16" ? 2 ** -8 : 2 ** -24;
          let worst = 0;
          for (let i = 0; i < SIZE.inter; i++)
            for (let j = 0; j < SIZE.hidden; j++) {
              let ref = w[i * SIZE.hidden + j]!,
                mag = Math.abs(ref);
              [f1, f2].forEach((f, t) => {
                const c = scales[t]! * f.scale;
                for (let k = 0; k < f.r; k++) {
                  const p = f.B[i * f.r + k]! * f.A[k * SIZE.hidden + j]!;
                  ref += c * p;
                  mag += Math.abs(c * p);
                }
              });
              const tol = u * Math.abs(ref) + 4 * 2 ** -24 * mag;
              worst = Math.max(worst, Math.abs(got[i * SIZE.hidden + j]! - ref) / tol);
            }
          assert.ok(worst <= 1, `${be.name}: worst error ${worst} of the tolerance (one ${dtype} rounding + float32 accumulation)`);
        }
        assert.ok(outs[0]!.equals(outs[1]!), `${be.name}: 64-row pieces wrote other bytes than whole-weight pieces`);
      }
    });
  }

  test("a NaN in the base's third piece is reported at its index in the whole weight", async () => {
    const spec: PairSpec = { family: "llama", size: SIZE, dtype: "BF16", rank: 4, noise: 1e-3, seed: SEED };
    const clean = join(tmp, "nan-clean");
    await writeGeneratedModel(clean, spec, false, 1);
    const base = join(tmp, "nan-base");
    await writeGeneratedModel(base, spec, false, 1);
    const file = join(base, "model.safetensors");
    copyFileSync(join(clean, "model.safetensors"), file);
    const W = tensorsOf(file).get(`${GATE}.weight`)!;
    const index = 150 * SIZE.hidden + 7; // row 150: the third piece of 64 rows
    const bytes = readFileSync(file);
    bytes.writeUInt16LE(0x7fc0, W.at + 2 * index);
    writeFileSync(file, bytes);
    await adapter(join(tmp, "nan-a"), new Rng(SEED + 8), 2);
    for (const be of backends) {
      await assert.rejects(
        runApply(
          { base, adapters: [join(tmp, "nan-a")], output: join(tmp, `nan-out-${be.name}`), scales: [1], subtract: false, force: true },
          { backend: be, pieceBytes: 1 },
        ),
        (e: Error) => e.message.includes(`${GATE}.weight holds NaN at index ${index}`),
      );
    }
  });

  test("a failed merge waits for the pieces merged ahead before the lanes end, and writes nothing", async () => {
    const spec: PairSpec = { family: "llama", size: SIZE, dtype: "F32", rank: 4, noise: 1e-3, seed: SEED };
    const base = join(tmp, "ahead-base");
    await writeGeneratedModel(base, spec, false, 1);
    await adapter(join(tmp, "ahead-a"), new Rng(SEED + 9), 2);
    const [be] = backends;
    // The first piece's merge fails at once; the pieces merged ahead of it are still running then.
    const { backend, stats } = slowedBackend(be!, ["mergeWeight"], "fail");
    const output = join(tmp, "ahead-out.safetensors");
    await assert.rejects(
      runApply({ base, adapters: [join(tmp, "ahead-a")], output, scales: [1], subtract: false, force: true }, { backend, pieceBytes: 1 }),
      /injected failure/,
    );
    assert.ok(stats.calls > 1, `pieces were merged ahead (${stats.calls} calls)`);
    assert.equal(stats.atEnd, 0, "no merge in flight when the lanes ended");
    assert.ok(!existsSync(output), "nothing written");
  });
});
