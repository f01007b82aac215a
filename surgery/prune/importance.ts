// The LoRAPrune criterion (docs/algorithms.md §4.3, LoRAPrune loraprune/utils.py::compute_sensitivity),
// per weight element:
//   LoRA-guided (with --grads):  I = |(G_B·A + B·G_A − G_B·G_A) ⊙ (W + s·B·A)|   (no s in Ĝ, as the code)
//   magnitude (without):         I = |W + s·B·A|
// summed per output or input channel while W streams from disk one row block at a time
// (≤ BLOCK_ELEMENTS per block), so memory stays bounded.
import { decodeToFloat32, decodeToFloat64, dtypeBits } from "../../formats/safetensors/index.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { BaseTensor } from "../../formats/model/base-model.js";

// ---------------------------------------------------------------------------------------------
// The criterion

/** One module's LoRA terms in float64: B out×r, A r×in, optional gradients of the same shapes. */
export interface LoraTerms {
  r: number;
  scale: number;
  B: Float64Array;
  A: Float64Array;
  GB?: Float64Array;
  GA?: Float64Array;
}

/**
 * Accumulates the row sums and/or column sums of I over row blocks of W. The elementwise value
 * is computed in float64 from W (any float dtype) and the factors. The low-rank products of a
 * block (s·B_blk·A and Ĝ_blk) come from the linear-algebra backend when one is given (BLAS dgemm),
 * else from plain loops.
 */
export class ImportanceAccumulator {
  readonly rows: Float64Array | null;
  readonly cols: Float64Array | null;
  private readonly tmp: Float64Array;
  private readonly guided: boolean;
  /** [A − G_A; G_A] (2r × in), for Ĝ_blk = [G_B,blk | B_blk] · [A − G_A; G_A]. */
  private readonly gStack: Float64Array | null;

  constructor(
    readonly out: number,
    readonly inF: number,
    readonly lora: LoraTerms | null,
    want: { rows: boolean; cols: boolean },
    private readonly be: LinalgBackend | null = null,
  ) {
    this.rows = want.rows ? new Float64Array(out) : null;
    this.cols = want.cols ? new Float64Array(inF) : null;
    this.tmp = new Float64Array(inF);
    this.guided = !!(lora?.GA && lora.GB);
    if (this.guided) {
      const r = lora!.r,
        A = lora!.A,
        GA = lora!.GA!;
      const st = new Float64Array(2 * r * inF);
      for (let i = 0; i < r * inF; i++) {
        st[i] = A[i]! - GA[i]!;
        st[r * inF + i] = GA[i]!;
      }
      this.gStack = st;
    } else this.gStack = null;
  }

  /** P (n×in) = left (n×k) · right (k×in), scaled. */
  private async product(left: Float64Array, k: number, right: Float64Array, n: number, alpha: number): Promise<Float64Array> {
    const inF = this.inF;
    if (this.be) {
      const c = await this.be.gemm({ rows: n, cols: k, data: left }, { rows: k, cols: inF, data: right }, { alpha });
      return c.data as Float64Array;
    }
    const P = new Float64Array(n * inF);
    for (let i = 0; i < n; i++)
      for (let p = 0; p < k; p++) {
        const c = alpha * left[i * k + p]!;
        if (c === 0) continue;
        const off = p * inF,
          o = i * inF;
        for (let j = 0; j < inF; j++) P[o + j] += c * right[off + j]!;
      }
    return P;
  }

