// The error reports of merged modules against dense float64 differences: roundingErrorOf (exact
// merges whose factors are rounded to the file's dtype) on F16, BF16, F32 and F64 outputs, and on
// targets whose terms cancel; errorOf on an inexact merge. The references form ΔW densely here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../linalg/random.js";
import { testBackends } from "../../test/backends.js";
import { denseDelta } from "../../test/reference.js";
import { mergeCat } from "./cat.js";
import { mergeSvd } from "./svd.js";
import { errorOf, rounded as roundedTo, roundingErrorOf } from "./module.js";
import type { MergeTerm } from "./types.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`merge module.test seed=${seed}`);

function term(rng: Rng, input: number, out: number, inn: number, r: number, weight: number): MergeTerm {
  return {
    input,
    B: { rows: out, cols: r, data: rng.normals(out * r, 0.1) },
    A: { rows: r, cols: inn, data: rng.normals(r * inn, 1 / Math.sqrt(inn)) },
    scale: 0.5 + rng.uniform(),
    weight,
  };
}

const frob = (x: Float64Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));

/**
 * ‖P − T‖ and ‖T‖ with P and T formed densely (float64 sums of products), and `slack`: what the
 * dense difference itself may be off by, relative to ‖T‖ (a few ulps of Σ‖termᵢ‖ + ‖P‖, which is
 * far above ‖T‖ when the terms cancel).
 */
function dense(terms: MergeTerm[], B: Float64Array, A: Float64Array, R: number, out: number, inn: number): { norm: number; diff: number; slack: number } {
  const T = new Float64Array(out * inn);
  let sizes = 0;
  for (const t of terms) {
    const d = denseDelta(t.B.data, t.A.data, out, t.A.rows, inn, t.weight * t.scale);
    sizes += frob(d);
    for (let k = 0; k < T.length; k++) T[k]! += d[k]!;
  }
  const P = denseDelta(B, A, out, R, inn, 1);
  const D = P.map((p, k) => p - T[k]!);
  const norm = frob(T);
  return { norm, diff: frob(D), slack: (1e-15 * (sizes + frob(P))) / norm };
}

test("cat's error after rounding to each dtype equals the dense difference, cancelling terms included", async () => {
  const rng = new Rng(seed);
  for (const be of await testBackends()) {
    for (const dtype of ["F16", "BF16", "F32", "F64"] as const) {
      for (const cancel of [false, true]) {
        const out = 30 + rng.int(20),
          inn = 25 + rng.int(20);
        const terms = [term(rng, 0, out, inn, 3 + rng.int(4), 0.3 + rng.uniform()), term(rng, 1, out, inn, 2 + rng.int(4), -0.7 * rng.uniform() - 0.1)];
        if (cancel) {
          // T = t₀ − t₀ + 1e-6·t₂: the stacked Gram loses ‖T‖ to cancellation; the core recomputes it.
          const t0 = terms[0]!;
          terms[1] = { ...t0, input: 1, weight: -t0.weight };
          terms.push({ ...term(rng, 2, out, inn, 2, 1e-6) });
        }
        const got = mergeCat(terms);
        const R = got.A.rows;
        const rounded = { B: roundedTo(dtype, got.B.data).values, A: roundedTo(dtype, got.A.data).values };
        const target = terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale }));
        const diff = (x: Float64Array, y: Float64Array) => x.map((v, k) => v - y[k]!);
        // F64: nothing rounded, passed as null as merge does (the products with δ are then skipped).
        const rounding = dtype === "F64" ? { B: null, A: null } : { B: diff(rounded.B, got.B.data), A: diff(rounded.A, got.A.data) };
        const r = await roundingErrorOf(be, target, got, rounding);
        const ref = dense(terms, rounded.B, rounded.A, R, out, inn);
        const label = `${be.name} ${dtype}${cancel ? " cancelling" : ""} (seed ${seed})`;
        assert.ok(Math.abs(r.norm - ref.norm) <= 1e-9 * ref.norm, `${label}: ‖T‖ ${r.norm} vs dense ${ref.norm}`);
        const rel = ref.diff / ref.norm;
        // With F64 factors there is no rounding: 0 is reported, and the dense difference is its own error.
        const tol = (dtype === "F64" ? 0 : 1e-6 * rel) + ref.slack;
        assert.ok(Math.abs(r.rel - rel) <= tol, `${label}: reported ${r.rel}, dense ${rel}`);
        if (dtype !== "F64" && !cancel) assert.ok(rel > 1e-9, `${label}: the rounding made an error to measure (${rel})`);
      }
    }
  }
});

test("errorOf on an inexact merge (one term's factors dropped) equals the dense difference", async () => {
  const rng = new Rng(seed + 1);
  for (const be of await testBackends()) {
    const out = 40,
      inn = 35;
    const terms = [term(rng, 0, out, inn, 4, 0.6), term(rng, 1, out, inn, 3, 0.4)];
    const got = mergeCat([terms[0]!]);
    const target = terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale }));
    const r = await errorOf(be, target, got);
    const ref = dense(terms, got.B.data, got.A.data, got.A.rows, out, inn);
    assert.ok(Math.abs(r.rel - ref.diff / ref.norm) <= 1e-9 * (ref.diff / ref.norm), `${be.name}: reported ${r.rel}, dense ${ref.diff / ref.norm}`);
  }
});

test("svd's written factors (Gram route, or QR where its guards refuse): error of those bytes as the dense difference gives it, cancelling terms included", async () => {
  const rng = new Rng(seed + 2);
  for (const be of await testBackends()) {
    for (const dtype of ["F16", "F32"] as const) {
      for (const cancel of [false, true]) {
        const out = 40 + rng.int(20),
          inn = 35 + rng.int(20);
        const terms = [term(rng, 0, out, inn, 4, 0.3 + rng.uniform()), term(rng, 1, out, inn, 3, 0.2 + rng.uniform())];
        if (cancel) {
          const t0 = terms[0]!;
          terms[1] = { ...t0, input: 1, weight: -t0.weight };
          terms.push(term(rng, 2, out, inn, 3, 1e-7));
        }
        const k = 3;
        const got = await mergeSvd(be, terms, k, dtype);
        assert.equal(got.A.rows, k);
        const { written } = got;
        const label = `${be.name} ${dtype}${cancel ? " cancelling" : ""} (seed ${seed + 2})`;
        // The error of what is written: from the bytes' values (B, A), whichever route ran.
        const ref = dense(terms, got.B.data, got.A.data, k, out, inn);
        const r =
          written ??
          (await errorOf(
            be,
            terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale })),
            got,
          ));
        if (written) {
          assert.deepEqual(Array.from(roundedTo(dtype, got.B.data).bytes), Array.from(written.B), `${label}: B holds the written bytes' values`);
        }
        assert.ok(Math.abs(r.norm - ref.norm) <= 1e-9 * ref.norm + ref.slack * ref.norm, `${label}: ‖T‖ ${r.norm} vs dense ${ref.norm}`);
        // First order in the rounding (δB·δA left out): within 1e-3 of the error for F16, far closer for F32.
        const rel = ref.diff / ref.norm;
        assert.ok(Math.abs(r.rel - rel) <= (dtype === "F16" ? 1e-3 : 1e-6) * rel + ref.slack, `${label}: reported ${r.rel}, dense ${rel}`);
      }
    }
  }
});
