// Truncating a derived module whose family knows its own Eckart–Young truncation (LoKr: the k
// largest Kronecker pairs from two small SVDs; formats/adapter/lycoris/lokr.ts), without forming
// its exact factors. The report row comes from the family's spectrum: the exact truncation's error
// is its tail, Σ_{i≥t} σᵢ², plus what rounding to the output dtype adds (linalg/truncate.ts
// truncationError). Called from modules.ts buildModules for `--method svd`.
import { type Adapter, alphaForScale, type LoraModule } from "../../formats/adapter/index.js";
import type { OutModule } from "../../formats/adapter/write.js";
import type { DType } from "../../formats/safetensors/index.js";
import { retainedEnergy, roundForDtype, toF64, truncationError } from "../../linalg/truncate.js";
import type { SplitMode } from "../../linalg/lowrank.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { ModuleResult } from "../report.js";
import { outFields } from "./out-fields.js";

/** What of modules.ts's BuildContext this needs (declared here: modules.ts imports this file). */
export interface FamilyContext {
  o: { dtype?: DType };
  a: Adapter;
  be: LinalgBackend;
  spectra?: Map<string, Float64Array>;
  format: string;
  rsOut: boolean;
  te2: boolean;
  split: SplitMode;
}

export const hasFamilyTruncation = (m: LoraModule): boolean => m.family?.truncate !== undefined && m.family.spectrum !== undefined;

/** The output module (null when t = 0: removed) and, once written, its outcome. */
export async function familyTruncation(
  c: FamilyContext,
  m: LoraModule,
  t: number,
  outcomes: Map<string, { result: ModuleResult; route?: string }>,
  tick: () => void,
): Promise<OutModule | null> {
  const fam = m.family!;
  const scaleIn = m.scale !== 0 ? m.scale : 1;
  if (t === 0) {
    const S = c.spectra?.get(m.name) ?? (await fam.spectrum!());
    const norm = Math.hypot(...S);
    outcomes.set(m.name, {
      result: { name: m.name, rank_in: m.rank, rank: 0, relative_error: norm > 0 ? 1 : 0, target_norm: norm, retained_energy: retainedEnergy(S, 0) },
      route: "family",
    });
    tick();
    return null;
  }
  const dtype: DType = c.o.dtype ?? fam.dtype;
  const alpha = alphaForScale(scaleIn, t, c.rsOut);
  const extras: NonNullable<OutModule["extras"]> = {};
  for (const [role, tensor] of Object.entries(m.extras)) extras[role] = { file: c.a.file, tensor };
  const produce = async () => {
    // truncate first: the family keeps the spectrum of the same SVDs (one computation).
    const f = await fam.truncate!(t);
    const S = await fam.spectrum!();
    // Balanced split (√σ on each side) with the input's scale s: B·A·s = the truncation when B, A are divided by √s.
    const B = toF64(f.B),
      A = toF64(f.A);
    const k = Math.sqrt(Math.abs(scaleIn));
    for (let col = 0; col < t; col++) {
      const sv = Math.sqrt(S[col] ?? 0);
      const [bf, af] = c.split === "all-in-up" ? [sv / scaleIn, sv > 0 ? 1 / sv : 0] : [1 / k, Math.sign(scaleIn) / k];
      for (let i = 0; i < m.out; i++) B[i * t + col] = B[i * t + col]! * bf;
      for (let j = 0; j < m.in; j++) A[col * m.in + j] = A[col * m.in + j]! * af;
    }
    const Bo = roundForDtype(dtype, B),
      Ao = roundForDtype(dtype, A);
    let norm2 = 0,
      err2 = 0;
    S.forEach((x, i) => {
      norm2 += x * x;
      if (i >= t) err2 += x * x;
    });
    const M = (rows: number, cols: number, data: Float32Array | Float64Array) => ({ rows, cols, data: toF64(data) });
    const err = await truncationError(c.be, M(m.out, t, B), M(t, m.in, A), M(m.out, t, Bo), M(t, m.in, Ao), scaleIn, err2, norm2);
    outcomes.set(m.name, {
      result: { name: m.name, rank_in: m.rank, rank: t, ...err, alpha, retained_energy: retainedEnergy(S, t) },
      route: "family",
    });
    tick();
    return { A: Ao, B: Bo };
  };
  return { ...outFields(c, m, t, alpha, dtype, extras), produce };
}
