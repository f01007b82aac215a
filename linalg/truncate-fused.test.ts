// The fused truncation (LinalgBackend.truncateFactors; cpu: one native call) and spectrum (factorSpectrum) of every backend against (1) the TS route
// of linalg/truncate.ts on the js backend, the reference it must match, and (2) the dense float64 optimum
// (dense ΔW, one-sided Jacobi SVD): fresh random data each run (seed printed; LORA_TEST_SEED
// replays), every input dtype, 16- and 32-bit outputs, both splits, s' = s and s' ≠ s.
//
// Tolerances, relative to ‖ΔW‖_F unless said:
//   singular values           1e-10 of σ₁ (both routes are float64 on the same Grams' maths)
//   ‖ΔW‖², tail σ²            1e-10 of ‖ΔW‖²
//   output vs TS route        2 units in the last place of the output dtype (float32 products for
//                             16-bit outputs may round a value the other way), as ΔW: 4·ε_dtype
//   output vs optimum         4·ε_dtype + 1e-9 (the factors are the optimum, rounded to the dtype)
//   reported relative error   the dense ‖ΔW − s'B''A''‖/‖ΔW‖ within 1e-6 (relative) + ε_dtype² (the
//                             second-order term the report leaves out) + 1e-9, + 1e-7 with float32
//                             products (their own error, ~1e-7·‖ΔW‖, is not in the report); and, for
//                             both routes, within [e_opt, e_opt + (2ε + ε²)·√t + 1e-6] (ε the output's
//                             unit roundoff): the optimum's error plus what rounding can add
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decodeToFloat64, encodeFloats } from "../common/dtype.js";
import { runsTsRoute } from "./fused.js";
import { jsBackend } from "./js/index.js";
import { Rng } from "./random.js";
import type { FactorDType, LinalgBackend, Mat, TruncateFactorsInput } from "./types.js";
import { testBackends } from "../test/backends.js";
import { denseDelta, logspace, optimal, relDiff, withSpectrum } from "../test/reference.js";
import { lowRankSingularValues } from "./lowrank.js";
import { roundForDtype, truncateModule, truncationError, type SplitMode } from "./truncate.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`truncate fused.test seed=${seed}`);

type M64 = Mat<Float64Array>;
const EPS: Record<FactorDType, number> = { F64: 2 ** -53, F32: 2 ** -24, F16: 2 ** -11, BF16: 2 ** -8 };

function raw(dtype: FactorDType, x: Float64Array): { raw: Uint8Array; values: Float64Array } {
  const bytes = encodeFloats(dtype, x);
  return { raw: bytes, values: decodeToFloat64(dtype, bytes) };
}

interface Case {
  name: string;
  B: M64;
  A: M64;
  s: number;
  t: number;
}

function cases(rng: Rng): Case[] {
  const g = (rows: number, cols: number, sd = 1): M64 => ({ rows, cols, data: rng.normals(rows * cols, sd) });
  const out: Case[] = [];
  for (const [o, i, r, t] of [
    [37, 23, 5, 2],
    [64, 200, 8, 3],
    [150, 40, 16, 7],
    [33, 129, 20, 20],
    [300, 70, 12, 1],
    [9, 11, 1, 1],
    [160, 150, 72, 40],
  ] as const) {
    out.push({ name: `gaussian ${o}×${i} r${r} → ${t}`, B: g(o, r, 0.02), A: g(r, i, 1 / Math.sqrt(i)), s: 0.25 + rng.uniform() * 4, t });
  }
  out.push({
    name: "decaying spectrum, κ = 1e3",
    B: withSpectrum(rng, 140, 16, logspace(16, 0, -3), true),
    A: withSpectrum(rng, 96, 16, logspace(16, 0, -1), false),
    s: 0.5,
    t: 6,
  });
  return out;
}