  /** Add rows [row0, row0 + n) of W, given row-major (n × in). */
  async addRows(W: ArrayLike<number>, row0: number, n: number): Promise<void> {
    const inF = this.inF,
      lora = this.lora;
    let BA: Float64Array | null = null,
      G: Float64Array | null = null;
    if (lora) {
      const r = lora.r;
      BA = await this.product(lora.B.subarray(row0 * r, (row0 + n) * r), r, lora.A, n, lora.scale);
      if (this.guided) {
        const left = new Float64Array(n * 2 * r);
        for (let b = 0; b < n; b++)
          for (let k = 0; k < r; k++) {
            left[b * 2 * r + k] = lora.GB![(row0 + b) * r + k]!;
            left[b * 2 * r + r + k] = lora.B[(row0 + b) * r + k]!;
          }
        G = await this.product(left, 2 * r, this.gStack!, n, 1);
      }
    }
    const rowsOut = this.rows,
      colsOut = this.cols;
    // One pass per row: the element value, its absolute value, and the sums that are wanted.
    for (let b = 0; b < n; b++) {
      const base = b * inF;
      if (rowsOut && !colsOut) {
        let s = 0;
        if (BA && G) for (let j = 0; j < inF; j++) s += Math.abs(G[base + j]! * (W[base + j]! + BA[base + j]!));
        else if (BA) for (let j = 0; j < inF; j++) s += Math.abs(W[base + j]! + BA[base + j]!);
        else for (let j = 0; j < inF; j++) s += Math.abs(W[base + j]!);
        rowsOut[row0 + b] = s;
      } else if (colsOut && !rowsOut) {
        if (BA && G) for (let j = 0; j < inF; j++) colsOut[j] += Math.abs(G[base + j]! * (W[base + j]! + BA[base + j]!));
        else if (BA) for (let j = 0; j < inF; j++) colsOut[j] += Math.abs(W[base + j]! + BA[base + j]!);
        else for (let j = 0; j < inF; j++) colsOut[j] += Math.abs(W[base + j]!);
      } else {
        const tmp = this.tmp;
        if (BA && G) for (let j = 0; j < inF; j++) tmp[j] = Math.abs(G[base + j]! * (W[base + j]! + BA[base + j]!));
        else if (BA) for (let j = 0; j < inF; j++) tmp[j] = Math.abs(W[base + j]! + BA[base + j]!);
        else for (let j = 0; j < inF; j++) tmp[j] = Math.abs(W[base + j]!);
        let s = 0;
        for (let j = 0; j < inF; j++) s += tmp[j]!;
        if (rowsOut) rowsOut[row0 + b] = s;
        if (colsOut) for (let j = 0; j < inF; j++) colsOut[j] += tmp[j]!;
      }
    }
  }
}

/** The elementwise importance matrix I (out × in) of a small dense W (tests, golden §9.5). */
export async function elementImportance(
  W: ArrayLike<number>,
  out: number,
  inF: number,
  lora: LoraTerms | null,
  be: LinalgBackend | null = null,
): Promise<Float64Array> {
  const I = new Float64Array(out * inF);
  for (let i = 0; i < out; i++) {
    const acc = new ImportanceAccumulator(out, inF, lora, { rows: false, cols: true }, be);
    await acc.addRows(
      Float64Array.from({ length: inF }, (_, j) => W[i * inF + j]!),
      i,
      1,
    );
    I.set(acc.cols!, i * inF);
  }
  return I;
}

/** Elements per row block while streaming a weight. */
export const BLOCK_ELEMENTS = 1 << 18;

/** Row and/or column sums of I for one projection, streaming W from disk in row blocks. */
export async function projectionImportance(
  t: BaseTensor,
  lora: LoraTerms | null,
  want: { rows: boolean; cols: boolean },
  be: LinalgBackend | null = null,
): Promise<{ rows: Float64Array | null; cols: Float64Array | null }> {
  const [out, inF] = t.info.shape as [number, number];
  const eb = dtypeBits(t.info.dtype) / 8;
  const rowsPerBlock = Math.max(1, Math.floor(BLOCK_ELEMENTS / inF));
  const acc = new ImportanceAccumulator(out, inF, lora, want, be);
  // F16/BF16/F32 decode exactly to float32 (half the memory traffic of float64).
  const decode = (c: Uint8Array) =>
    t.info.dtype === "F64" ? decodeToFloat64("F64", c, { mayAlias: true }) : decodeToFloat32(t.info.dtype, c, { mayAlias: true });
  let row = 0;
  // One block in flight while the next one is read: the read overlaps the block's gemm.
  let pending: Promise<void> = Promise.resolve();
  await t.file.copyRaw(
    t.info,
    async (chunk) => {
      const n = chunk.byteLength / (inF * eb);
      await pending;
      pending = acc.addRows(decode(chunk), row, n);
      pending.catch(() => {}); // awaited (and rethrown) before the next block or at the end
      row += n;
    },
    rowsPerBlock * inF * eb,
  );
  await pending;
  if (row !== out) throw new Error(`internal: streamed ${row} of ${out} rows of ${t.info.name}`);
  return { rows: acc.rows, cols: acc.cols };
}
