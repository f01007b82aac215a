// prune --method loraprune's adapter output (docs/algorithms.md §4.3): each projection's channel cut
// from the plan (loraprune.ts), applied to its LoRA factors (rows of B, or columns of A) with the
// error it costs; pruned-base.ts applies the same cuts to the base weights.
import { readFactors, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import type { OutModule } from "../../formats/adapter/write.js";
import { lowRankNorm } from "../../linalg/lowrank.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { ModuleResult } from "../report.js";
import { keptChannels, partOf, ROW_PRUNED, type Proj } from "./groups.js";
import type { LayerPlan, LoraPrunePlan, MappedModule, PartPlan } from "./loraprune.js";

export interface Cut {
  axis: "rows" | "cols";
  kept: Int32Array;
}

function partPlan(L: LayerPlan, proj: Proj): PartPlan {
  return partOf(proj) === "self_attn" ? L.attn : L.mlp;
}

/** The channel cut of one projection in a layer, or null when that part keeps everything. */
export function cutFor(plan: LoraPrunePlan, layer: number, proj: Proj): Cut | null {
  const L = plan.layers[layer]!;
  const P = partPlan(L, proj);
  if (P.kept.length === P.total) return null;
  return { axis: ROW_PRUNED.has(proj) ? "rows" : "cols", kept: keptChannels(proj, P.kept, plan.arch, layer) };
}

function takeRows(M: Float64Array, cols: number, kept: Int32Array): Float64Array {
  const out = new Float64Array(kept.length * cols);
  for (let k = 0; k < kept.length; k++) out.set(M.subarray(kept[k]! * cols, (kept[k]! + 1) * cols), k * cols);
  return out;
}

function takeCols(M: Float64Array, rows: number, cols: number, kept: Int32Array): Float64Array {
  const n = kept.length,
    out = new Float64Array(rows * n);
  for (let i = 0; i < rows; i++) for (let k = 0; k < n; k++) out[i * n + k] = M[i * cols + kept[k]!]!;
  return out;
}

function complement(kept: Int32Array, n: number): Int32Array {
  const keep = new Uint8Array(n);
  for (const k of kept) keep[k] = 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (!keep[i]) out.push(i);
  return Int32Array.from(out);
}

/** The pruned adapter's modules and their report rows. */
export async function adapterOutput(
  a: Adapter,
  plan: LoraPrunePlan & { mapped: MappedModule[]; other: LoraModule[] },
  be: LinalgBackend,
): Promise<{ out: OutModule[]; results: ModuleResult[]; notes: string[] }> {
  const out: OutModule[] = [],
    results: ModuleResult[] = [],
    notes: string[] = [];
  const cuts = new Map<LoraModule, Cut | null>();
  for (const mm of plan.mapped) cuts.set(mm.m, cutFor(plan, mm.layer, mm.proj));
  let masksDropped = 0;
  for (const m of a.modules) {
    const cut = cuts.get(m) ?? null;
    const f = await readFactors(a, m, "f64");
    const norm = await lowRankNorm(be, { B: f.B, A: f.A, scale: m.scale });
    const extras: NonNullable<OutModule["extras"]> = {};
    for (const [role, t] of Object.entries(m.extras)) {
      if (role === "lora_mask" && cut) {
        masksDropped++;
        continue;
      }
      extras[role] = { file: a.file, tensor: t };
    }
    const common = { path: m.path, kind: m.kind, rank: m.rank, alpha: m.alpha, dtype: m.A.dtype, extras, ...(a.format === "kohya" ? { stem: m.name } : {}) };
    if (!cut) {
      out.push({ ...common, out: m.out, in: m.in, rawFactors: { A: { file: a.file, tensor: m.A }, B: { file: a.file, tensor: m.B } } });
      results.push({ name: m.name, rank_in: m.rank, rank: m.rank, relative_error: 0, target_norm: norm, shape_in: [m.out, m.in], shape: [m.out, m.in] });
      continue;
    }
    const rows = cut.axis === "rows";
    const newOut = rows ? cut.kept.length : m.out,
      newIn = rows ? m.in : cut.kept.length;
    // ‖ΔW − ΔW restricted‖ = ‖s·B[dropped rows]·A‖ (rows) or ‖s·B·A[:, dropped cols]‖ (columns)
    const gone = complement(cut.kept, rows ? m.out : m.in);
    const lost =
      gone.length === 0
        ? 0
        : rows
          ? await lowRankNorm(be, { B: { rows: gone.length, cols: m.rank, data: takeRows(f.B.data as Float64Array, m.rank, gone) }, A: f.A, scale: m.scale })
          : await lowRankNorm(be, {
              B: f.B,
              A: { rows: m.rank, cols: gone.length, data: takeCols(f.A.data as Float64Array, m.rank, m.in, gone) },
              scale: m.scale,
            });
    const kept = cut.kept;
    out.push({
      ...common,
      out: newOut,
      in: newIn,
      produce: async () => {
        const ff = await readFactors(a, m, "f64");
        return rows
          ? { B: takeRows(ff.B.data as Float64Array, m.rank, kept), A: ff.A.data }
          : { B: ff.B.data, A: takeCols(ff.A.data as Float64Array, m.rank, m.in, kept) };
      },
    });
    results.push({
      name: m.name,
      rank_in: m.rank,
      rank: m.rank,
      relative_error: norm > 0 ? lost / norm : 0,
      target_norm: norm,
      shape_in: [m.out, m.in],
      shape: [newOut, newIn],
      pruned: rows ? "rows" : "columns",
    });
  }
  if (masksDropped) notes.push(`${masksDropped} lora_mask tensor(s) of pruned modules are not written: the pruning is now physical`);
  return { out, results, notes };
}
