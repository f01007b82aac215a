// The report every writing command returns (docs/cli.md "Write reports": commands that write an adapter print, with
// --json, one document describing what they did: per module the new rank and the relative error
// ‖ΔW_out − ΔW_target‖_F / ‖ΔW_target‖_F, computed from the factors, plus totals").

export interface ModuleResult {
  name: string;
  /** Rank(s) in: one number, or one per input for merges. */
  rank_in: number | number[];
  /** Output rank (0 = module removed). */
  rank: number;
  /** ‖ΔW_out − ΔW_target‖_F / ‖ΔW_target‖_F from the factors. */
  relative_error: number;
  /** Σ kept σ² / Σ σ², where the command truncates a spectrum. */
  retained_energy?: number;
  /** ‖ΔW_target‖_F, used for the total error. */
  target_norm: number;
  [extra: string]: unknown;
}

export interface WriteReport {
  command: string;
  method: string;
  inputs: string[];
  output: string;
  format: string;
  modules: ModuleResult[];
  /** Modules dropped from the output (rank 0 / pruned). */
  dropped: string[];
  totals: {
    modules: number;
    rank_in: number;
    rank: number;
    relative_error: number;
    params_in?: number;
    params?: number;
    /** Bytes of the written file's tensor data (formats/adapter/write.ts WrittenAdapter.tensorBytes). */
    bytes?: number;
  };
  notes: string[];
  [extra: string]: unknown;
}

/**
 * Totals: overall relative error √(Σ errᵢ²‖Tᵢ‖²) / √(Σ ‖Tᵢ‖²) (the error of the whole adapter), and
 * the tensor bytes written, where given.
 */
/**
 * Totals of the module rows; the total error is √(Σ‖ΔW_out − T‖²)/√(Σ‖T‖²). `diffOf` gives ‖ΔW_out − T‖
 * where relative_error × target_norm cannot (a target reported as 0 with an infinite ratio).
 */
export function totalsOf(mods: ModuleResult[], bytes?: number, diffOf?: (m: ModuleResult) => number | undefined): WriteReport["totals"] {
  let num = 0,
    den = 0;
  for (const m of mods) {
    num += (diffOf?.(m) ?? m.relative_error * m.target_norm) ** 2;
    den += m.target_norm ** 2;
  }
  const rin = (m: ModuleResult) => (Array.isArray(m.rank_in) ? m.rank_in.reduce((s, x) => s + x, 0) : m.rank_in);
  return {
    modules: mods.filter((m) => m.rank > 0).length,
    rank_in: mods.reduce((s, m) => s + rin(m), 0),
    rank: mods.reduce((s, m) => s + m.rank, 0),
    relative_error: den > 0 ? Math.sqrt(num / den) : num > 0 ? Infinity : 0,
    ...(bytes !== undefined ? { bytes } : {}),
  };
}
