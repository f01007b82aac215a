// A matrix too large to hold, read a block of rows at a time (lora extract's ΔW = tuned − base,
// re-read from the two models for every pass instead of kept whole in float32: docs/algorithms.md
// §13), and the products by it that the range finder needs (linalg/streamed.ts sketchPaired: M·X
// and Mᵀ·(M·X) from one read).
import type { PairedProducts } from "./streamed.js";
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
 * In one pass, Y = M·X a block of rows at a time (Yᵢ = Mᵢ·X) and G = Mᵀ·Y as the sum over blocks of
 * Mᵢᵀ·Yᵢ; in a pass of its own, Mᵀ·Q likewise (float32 sums, like the dense products). The source's
 * blocks are finite (its contract) and X, Q come from checked products, so the gemm input scans are
 * skipped; the products are written into arrays of the pass (no garbage a panel, which would
 * otherwise pile up between collections).
 */
export function panelProducts(be: LinalgBackend, src: RowPanelSource): PairedProducts {
  const f32 = (m: Mat): Mat<Float32Array> => {
    if (!(m.data instanceof Float32Array)) throw new Error("internal: row panels multiply float32 operands");
    return m as Mat<Float32Array>;
  };
  let pair: { l: number; Y: Float32Array; G: Float32Array; scratch: Float32Array } | null = null;
  return {
    rows: src.rows,
    cols: src.cols,
    async timesAndGram(X: Mat) {
      const x = f32(X),
        l = x.cols;
      // One set of arrays for every call of a sketch (its Y and G are used before the next call):
      // fresh ones each pass would leave the heap holding the old ones' pages.
      if (pair === null || pair.l !== l)
        pair = { l, Y: new Float32Array(src.rows * l), G: new Float32Array(src.cols * l), scratch: new Float32Array(src.cols * l) };
      const { Y, G, scratch } = pair;
      G.fill(0);
      const norm2 = await src.each(async (r0, block) => {
        const rows = Y.subarray(r0 * l, (r0 + block.rows) * l);
        const y = (await be.gemm(block, x, { finite: true, into: rows })).data;
        if (y.buffer !== rows.buffer || y.byteOffset !== rows.byteOffset) rows.set(y);
        const yi = { rows: block.rows, cols: l, data: rows };
        const part = (await be.gemm(block, yi, { transA: true, finite: true, into: scratch })).data;
        for (let i = 0; i < G.length; i++) G[i] = G[i]! + part[i]!;
      });
      return { Y: { rows: src.rows, cols: l, data: Y }, G: { rows: src.cols, cols: l, data: G }, norm2 };
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

/** The whole matrix in memory (the exact route, and sketches as wide as the matrix), with ‖M‖² of the pass. */
export async function densePanels(src: RowPanelSource): Promise<{ m: Mat<Float32Array>; norm2: number }> {
  const data = new Float32Array(src.rows * src.cols);
  const norm2 = await src.each(async (r0, block) => {
    data.set(block.data, r0 * src.cols);
  });
  return { m: { rows: src.rows, cols: src.cols, data }, norm2 };
}
