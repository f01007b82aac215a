// LoHa (LyCORIS lycoris/modules/loha.py, lycoris/functional/loha.py; docs/formats.md "LyCORIS"):
// ΔW = s·(w1_a·w1_b) ⊙ (w2_a·w2_b), s = alpha / rows(hada_w1_b). With the Tucker cores hada_t1/t2
// (conv): F_n[o, c, k…] = Σ_{i,j} t_n[i,j,k…]·wn_a[i,o]·wn_b[j,c] (`make_weight_tucker`), so
// F_n = wn_aᵀ · tuckerRight(t_n, wn_b) with the kernel flattened into the columns. Exact factors by
// face-splitting, rank r1·r2 (or the dense form when that is smaller).
import { transpose } from "../../../common/dense.js";
import type { TensorInfo } from "../../safetensors/index.js";
import type { DerivedModuleSpec } from "../derived.js";
import { denseFactors, denseRank, faceSplit, hadamardDense } from "./exact.js";
import { inferKernel } from "./kernel.js";
import type { Group } from "./keys.js";
import { type ModuleId, moduleShape, type ScaleOf } from "./module-id.js";
import { checkTensor, flat2, mismatch, type ReadCtx, read64, storedDtype } from "./stored.js";
import { tuckerRight } from "./tucker.js";

export function lohaSpec(c: ReadCtx, id: ModuleId, g: Group, scaleOf: ScaleOf): DerivedModuleSpec {
  const need = (p: "hada_w1_a" | "hada_w1_b" | "hada_w2_a" | "hada_w2_b"): TensorInfo => {
    const t = g.get(p);
    if (!t) throw mismatch(c.label, id.name, `LoHa without its ${p} tensor`);
    return t;
  };
  const [w1a, w1b, w2a, w2b] = [need("hada_w1_a"), need("hada_w1_b"), need("hada_w2_a"), need("hada_w2_b")];
  const t1 = g.get("hada_t1"),
    t2 = g.get("hada_t2");
  if (!t1 !== !t2) throw mismatch(c.label, id.name, "LoHa with one Tucker core (hada_t1/hada_t2) but not the other");
  const stored = [w1a, w1b, w2a, w2b, ...(t1 ? [t1, t2!] : [])];
  const r1 = w1b.shape[0]!,
    r2 = w2b.shape[0]!;
  let out: number, n: number, kernel: number[] | undefined;
  if (t1 && t2) {
    for (const t of [w1a, w1b, w2a, w2b]) checkTensor(c.label, t, [2], "LoHa Tucker factors");
    for (const t of [t1, t2]) checkTensor(c.label, t, [3, 4, 5], "LoHa Tucker cores");
    kernel = t1.shape.slice(2);
    out = w1a.shape[1]!;
    const inCh = w1b.shape[1]!;
    n = inCh * kernel.reduce((x, y) => x * y, 1);
    const ok =
      w1a.shape[0] === t1.shape[0] &&
      t1.shape[0] === t1.shape[1] &&
      t2.shape[0] === t2.shape[1] &&
      w1b.shape[0] === t1.shape[1] &&
      w2a.shape[0] === t2.shape[0] &&
      w2b.shape[0] === t2.shape[1] &&
      w2a.shape[1] === out &&
      w2b.shape[1] === inCh &&
      t2.shape.slice(2).join() === kernel.join();
    if (!ok)
      throw mismatch(
        c.label,
        id.name,
        `LoHa Tucker shapes do not fit: t1 [${t1.shape}], w1_a [${w1a.shape}], w1_b [${w1b.shape}], t2 [${t2.shape}], w2_a [${w2a.shape}], w2_b [${w2b.shape}]`,
      );
  } else {
    for (const t of [w1a, w2a]) checkTensor(c.label, t, [2, 4], "LoHa up factors");
    for (const t of [w1b, w2b]) checkTensor(c.label, t, [2, 3, 4, 5], "LoHa down factors");
    out = w1a.shape[0]!;
    n = flat2(w1b)[1];
    const ok = w1a.shape[1] === r1 && w2a.shape[1] === r2 && w2a.shape[0] === out && flat2(w2b)[1] === n;
    if (!ok) throw mismatch(c.label, id.name, `LoHa shapes do not fit: w1_a [${w1a.shape}], w1_b [${w1b.shape}], w2_a [${w2a.shape}], w2_b [${w2b.shape}]`);
    kernel = w1b.shape.length > 2 ? w1b.shape.slice(2) : inferKernel(id.name, n);
  }
  const R = Math.min(r1 * r2, denseRank(out, n));
  const dense = r1 * r2 > R;
  return {
    ...moduleShape(id, out, n, kernel, R),
    family: {
      type: "loha",
      detail: `LoHa ${r1}·${r2}${t1 ? " Tucker" : ""}${dense ? " (dense: r1·r2 ≥ min(out, in))" : ""}`,
      stored,
      dtype: storedDtype(stored),
      info: { r1, r2, tucker: !!t1 },
    },
    factors: async (alloc) => {
      const { scale } = await scaleOf(r1);
      // the stored pieces only feed the face-splitting: pooled scratch like the factors themselves
      const scratch = dense ? undefined : alloc;
      const [a1, b1, a2, b2] = await Promise.all([read64(c, w1a, scratch), read64(c, w1b, scratch), read64(c, w2a, scratch), read64(c, w2b, scratch)]);
      let P1 = a1,
        P2 = a2,
        Q1 = b1,
        Q2 = b2;
      if (t1 && t2) {
        const K = kernel!.reduce((x, y) => x * y, 1);
        const inCh = n / K;
        P1 = transpose(a1, r1, out);
        P2 = transpose(a2, r2, out);
        Q1 = tuckerRight(await read64(c, t1), r1, r1, K, b1, inCh);
        Q2 = tuckerRight(await read64(c, t2), r2, r2, K, b2, inCh);
      }
      const h = { P1, Q1, r1, P2, Q2, r2, out, n, s: scale };
      return dense ? denseFactors(hadamardDense(h), out, n) : faceSplit(h, alloc);
    },
  };
}