/** The TS route of truncate.ts (js backend) on the decoded inputs: what truncateFactors must equal. */
async function tsRoute(B: M64, A: M64, s: number, t: number, s2: number, split: SplitMode, outDtype: FactorDType) {
  const r = await truncateModule(jsBackend, B, A, s, t, s2, split);
  const Bo = Float64Array.from(roundForDtype(outDtype, r.B.data)),
    Ao = Float64Array.from(roundForDtype(outDtype, r.A.data));
  const err = await truncationError(jsBackend, r.B, r.A, { rows: B.rows, cols: t, data: Bo }, { rows: t, cols: A.cols, data: Ao }, s2, r.err2, r.grams.norm2);
  return { B: Bo, A: Ao, S: r.S, norm2: r.grams.norm2, err2: r.err2, rel: err.relative_error, route: r.route };
}

// The backends whose fused operations are native calls (cpu; cuda once its kernels land): the js
// backend's are the TS route itself, the reference here.
const fusedBackends = async (): Promise<LinalgBackend[]> => (await testBackends()).filter((b) => !runsTsRoute(b));

describe("truncateFactors (fused native route)", async () => {
  const backends = await fusedBackends();
  const skip = backends.length === 0 && "no backend with truncateFactors here (the cpu addon is not built)";

  test("equals the TS route and the dense optimum: every input dtype, 16/32-bit outputs, both splits", { skip }, async () => {
    const rng = new Rng(seed);
    const dtypesIn: [FactorDType, FactorDType][] = [
      ["F16", "F16"],
      ["BF16", "BF16"],
      ["F32", "F32"],
      ["F64", "F64"],
      ["F16", "F32"],
    ];
    for (const be of backends) {
      for (const c of cases(rng)) {
        for (const [dB, dA] of dtypesIn) {
          const Bq = raw(dB, c.B.data),
            Aq = raw(dA, c.A.data);
          const B: M64 = { rows: c.B.rows, cols: c.B.cols, data: Bq.values },
            A: M64 = { rows: c.A.rows, cols: c.A.cols, data: Aq.values };
          const W = denseDelta(B.data, A.data, B.rows, B.cols, A.cols, c.s);
          const opt = optimal(W, B.rows, A.cols, c.t);
          for (const outDtype of ["F16", "BF16", "F32"] as const) {
            for (const split of ["balanced", "all-in-up"] as const) {
              const s2 = split === "balanced" ? c.s : 1.5;
              const what = `${be.name} ${c.name} ${dB}/${dA} → ${outDtype} ${split} s'=${s2}`;
              const input: TruncateFactorsInput = {
                B: { raw: Bq.raw, dtype: dB, rows: B.rows, cols: B.cols },
                A: { raw: Aq.raw, dtype: dA, rows: A.rows, cols: A.cols },
                scale: c.s,
                rank: c.t,
                scaleOut: s2,
                split,
                outDtype,
              };
              const got = await be.truncateFactors!(input);
              const ref = await tsRoute(B, A, c.s, c.t, s2, split, outDtype);
              assert.equal(got.kind, "done", what);
              if (got.kind !== "done") continue;
              assert.equal(ref.route, "gram", `${what}: the TS route took Householder`);
              // Spectrum and error terms
              for (let i = 0; i < B.cols; i++) assert.ok(Math.abs(got.S[i]! - ref.S[i]!) <= 1e-10 * ref.S[0]!, `${what}: σ${i} ${got.S[i]} vs ${ref.S[i]}`);
              assert.ok(Math.abs(got.norm2 - ref.norm2) <= 1e-10 * ref.norm2, `${what}: ‖ΔW‖²`);
              assert.ok(Math.abs(got.err2 - ref.err2) <= 1e-10 * ref.norm2, `${what}: tail ${got.err2} vs ${ref.err2}`);
              assert.equal(got.productBits, outDtype === "F32" || dB === "F64" ? 64 : 32, `${what}: product precision`);
              // Factors
              const Bn = decodeToFloat64(outDtype, got.B),
                An = decodeToFloat64(outDtype, got.A);
              assert.equal(Bn.length, B.rows * c.t);
              assert.equal(An.length, c.t * A.cols);
              const Wn = denseDelta(Bn, An, B.rows, c.t, A.cols, s2),
                Wref = denseDelta(ref.B, ref.A, B.rows, c.t, A.cols, s2);
              const dRef = (relDiff(Wn, Wref) * Math.sqrt(Wref.reduce((x, v) => x + v * v, 0))) / Math.sqrt(ref.norm2);
              assert.ok(dRef <= 4 * EPS[outDtype], `${what}: ‖ΔW_fused − ΔW_ts‖/‖ΔW‖ = ${dRef}`);
              const dOpt = (relDiff(Wn, opt.P) * Math.sqrt(opt.P.reduce((x, v) => x + v * v, 0))) / Math.sqrt(ref.norm2);
              assert.ok(dOpt <= 4 * EPS[outDtype] + 1e-9, `${what}: ‖ΔW_fused − [ΔW]_t‖/‖ΔW‖ = ${dOpt}`);
              // Signs: the largest-magnitude entry of each column of B' is positive (decided before
              // rounding, so after it a negative entry may tie with the largest, never exceed it).
              for (let col = 0; col < c.t; col++) {
                let pos = 0,
                  neg = 0;
                for (let i = 0; i < B.rows; i++) {
                  const v = Bn[i * c.t + col]!;
                  if (v > pos) pos = v;
                  if (-v > neg) neg = -v;
                }
                assert.ok(pos >= neg, `${what}: column ${col} of B' has a negative largest entry`);
              }
              // The reported error is the error of the factors as written.
              let e2 = 0;
              for (let k = 0; k < W.length; k++) e2 += (W[k]! - Wn[k]!) ** 2;
              const dense = Math.sqrt(e2 / ref.norm2),
                reported = Math.sqrt(Math.max(0, got.err2) + got.resid2) / Math.sqrt(got.norm2);
              // float32 products (16-bit outputs) carry an error of ~1e-7·‖ΔW‖ that the report leaves out.
              // The report leaves out ⟨E, s'δB·δA⟩ (second order: at most ε_dtype² of ‖ΔW‖, truncate.ts).
              const slack = (got.productBits === 32 ? 1e-7 : 1e-9) + EPS[outDtype] ** 2;
              assert.ok(Math.abs(reported - dense) <= 1e-6 * dense + slack, `${what}: reported ${reported} vs dense ${dense}`);
              // Against the optimum, for this route and the TS route alike: rounding the optimal factors to the
              // output dtype (unit roundoff u) adds at most s'(‖δB‖‖A'‖ + ‖B'‖‖δA‖ + ‖δB‖‖δA‖) ≤ (2u + u²)·√t·‖ΔW‖
              // (both splits give s'‖B'‖_F‖A'‖_F ≤ √t·‖ΔW‖), so each error lies in [e_opt, e_opt + that]. The two
              // routes round differently (float32 products), so where the rounding dominates (t = r) their
              // errors differ by up to the band's width, not by a fraction of the error.
              let tail2 = 0;
              for (let i = c.t; i < opt.S.length; i++) tail2 += opt.S[i]! ** 2;
              const eOpt = Math.sqrt(tail2 / ref.norm2),
                u = EPS[outDtype],
                band = (2 * u + u * u) * Math.sqrt(c.t) + 1e-6;
              for (const [who, e] of [
                ["reported", reported],
                ["TS route", ref.rel],
              ] as const) {
                assert.ok(e >= eOpt * (1 - 1e-9) - 1e-12 && e <= eOpt + band, `${what}: ${who} ${e} outside [${eOpt}, ${eOpt} + ${band}]`);
              }
            }
          }
        }
      }
    }
  });

  test("16-bit outputs: float32 and float64 products agree to the output's rounding", { skip }, async () => {
    const rng = new Rng(seed + 1);
    for (const be of backends) {
      const B = raw("F16", rng.normals(500 * 32, 0.02)),
        A = raw("F16", rng.normals(32 * 300, 0.05));
      const input: TruncateFactorsInput = {
        B: { raw: B.raw, dtype: "F16", rows: 500, cols: 32 },
        A: { raw: A.raw, dtype: "F16", rows: 32, cols: 300 },
        scale: 2,
        rank: 8,
        scaleOut: 2,
        split: "balanced",
        outDtype: "F16",
      };
      const f = await be.truncateFactors!(input),
        d = await be.truncateFactors!({ ...input, productsInDouble: true });
      assert.ok(f.kind === "done" && d.kind === "done");
      if (f.kind !== "done" || d.kind !== "done") continue;
      assert.equal(f.productBits, 32);
      assert.equal(d.productBits, 64);
      const x = decodeToFloat64("F16", f.B),
        y = decodeToFloat64("F16", d.B);
      let differ = 0;
      for (let i = 0; i < x.length; i++) {
        const ulp = 2 ** (Math.floor(Math.log2(Math.max(Math.abs(y[i]!), 2 ** -14))) - 10);
        assert.ok(Math.abs(x[i]! - y[i]!) <= ulp, `B'[${i}]: ${x[i]} vs ${y[i]}`);
        if (x[i] !== y[i]) differ++;
      }
      assert.ok(differ <= x.length / 100, `${differ} of ${x.length} values differ by one unit`);
    }
  });

  test("NaN/Inf: the first bad value of A (checked first), then B, is named", { skip }, async () => {
    for (const be of backends) {
      const base = (): TruncateFactorsInput => {
        const rng = new Rng(seed + 2);
        return {
          B: { raw: encodeFloats("F32", rng.normals(20 * 4)), dtype: "F32", rows: 20, cols: 4 },
          A: { raw: encodeFloats("F16", rng.normals(4 * 10)), dtype: "F16", rows: 4, cols: 10 },
          scale: 1,
          rank: 2,
          scaleOut: 1,
          split: "balanced",
          outDtype: "F16",
        };
      };
      const x = base();
      new DataView(x.A.raw.buffer, x.A.raw.byteOffset).setUint16(2 * 17, 0x7e00, true); // NaN at A[17]
      new DataView(x.A.raw.buffer, x.A.raw.byteOffset).setUint16(2 * 31, 0x7c00, true); // +Inf at A[31]
      new DataView(x.B.raw.buffer, x.B.raw.byteOffset).setFloat32(4 * 3, -Infinity, true);
      const r = await be.truncateFactors!(x);
      assert.deepEqual(r, { kind: "non-finite", factor: "A", index: 17, value: NaN });
      const y = base();
      new DataView(y.B.raw.buffer, y.B.raw.byteOffset).setFloat32(4 * 5, -Infinity, true);
      assert.deepEqual(await be.truncateFactors!(y), { kind: "non-finite", factor: "B", index: 5, value: -Infinity });
    }
  });

  test("zero factors give zero output factors; cancelling factors are handed back (fallback)", { skip }, async () => {
    const rng = new Rng(seed + 3);
    for (const be of backends) {
      const z = await be.truncateFactors!({
        B: { raw: new Uint8Array(30 * 4 * 2), dtype: "BF16", rows: 30, cols: 4 },
        A: { raw: new Uint8Array(4 * 7 * 2), dtype: "BF16", rows: 4, cols: 7 },
        scale: 3,
        rank: 2,
        scaleOut: 3,
        split: "balanced",
        outDtype: "BF16",
      });
      assert.equal(z.kind, "done");
      if (z.kind === "done") {
        assert.ok(z.B.every((v) => v === 0) && z.A.every((v) => v === 0));
        assert.deepEqual([z.norm2, z.err2, z.resid2, ...z.S], [0, 0, 0, 0, 0, 0, 0]);
      }
      // B = [x x], A = [y; −y + δ]: sBA = x·δ, tiny next to s‖B‖‖A‖ (guard 1 of the Gram route).
      const x = rng.normals(50),
        y = rng.normals(40),
        B = new Float64Array(100),
        A = new Float64Array(80);
      for (let i = 0; i < 50; i++) B[2 * i] = B[2 * i + 1] = x[i]!;
      for (let j = 0; j < 40; j++) {
        A[j] = y[j]!;
        A[40 + j] = -y[j]! + 1e-3 * Math.sin(j);
      }
      const f = await be.truncateFactors!({
        B: { raw: encodeFloats("F32", B), dtype: "F32", rows: 50, cols: 2 },
        A: { raw: encodeFloats("F32", A), dtype: "F32", rows: 2, cols: 40 },
        scale: 1,
        rank: 1,
        scaleOut: 1,
        split: "balanced",
        outDtype: "F32",
      });
      assert.deepEqual(f, { kind: "fallback" });
    }
  });

  test("invalid shapes and ranks are refused before the native call", { skip }, async () => {
    for (const be of backends) {
      const ok: TruncateFactorsInput = {
        B: { raw: new Uint8Array(8 * 2 * 4), dtype: "F32", rows: 8, cols: 2 },
        A: { raw: new Uint8Array(2 * 3 * 4), dtype: "F32", rows: 2, cols: 3 },
        scale: 1,
        rank: 1,
        scaleOut: 1,
        split: "balanced",
        outDtype: "F32",
      };
      await assert.rejects(be.truncateFactors!({ ...ok, rank: 3 }), /rank 3 must be an integer in 1\.\.2/);
      await assert.rejects(be.truncateFactors!({ ...ok, rank: 0 }), /rank 0/);
      await assert.rejects(be.truncateFactors!({ ...ok, A: { ...ok.A, rows: 3 } }), /B is 8×2 but A is 3×3/);
      await assert.rejects(be.truncateFactors!({ ...ok, B: { ...ok.B, raw: new Uint8Array(5) } }), /byte lengths/);
      await assert.rejects(be.truncateFactors!({ ...ok, scaleOut: 0 }), /scales must be finite/);
    }
  });

  test("factorSpectrum: σ of sBA as Householder QR (js) gives them, every input dtype; rank-deficient σ are 0; NaN named; cancelling → fallback", {
    skip,
  }, async () => {
    const rng = new Rng(seed + 4);
    for (const be of backends) {
      for (const c of cases(rng)) {
        for (const [dB, dA] of [
          ["F16", "F16"],
          ["BF16", "F32"],
          ["F64", "F64"],
        ] as [FactorDType, FactorDType][]) {
          const Bq = raw(dB, c.B.data),
            Aq = raw(dA, c.A.data);
          const got = await be.factorSpectrum!({
            B: { raw: Bq.raw, dtype: dB, rows: c.B.rows, cols: c.B.cols },
            A: { raw: Aq.raw, dtype: dA, rows: c.A.rows, cols: c.A.cols },
            scale: c.s,
          });
          assert.equal(got.kind, "done");
          if (got.kind !== "done") continue;
          const ref = await lowRankSingularValues(jsBackend, {
            B: { rows: c.B.rows, cols: c.B.cols, data: Bq.values },
            A: { rows: c.A.rows, cols: c.A.cols, data: Aq.values },
            scale: c.s,
          });
          let norm2 = 0;
          for (let i = 0; i < ref.length; i++) {
            norm2 += ref[i]! ** 2;
            assert.ok(Math.abs(got.S[i]! - ref[i]!) <= 1e-10 * ref[0]!, `${be.name} ${c.name} ${dB}/${dA} σ${i}: ${got.S[i]} vs ${ref[i]}`);
          }
          for (let i = ref.length; i < got.S.length; i++) assert.equal(got.S[i], 0, "σ beyond min(out, in) are 0");
          assert.ok(Math.abs(got.norm2 - norm2) <= 1e-10 * norm2, `${c.name}: ‖ΔW‖²`);
        }
      }
      // Rank 3 of 6 (duplicated columns of B): the three zero σ are exactly 0, not rounding noise.
      const B = rng.normals(40 * 6),
        A = rng.normals(6 * 30);
      for (let i = 0; i < 40; i++)
        for (const [k, j] of [
          [3, 0],
          [4, 1],
          [5, 2],
        ])
          B[i * 6 + k] = B[i * 6 + j]!;
      const d = await be.factorSpectrum!({
        B: { raw: encodeFloats("F64", B), dtype: "F64", rows: 40, cols: 6 },
        A: { raw: encodeFloats("F64", A), dtype: "F64", rows: 6, cols: 30 },
        scale: 1,
      });
      assert.ok(
        d.kind === "done" && d.S[2]! > 0 && d.S[3] === 0 && d.S[4] === 0 && d.S[5] === 0,
        `rank-deficient: ${d.kind === "done" ? Array.from(d.S).join(", ") : d.kind}`,
      );
      // NaN in B → named; B = [x x], A = [y; −y + δ] → fallback (Householder in TS).
      const Bn = encodeFloats("F32", rng.normals(10 * 2));
      new DataView(Bn.buffer, Bn.byteOffset).setFloat32(4 * 7, NaN, true);
      assert.deepEqual(
        await be.factorSpectrum!({
          B: { raw: Bn, dtype: "F32", rows: 10, cols: 2 },
          A: { raw: encodeFloats("F32", rng.normals(2 * 5)), dtype: "F32", rows: 2, cols: 5 },
          scale: 1,
        }),
        { kind: "non-finite", factor: "B", index: 7, value: NaN },
      );
      const x = rng.normals(50),
        y = rng.normals(40),
        Bc = new Float64Array(100),
        Ac = new Float64Array(80);
      for (let i = 0; i < 50; i++) Bc[2 * i] = Bc[2 * i + 1] = x[i]!;
      for (let j = 0; j < 40; j++) {
        Ac[j] = y[j]!;
        Ac[40 + j] = -y[j]! + 1e-3 * Math.sin(j);
      }
      assert.deepEqual(
        await be.factorSpectrum!({
          B: { raw: encodeFloats("F32", Bc), dtype: "F32", rows: 50, cols: 2 },
          A: { raw: encodeFloats("F32", Ac), dtype: "F32", rows: 2, cols: 40 },
          scale: 1,
        }),
        { kind: "fallback" },
      );
    }
  });

  test("truncateFactors with the Grams factorSpectrum kept for the same bytes: the same output, byte for byte", { skip }, async () => {
    const rng = new Rng(seed + 5);
    for (const be of backends) {
      for (const c of cases(rng)) {
        const B = { raw: encodeFloats("F16", c.B.data), dtype: "F16" as const, rows: c.B.rows, cols: c.B.cols };
        const A = { raw: encodeFloats("BF16", c.A.data), dtype: "BF16" as const, rows: c.A.rows, cols: c.A.cols };
        const sp = await be.factorSpectrum!({ B, A, scale: c.s, keepGrams: true });
        assert.ok(sp.kind === "done" && sp.grams && sp.grams.length === 2 * B.cols * B.cols, c.name);
        if (sp.kind !== "done") continue;
        const plain = await be.truncateFactors!({ B, A, scale: c.s, rank: c.t, scaleOut: c.s, split: "balanced", outDtype: "F16" });
        const reused = await be.truncateFactors!({ B, A, scale: c.s, rank: c.t, scaleOut: c.s, split: "balanced", outDtype: "F16", grams: sp.grams! });
        assert.ok(plain.kind === "done" && reused.kind === "done");
        if (plain.kind !== "done" || reused.kind !== "done") continue;
        assert.deepEqual(
          [Buffer.from(reused.B), Buffer.from(reused.A), reused.S, reused.norm2, reused.err2, reused.resid2],
          [Buffer.from(plain.B), Buffer.from(plain.A), plain.S, plain.norm2, plain.err2, plain.resid2],
          c.name,
        );
        await assert.rejects(
          be.truncateFactors!({ B, A, scale: c.s, rank: c.t, scaleOut: c.s, split: "balanced", outDtype: "F16", grams: sp.grams!.subarray(1) }),
          /grams must be/,
        );
      }
      const noGrams = await be.factorSpectrum!({
        B: { raw: encodeFloats("F32", rng.normals(8)), dtype: "F32", rows: 4, cols: 2 },
        A: { raw: encodeFloats("F32", rng.normals(6)), dtype: "F32", rows: 2, cols: 3 },
        scale: 1,
      });
      assert.ok(noGrams.kind === "done" && noGrams.grams === undefined, "Grams only when asked for");
    }
  });
});
