// routedBackend (linalg/native/auto.ts): each operation goes to cuda only at or above its
// crossover, the cuda backend is made on first use only (once), and without one cpu runs it all.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { LinalgBackend, Mat } from "../types.js";
import { CUDA_CROSSOVER, routedBackend } from "./auto.js";

function tagged(name: "cpu" | "cuda", calls: string[]): LinalgBackend {
  const rec = (op: string) => async () => {
    calls.push(`${name}.${op}`);
    return undefined as never;
  };
  return {
    name,
    detail: name,
    gemm: rec("gemm"),
    qr: rec("qr"),
    svd: rec("svd"),
    eigSym: rec("eigSym"),
    kmeansLloyd: rec("kmeansLloyd"),
    randomizedSvd: rec("randomizedSvd"),
    factorStats: rec("factorStats"),
    truncateFactors: rec("truncateFactors"),
    factorSpectrum: rec("factorSpectrum"),
    factorSpectra: rec("factorSpectra"),
    mergeWeight: rec("mergeWeight"),
    weightDelta: rec("weightDelta"),
    sketch: rec("sketch"),
    withLanes: async (fn) => fn(1),
  };
}
const mat = (rows: number, cols: number): Mat<Float64Array> => ({ rows, cols, data: new Float64Array(0) });

describe("routedBackend", () => {
  const table = { ...CUDA_CROSSOVER, measuredOn: "test", gemm: 1000, kmeansLloyd: 50, randomizedSvd: Infinity, factorStats: 100 };
  test("below a crossover on cpu, at or above it on cuda, made once and only when first needed", async () => {
    const calls: string[] = [];
    let made = 0;
    const be = routedBackend(
      tagged("cpu", calls),
      () => {
        made++;
        return tagged("cuda", calls);
      },
      table,
    );
    await be.gemm(mat(9, 10), mat(10, 11)); // 9·10·11 = 990 < 1000
    assert.equal(made, 0);
    await be.gemm(mat(10, 10), mat(10, 10)); // 1000
    await be.gemm(mat(10, 10), mat(11, 10), { transB: true }); // 10·10·11 = 1100 (n from transB)
    await be.kmeansLloyd(mat(5, 2), mat(5, 2), { maxIter: 1, tol: 0 }); // 5·2·5 = 50
    await be.randomizedSvd!(mat(100, 100), mat(100, 20), 2, 10); // ∞: never
    await be.factorStats!(new Uint8Array(0), "F32", 10, 9, "gram-rows"); // 90 < 100
    assert.deepEqual(calls, ["cpu.gemm", "cuda.gemm", "cuda.gemm", "cuda.kmeansLloyd", "cpu.randomizedSvd", "cpu.factorStats"]);
    assert.equal(made, 1);
    assert.equal(be.name, "cpu");
    assert.match(be.detail, /cuda for gemm, qr, svd, kmeansLloyd, factorStats/);
  });
  test("when the cuda backend cannot be made, cpu runs everything", async () => {
    const calls: string[] = [];
    const be = routedBackend(tagged("cpu", calls), () => undefined, table);
    await be.gemm(mat(100, 100), mat(100, 100));
    await be.gemm(mat(100, 100), mat(100, 100));
    assert.deepEqual(calls, ["cpu.gemm", "cpu.gemm"]);
  });
});
