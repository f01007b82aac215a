// Checks shared by the family tests: ΔW of an adapter as `lora` reads it (exact factors, scale
// applied), compared with a family's dense reference; the dense spectrum and optimum.
import assert from "node:assert/strict";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { denseSingularValues, hasNumpy, numpy, optimal, relDiff } from "../reference.js";
import type { Ref } from "./files.js";

/** ΔW = s·B·A of every module of an adapter, by module name. */
export async function deltas(input: string): Promise<Map<string, Float64Array>> {
  const a = await loadAdapter(input);
  try {
    const out = new Map<string, Float64Array>();
    for (const m of a.modules) {
      const f = await readFactors(a, m, "f64");
      const W = new Float64Array(m.out * m.in);
      for (let i = 0; i < m.out; i++)
        for (let k = 0; k < m.rank; k++) {
          const b = f.B.data[i * m.rank + k]! * m.scale;
          for (let j = 0; j < m.in; j++) W[i * m.in + j]! += b * f.A.data[k * m.in + j]!;
        }
      out.set(m.name, W);
    }
    return out;
  } finally {
    await a.file.close();
  }
}

/** Every reference module present with ΔW within `tol` (relative Frobenius). */
export function assertDeltas(
  got: Map<string, Float64Array>,
  refs: Map<string, Ref>,
  tol: number,
  what: string,
  rename: (n: string) => string = (n) => n,
): void {
  for (const [name, ref] of refs) {
    const W = got.get(rename(name));
    assert.ok(W, `${what}: module ${rename(name)} missing (have ${[...got.keys()].join(", ")})`);
    const e = relDiff(W, ref.W);
    assert.ok(e <= tol, `${what}: ${name} relative error ${e} > ${tol}`);
  }
}

/** Singular values of a dense reference (numpy's SVD when there, else Jacobi eigenvalues of the Gram matrix). */
export function refSpectrum(ref: Ref): number[] {
  if (hasNumpy())
    return numpy<number[]>("W = np.array(inp['W']).reshape(inp['out'], inp['in'])\nprint(json.dumps(np.linalg.svd(W, compute_uv=False).tolist()))", {
      W: Array.from(ref.W),
      out: ref.out,
      in: ref.in,
    });
  return denseSingularValues(ref.W, ref.out, ref.in);
}

/** The dense rank-k optimum of a reference (Eckart–Young). */
export const refOptimum = (ref: Ref, k: number) => optimal(ref.W, ref.out, ref.in, k).P;
