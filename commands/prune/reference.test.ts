// Independent float64 references for the prune tests (dense matrices, written from the formulas in
// docs/algorithms.md §4, not from the implementation). No tests here: the other *.test files
// import these (the references are checked against the goldens in loraprune.test.ts).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile } from "../../formats/safetensors/index.js";

export function tempDir(tag: string): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `lora-prune-${tag}-`));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

/** C = A (m×k) · B (k×n), row-major float64. */
export function matmul(A: ArrayLike<number>, B: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const a = A[i * k + p]!;
      if (a === 0) continue;
      for (let j = 0; j < n; j++) C[i * n + j] += a * B[p * n + j]!;
    }
  return C;
}

export function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "length mismatch");
  const d = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) d[i] = a[i]! - b[i]!;
  const n = frob(b);
  return n === 0 ? frob(d) : frob(d) / n;
}

/** ΔW = s·B·A, dense. */
export function deltaW(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inF: number, s: number): Float64Array {
  return matmul(B, A, out, r, inF).map((x) => x * s);
}

/** Read named tensors of a file as float64. */
export async function readAll(path: string): Promise<Map<string, { shape: number[]; data: Float64Array; dtype: string }>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, { shape: number[]; data: Float64Array; dtype: string }>();
    for (const t of f.tensors) out.set(t.name, { shape: t.shape, dtype: t.dtype, data: await f.readFloat64(t) });
    return out;
  } finally {
    await f.close();
  }
}

/**
 * LoRAPrune's elementwise importance, dense (docs/algorithms.md §4.3): |Ĝ ⊙ (W + s·B·A)| with Ĝ = G_B·A + B·G_A − G_B·G_A,
 * or |W + s·B·A| without gradients.
 */
export function refImportance(
  W: ArrayLike<number>,
  out: number,
  inF: number,
  lora: { B: ArrayLike<number>; A: ArrayLike<number>; r: number; s: number; GB?: ArrayLike<number>; GA?: ArrayLike<number> } | null,
): Float64Array {
  const M = Float64Array.from(W);
  if (lora) {
    const BA = matmul(lora.B, lora.A, out, lora.r, inF);
    for (let i = 0; i < M.length; i++) M[i] += lora.s * BA[i]!;
    if (lora.GB && lora.GA) {
      const t1 = matmul(lora.GB, lora.A, out, lora.r, inF),
        t2 = matmul(lora.B, lora.GA, out, lora.r, inF),
        t3 = matmul(lora.GB, lora.GA, out, lora.r, inF);
      for (let i = 0; i < M.length; i++) M[i] = Math.abs((t1[i]! + t2[i]! - t3[i]!) * M[i]!);
      return M;
    }
  }
  return M.map(Math.abs);
}

export function rowSums(I: Float64Array, out: number, inF: number): Float64Array {
  const r = new Float64Array(out);
  for (let i = 0; i < out; i++) for (let j = 0; j < inF; j++) r[i] += I[i * inF + j]!;
  return r;
}

export function colSums(I: Float64Array, out: number, inF: number): Float64Array {
  const c = new Float64Array(inF);
  for (let i = 0; i < out; i++) for (let j = 0; j < inF; j++) c[j] += I[i * inF + j]!;
  return c;
}

// golden §9.5 inputs
export const G95 = {
  W: [1, -2, 0.5, 0, 1, 1, 2, 0, -1, 1, 1, 1],
  B: [0.1, 0, 0, 0.2, 0.1, 0.1, 0, 0],
  A: [1, 0, 1, 0, 1, -1],
  GB: [0.5, 0, 0.1, 0, 0, -0.3, 0.2, 0.2],
  GA: [0, 0.1, 0, 0.2, 0, 0.1],
  s: 2,
};
