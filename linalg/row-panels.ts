// A matrix too large to hold, read a block of rows at a time (lora extract's ΔW = tuned − base,
// re-read from the two models for every pass instead of kept whole in float32: docs/algorithms.md
// §13), and the products by it that the range finder needs (linalg/streamed.ts sketchFrom).
import type { MatrixProducts } from "./streamed.js";
import type { LinalgBackend, Mat } from "./types.js";

export interface RowPanelSource {
  readonly rows: number;
  readonly cols: number;
  /**
   * Every block of consecutive rows, in order: fn(r0, block) with the block n×cols in float32 and
   * finite (a source refuses NaN/±Inf itself), valid only during the call. Resolves to ‖M‖²_F of
   * this pass (float64).
   */
  each(fn: (r0: number, block: Mat<Float32Array>) => Promise<void>): Promise<number>;
}

export function isRowPanelSource(m: Mat | RowPanelSource): m is RowPanelSource {
  return typeof (m as RowPanelSource).each === "function";
}

/**
 * M·X a block of rows at a time; Mᵀ·Q as the sum over blocks of Mᵢᵀ·Qᵢ (float32, like the dense
 * product). The source's blocks are finite (its contract) and X, Q come from checked products, so
 * the gemm input scans are skipped; the products are written into arrays of the pass (no garbage a
 * panel, which would otherwise pile up between collections).
 */
export function panelProducts(be: LinalgBackend, src: RowPanelSource): MatrixProducts {
  const f32 = (m: Mat): Mat<Float32Array> => {
    if (!(m.data instanceof Float32Array)) throw new Error("internal: row panels multiply float32 operands");
    return m as Mat<Float32Array>;
  };
  return {
    rows: src.rows,
    cols: src.cols,
    async times(X: Mat): Promise<Mat> {
      const x = f32(X),
        l = x.cols;
      const Y = new Float32Array(src.rows * l);
      await src.each(async (r0, block) => {
        const rows = Y.subarray(r0 * l, (r0 + block.rows) * l);
        const y = (await be.gemm(block, x, { finite: true, into: rows })).data;
        if (y.buffer !== rows.buffer || y.byteOffset !== rows.byteOffset) rows.set(y); // a backend that returned a new array
      });
      return { rows: src.rows, cols: l, data: Y };
    },
    async timesT(Q: Mat): Promise<Mat> {
      const q = f32(Q),
        l = q.cols;
      const Z = new Float32Array(src.cols * l),
        scratch = new Float32Array(src.cols * l);
      await src.each(async (r0, block) => {
        const qi = { rows: block.rows, cols: l, data: q.data.subarray(r0 * l, (r0 + block.rows) * l) };
        const part = (await be.gemm(block, qi, { transA: true, finite: true, into: scratch })).data;
        for (let i = 0; i < Z.length; i++) Z[i] = Z[i]! + part[i]!;
      });
      return { rows: src.cols, cols: l, data: Z };
    },
  };
}

/** The whole matrix in memory (the exact route, and sketches as wide as the matrix). */
export async function densePanels(src: RowPanelSource): Promise<Mat<Float32Array>> {
  const data = new Float32Array(src.rows * src.cols);
  await src.each(async (r0, block) => {
    data.set(block.data, r0 * src.cols);
  });
  return { rows: src.rows, cols: src.cols, data };
}
