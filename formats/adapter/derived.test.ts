// Derived modules (derived.ts): a module stored as B·R·A read as exact factors (B·R, A) computed on
// read, next to a plain B·A module and a passthrough tensor of the same file. Checked against ΔW
// formed densely here in float64, and the derived file's byte-level contract (sizes, copyRaw).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../linalg/random.js";
import { encodeFloats, SafetensorsFile, serializeSafetensors, type TensorSpec } from "../safetensors/index.js";
import { buildDerivedAdapterParts } from "./derived.js";
import { readFactors } from "./factors.js";
import { buildModule } from "./module.js";

const seed = Number(process.env["LORA_SEED"] ?? Date.now() % 1e9);

function randn(rng: Rng, n: number): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal());
}

test(`derived factors: B·R·A module equals its dense ΔW; plain module and passthrough read as stored (seed ${seed})`, async () => {
  const rng = new Rng(seed);
  const [out, r, inn] = [7, 3, 5];
  const B = randn(rng, out * r),
    R = randn(rng, r * r),
    A = randn(rng, r * inn),
    P = randn(rng, 4);
  const specs: TensorSpec[] = [
    { name: "m.B", dtype: "F32", shape: [out, r], data: encodeFloats("F32", B) },
    { name: "m.R", dtype: "F32", shape: [r, r], data: encodeFloats("F32", R) },
    { name: "m.A", dtype: "F32", shape: [r, inn], data: encodeFloats("F32", A) },
    { name: "p.lora_A.weight", dtype: "F32", shape: [r, inn], data: encodeFloats("F32", A) },
    { name: "p.lora_B.weight", dtype: "F32", shape: [out, r], data: encodeFloats("F32", B) },
    { name: "head", dtype: "F32", shape: [4], data: encodeFloats("F32", P) },
  ];
  const base = SafetensorsFile.fromBuffer(await serializeSafetensors(specs, { k: "v" }), "mem");
  const f32 = async (n: string) => Float64Array.from(await base.readFloat32(n));
  const [Bs, Rs, As] = await Promise.all([f32("m.B"), f32("m.R"), f32("m.A")]);
  let calls = 0;
  const plain = buildModule(
    { A: base.tensor("p.lora_A.weight"), B: base.tensor("p.lora_B.weight"), extras: {} },
    { name: "p", path: "p", matchKey: "p", label: "mem" },
  );
  const parts = buildDerivedAdapterParts(
    base,
    [
      {
        name: "m",
        path: "m",
        matchKey: "m",
        kind: "linear",
        out,
        in: inn,
        rank: r,
        family: { type: "test-bra", detail: "B·R·A", stored: [base.tensor("m.B"), base.tensor("m.R"), base.tensor("m.A")], dtype: "F32" },
        factors: async () => {
          calls++;
          const BR = new Float64Array(out * r);
          for (let i = 0; i < out; i++) for (let j = 0; j < r; j++) for (let k = 0; k < r; k++) BR[i * r + j]! += Bs[i * r + k]! * Rs[k * r + j]!;
          return { B: BR, A: As.slice() };
        },
      },
    ],
    [plain],
    [base.tensor("head")],
  );
  assert.equal(parts.file.isDerived, true);
  assert.deepEqual(parts.file.metadata, { k: "v" });
  const m = parts.modules.find((x) => x.name === "m")!;
  assert.equal(m.A.dtype, "F64");
  assert.equal(m.scale, 1);
  const adapter = { source: "mem", file: parts.file } as Parameters<typeof readFactors>[0];
  const f = await readFactors(adapter, m, "f64");
  assert.equal(calls, 1, "one computation serves both factors");
  // Dense ΔW = B·R·A in float64, formed independently (left to right).
  let worst = 0,
    norm = 0;
  for (let i = 0; i < out; i++)
    for (let j = 0; j < inn; j++) {
      let want = 0;
      for (let k = 0; k < r; k++) for (let l = 0; l < r; l++) want += Bs[i * r + k]! * Rs[k * r + l]! * As[l * inn + j]!;
      let got = 0;
      for (let k = 0; k < r; k++) got += f.B.data[i * r + k]! * f.A.data[k * inn + j]!;
      worst = Math.max(worst, Math.abs(got - want));
      norm = Math.max(norm, Math.abs(want));
    }
  assert.ok(worst <= 1e-12 * norm, `max |ΔW - ref| ${worst} (ref max ${norm})`);
  // Plain module and passthrough: the stored bytes.
  const p = parts.modules.find((x) => x.name === "p")!;
  assert.deepEqual(await parts.file.readRaw(p.A), await base.readRaw("p.lora_A.weight"));
  const chunks: Uint8Array[] = [];
  await parts.file.copyRaw(parts.passthrough[0]!, async (c) => void chunks.push(c), 5);
  assert.deepEqual(Buffer.concat(chunks), await base.readRaw("head"));
  assert.deepEqual(
    chunks.map((c) => c.byteLength),
    [5, 5, 5, 1],
  );
  await parts.file.close();
  await assert.rejects(base.readRaw("head"), /after close/, "closing the derived file closes its base");
});

test("derived file: a producer that returns the wrong byte count is an internal error, not silent data", async () => {
  const f = SafetensorsFile.derived("mem", null, [{ name: "x", dtype: "F32", shape: [3], produce: async () => new Uint8Array(8) }], null);
  await assert.rejects(f.readRaw("x"), /produced 8 bytes, expected 12/);
});
