// prune --method modules: drop whole modules from an adapter file (docs/algorithms.md §4.2) by regex over
// the module name, by layer index, by ‖ΔW‖_F below a floor, or by a share of the adapter's total
// energy ‖ΔW_m‖² / Σ ‖ΔW‖² below a floor. A module is dropped when any given criterion selects it.
// Kept modules are copied byte for byte; the writer rewrites target_modules, rank_pattern,
// alpha_pattern and the kohya metadata for the modules that remain.
import { alphaForScale, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import type { OutModule } from "../../formats/adapter/write.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { ModuleResult } from "../report.js";
import { kernelOf } from "../kernels.js";
import { moduleSpectra } from "../spectra.js";

export interface ModuleCriteria {
  match?: RegExp;
  layers?: ReadonlySet<number>;
  minNorm?: number;
  minEnergyShare?: number;
}

const LAYER_RE = /(?:^|[._])(?:layers|layer|h|blocks|block)[._](\d+)(?=[._]|$)/;

/** Layer index of a module: the number after the first `layers`/`layer`/`h`/`blocks`/`block` component. */
export function layerIndexOf(name: string): number | null {
  const m = LAYER_RE.exec(name);
  return m ? Number(m[1]) : null;
}

export interface ModulesPlanned {
  out: OutModule[];
  results: ModuleResult[];
  dropped: string[];
  notes: string[];
}

function reasons(m: LoraModule, norm: number, share: number, c: ModuleCriteria): string[] {
  const why: string[] = [];
  if (c.match && (c.match.test(m.name) || c.match.test(m.path))) why.push("match");
  if (c.layers) {
    const l = layerIndexOf(m.path) ?? layerIndexOf(m.name);
    if (l !== null && c.layers.has(l)) why.push("layer");
  }
  if (c.minNorm !== undefined && norm < c.minNorm) why.push("min-norm");
  if (c.minEnergyShare !== undefined && share < c.minEnergyShare) why.push("min-energy-share");
  return why;
}

/** rsloraOut: whether the output config uses rsLoRA (alpha is re-derived from the scale when it differs). */
export async function planModules(
  a: Adapter,
  c: ModuleCriteria,
  rsloraOut: boolean,
  be: LinalgBackend,
  onModule?: (i: number, n: number) => void,
): Promise<ModulesPlanned> {
  // ‖ΔW‖_F = ‖σ‖ from each module's spectrum (inspect's: on cpu one native call per module from
  // its stored bytes, modules side by side); NaN/Inf in a factor is refused there (exit 3).
  const spectra = await moduleSpectra(a, be, { ...(onModule ? { onModule } : {}) });
  const norms = a.modules.map((m) => Math.hypot(...spectra.get(m)!.S));
  const total = norms.reduce((s, x) => s + x * x, 0);
  const res: ModulesPlanned = { out: [], results: [], dropped: [], notes: [] };
  let unindexed = 0;
  const present = new Set<number>(); // the adapter's layer indices
  a.modules.forEach((m, k) => {
    const norm = norms[k]!;
    const share = total > 0 ? (norm * norm) / total : 0;
    const layer = layerIndexOf(m.path) ?? layerIndexOf(m.name);
    if (layer === null) {
      if (c.layers) unindexed++;
    } else present.add(layer);
    const why = reasons(m, norm, share, c);
    const dropped = why.length > 0;
    res.results.push({
      name: m.name,
      rank_in: m.rank,
      rank: dropped ? 0 : m.rank,
      relative_error: dropped && norm > 0 ? 1 : 0,
      target_norm: norm,
      norm,
      energy_share: share,
      ...(dropped ? { dropped_by: why } : {}),
    });
    if (dropped) {
      res.dropped.push(m.name);
      return;
    }
    const kernel = kernelOf(m.A.shape);
    const extras: NonNullable<OutModule["extras"]> = {};
    for (const [role, t] of Object.entries(m.extras)) extras[role] = { file: a.file, tensor: t };
    res.out.push({
      path: m.path,
      kind: m.kind,
      rank: m.rank,
      alpha: m.rslora === rsloraOut ? m.alpha : alphaForScale(m.scale, m.rank, rsloraOut),
      out: m.out,
      in: m.in,
      dtype: m.A.dtype,
      ...(kernel ? { kernel } : {}),
      ...(a.format === "kohya" ? { stem: m.name } : {}),
      rawFactors: { A: { file: a.file, tensor: m.A }, B: { file: a.file, tensor: m.B } },
      extras,
    });
  });
  if (unindexed) res.notes.push(`${unindexed} module(s) have no layer index in their name; --layers does not select them`);
  // A selector that selects nothing is most likely a typo (as lint's peft-pattern-unused): said, not refused.
  if (c.match && !a.modules.some((m) => c.match!.test(m.name) || c.match!.test(m.path)))
    res.notes.push(`--match ${c.match.source} matches no module: it drops nothing`);
  if (c.layers) {
    const absent = [...c.layers].filter((l) => !present.has(l));
    if (absent.length) {
      const have = [...present].sort((x, y) => x - y);
      res.notes.push(
        `--layers: no module is in layer${absent.length > 1 ? "s" : ""} ${ranges(absent)}${have.length ? ` (the adapter's layers: ${ranges(have)})` : ""}: ${absent.length === c.layers.size ? "it drops nothing" : "those select nothing"}`,
      );
    }
  }
  return res;
}

/** Sorted layer indices as "0-3,7,9-10". */
function ranges(xs: number[]): string {
  const v = [...xs].sort((x, y) => x - y);
  const parts: string[] = [];
  for (let i = 0; i < v.length; ) {
    let j = i;
    while (j + 1 < v.length && v[j + 1] === v[j]! + 1) j++;
    parts.push(j > i ? `${v[i]}-${v[j]}` : String(v[i]));
    i = j + 1;
  }
  return parts.join(",");
}
