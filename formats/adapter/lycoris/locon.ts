// LoCon with the Tucker core and LyCORIS "full" (docs/formats.md "LyCORIS"; lycoris/modules/locon.py,
// full.py). LoCon Tucker: lora_down [r, in, 1, 1], lora_mid [r, r, kh, kw], lora_up [out, r, 1, 1],
// ΔW[o, c, k…] = s·Σ_{i,j} up[o,i]·mid[i,j,k…]·down[j,c] (up(mid(down(x)))), s = alpha / rows(lora_down):
// exact factors B = up, A = s·tuckerRight(mid, down), rank r. Full: `diff` is ΔW itself (no alpha),
// `diff_b` the bias delta; its exact factors are the dense form (identity on the smaller side).
import type { TensorInfo } from "../../safetensors/index.js";
import type { DerivedModuleSpec } from "../derived.js";
import { denseFactors, denseRank } from "./exact.js";
import type { Group } from "./keys.js";
import { type ModuleId, moduleShape, type ScaleOf } from "./module-id.js";
import { checkTensor, flat2, mismatch, type ReadCtx, read64, storedDtype } from "./stored.js";
import { tuckerRight } from "./tucker.js";

export function loconTuckerSpec(c: ReadCtx, id: ModuleId, g: Group, scaleOf: ScaleOf): DerivedModuleSpec {
  const down = g.get("lora_down.weight"),
    mid = g.get("lora_mid.weight")!,
    up = g.get("lora_up.weight");
  if (!down || !up) throw mismatch(c.label, id.name, `lora_mid without its ${down ? "lora_up" : "lora_down"} tensor`);
  checkTensor(c.label, mid, [3, 4, 5], "a LoCon Tucker core");
  checkTensor(c.label, down, [mid.shape.length], "LoCon Tucker factors");
  checkTensor(c.label, up, [mid.shape.length], "LoCon Tucker factors");
  const r = down.shape[0]!,
    inCh = down.shape[1]!,
    out = up.shape[0]!;
  const kernel = mid.shape.slice(2);
  const K = kernel.reduce((x, y) => x * y, 1);
  const ones = (t: TensorInfo) => t.shape.slice(2).every((d) => d === 1);
  if (!ones(down) || !ones(up) || up.shape[1] !== mid.shape[0] || mid.shape[1] !== r)
    throw mismatch(c.label, id.name, `LoCon Tucker shapes do not fit: lora_down [${down.shape}], lora_mid [${mid.shape}], lora_up [${up.shape}]`);
  const R = mid.shape[0]!;
  const stored = [down, mid, up];
  return {
    ...moduleShape(id, out, inCh * K, kernel, R),
    family: { type: "locon-tucker", detail: `LoCon Tucker ${R}, core ${kernel.join("×")}`, stored, dtype: storedDtype(stored), info: { rank: R, kernel } },
    factors: async () => {
      const { scale } = await scaleOf(r);
      const [d, m, u] = await Promise.all([read64(c, down), read64(c, mid), read64(c, up)]);
      const A = tuckerRight(m, R, r, K, d, inCh);
      for (let i = 0; i < A.length; i++) A[i] = A[i]! * scale;
      return { B: u, A };
    },
  };
}

export function fullSpec(c: ReadCtx, id: ModuleId, g: Group): DerivedModuleSpec {
  const diff = g.get("diff")!;
  checkTensor(c.label, diff, [1, 2, 3, 4, 5], "a full ΔW (diff)");
  if (diff.shape.length === 1) throw mismatch(c.label, id.name, `diff [${diff.shape}] is a vector (a norm layer's ΔW): not a matrix module`);
  const [out, n] = flat2(diff);
  const kernel = diff.shape.length > 2 ? diff.shape.slice(2) : undefined;
  const bias = g.get("diff_b");
  return {
    ...moduleShape(id, out, n, kernel, denseRank(out, n)),
    family: {
      type: "full",
      detail: `full ΔW stored dense [${diff.shape}]${bias ? " + bias" : ""}`,
      stored: [diff, ...(bias ? [bias] : [])],
      dtype: diff.dtype,
      info: { dense: true },
    },
    factors: async () => denseFactors(await read64(c, diff), out, n),
    ...(bias ? { extras: { "lora_B.bias": bias } } : {}),
  };
}
