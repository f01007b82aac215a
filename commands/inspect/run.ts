// lora inspect: per module rank, alpha, scale, shape, dtype, ‖ΔW‖_F and the exact singular values
// of ΔW = s·B·A from the factors (docs/algorithms.md §2; never the dense ΔW), cumulative energy and
// effective rank; optionally the --budget / --energy allocation truncate would make.
import { isDora, loadAdapter, parseKohyaMetadata, type Adapter, type KohyaMetadata, type LoraModule } from "../../formats/adapter/index.js";
import { cumulativeEnergy, effectiveRank } from "../../linalg/lowrank.js";
import { moduleSpectra } from "../../surgery/spectra.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { allocate, type AllocationRequest, type Score } from "../../surgery/truncate/allocate.js";

export interface InspectOptions {
  input: string;
  budget?: number;
  energy?: number;
  score: Score;
  minRank: number;
  rho: number;
}

export interface ModuleReport {
  name: string;
  kind: LoraModule["kind"];
  shape: [number, number];
  rank: number;
  alpha: number;
  scale: number;
  dtype: string;
  norm: number;
  singular_values: number[];
  energy: number[];
  effective_rank: number;
  extras?: string[];
  gate?: { total: number; zero: number };
  /** How the file stores a derived module (LoHa, LoKr, …: docs/formats.md "Derived modules"); dtype is then the stored one. */
  family?: { type: string; detail: string; info?: Record<string, number | string | boolean | number[]> };
}

/** A module whose ΔW needs the base weights ((IA)³, bias-only diff, OFT): listed, not computed. */
export interface BaseDependentReport {
  name: string;
  type: string;
  reason: string;
  tensors: string[];
}

export interface InspectReport {
  path: string;
  format: string;
  dtype: string;
  config: Record<string, unknown> | null;
  config_source: string;
  notes: string[];
  modules: ModuleReport[];
  passthrough: string[];
  /** Modules whose ΔW needs the base model's weights (shown, not in `modules`). */
  base_dependent?: BaseDependentReport[];
  /** The file's kohya sd-scripts / ModelSpec metadata (docs/formats.md "kohya metadata"), when it has any. */
  kohya_metadata?: KohyaMetadata;
  totals: { modules: number; rank: number; params: number };
  redistribution?: { budget?: number; energy?: number; score: Score; ranks: Record<string, number>; retained_energy: number };
}

export async function inspectAdapter(adapter: Adapter, be: LinalgBackend, onModule?: (i: number, n: number) => void): Promise<ModuleReport[]> {
  const out: ModuleReport[] = [];
  const spectra = await moduleSpectra(adapter, be, onModule ? { onModule } : {});
  for (const m of adapter.modules) {
    const S = Array.from(spectra.get(m)!.S).slice(0, m.rank);
    const norm = Math.sqrt(S.reduce((s, x) => s + x * x, 0));
    const rep: ModuleReport = {
      name: m.name,
      kind: m.kind,
      shape: [m.out, m.in],
      rank: m.rank,
      alpha: m.alpha,
      scale: m.scale,
      dtype: m.family?.dtype ?? m.A.dtype,
      norm,
      singular_values: S,
      energy: cumulativeEnergy(S),
      effective_rank: effectiveRank(S),
    };
    const extras = Object.keys(m.extras);
    if (extras.length) rep.extras = extras;
    if (m.family) rep.family = { type: m.family.type, detail: m.family.detail, ...(m.family.info ? { info: m.family.info } : {}) };
    if (m.extras["gate"]) {
      const g = await adapter.file.readFloat64(m.extras["gate"]);
      rep.gate = { total: g.length, zero: g.reduce((n, x) => n + (x === 0 ? 1 : 0), 0) };
    }
    out.push(rep);
  }
  return out;
}

/** DoRA (docs/algorithms.md §1.4): the weight is m·(W + s·B·A)/‖W + s·B·A‖_c, so s·B·A alone is not the update. */
export const DORA_NOTE =
  "DoRA adapter: each module also has a magnitude vector (lora_magnitude_vector); the spectra shown are of s·B·A, not of the DoRA update, which rescales every column of W + s·B·A by magnitude/column norm and needs the base weights";

function kohyaField(meta: Record<string, string>): { kohya_metadata?: KohyaMetadata } {
  const k = parseKohyaMetadata(meta);
  return k ? { kohya_metadata: k } : {};
}

export async function runInspect(
  o: InspectOptions,
  deps: { backend: LinalgBackend; stdin?: NodeJS.ReadableStream; onModule?: (i: number, n: number) => void },
): Promise<InspectReport> {
  const adapter = await loadAdapter(o.input, deps.stdin ? { stdin: deps.stdin } : {});
  try {
    const modules = await inspectAdapter(adapter, deps.backend, deps.onModule);
    const report: InspectReport = {
      path: o.input,
      format: adapter.format,
      dtype: adapter.dtype,
      config: adapter.config,
      config_source: adapter.configSource,
      notes: isDora(adapter) ? [...adapter.notes, DORA_NOTE] : adapter.notes,
      modules,
      passthrough: adapter.passthrough.map((t) => t.name),
      ...(adapter.baseDependent?.length
        ? { base_dependent: adapter.baseDependent.map((b) => ({ name: b.name, type: b.type, reason: b.reason, tensors: b.tensors.map((t) => t.name) })) }
        : {}),
      ...kohyaField(adapter.metadata),
      totals: {
        modules: modules.length,
        rank: modules.reduce((s, m) => s + m.rank, 0),
        params: modules.reduce((s, m) => s + m.rank * (m.shape[0] + m.shape[1]), 0),
      },
    };
    if (o.budget !== undefined || o.energy !== undefined) {
      const req: AllocationRequest = {
        score: o.score,
        minRank: o.minRank,
        rho: o.rho,
        ...(o.budget !== undefined ? { budget: o.budget } : {}),
        ...(o.energy !== undefined ? { energy: o.energy } : {}),
      };
      const alloc = allocate(
        modules.map((m) => ({ name: m.name, sigma: m.singular_values, in: m.shape[1], out: m.shape[0], rank: m.rank })),
        req,
      );
      report.redistribution = {
        ...(o.budget !== undefined ? { budget: o.budget } : {}),
        ...(o.energy !== undefined ? { energy: o.energy } : {}),
        score: o.score,
        ranks: Object.fromEntries(alloc.ranks),
        retained_energy: alloc.retainedEnergy,
      };
    }
    return report;
  } finally {
    await adapter.file.close();
  }
}
