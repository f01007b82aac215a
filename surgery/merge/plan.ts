// Merge planning (the first of merge's two passes): the inputs' modules paired by matchKey, the
// passthrough tensors resolved, each module's output rank decided, and everything that can refuse
// the merge refused before anything is written.
import { createHash } from "node:crypto";
import { readFactors, type Adapter, type LoraModule, type ModuleKind } from "../../formats/adapter/index.js";
import { InvalidInputError } from "../../common/errors.js";
import type { DType, TensorInfo } from "../../formats/safetensors/index.js";
import type { Mat } from "../../linalg/types.js";
import { kernelOf } from "../kernels.js";
import { catRank } from "./cat.js";
import { projectedRank, sharedADeviation } from "./ffa.js";
import { legoUnits } from "./lego.js";
import { linearRank } from "./linear.js";
import { svdRank } from "./svd.js";
import { denseRank } from "./ties.js";
import type { MergeOptions, MergeTerm, TermShape } from "./types.js";

/** A module as paired across the inputs. */
export interface Group {
  key: string;
  name: string;
  path: string;
  kind: ModuleKind;
  out: number;
  in: number;
  kernel?: number[];
  stem?: string;
  members: { input: number; module: LoraModule }[];
  /** Inputs with a non-zero weight. */
  active: { input: number; module: LoraModule }[];
  dtype: DType;
  rank: number;
  ffaShared?: boolean;
  ffaDeviation?: number;
}

function widestDtype(ds: DType[]): DType {
  const set = new Set(ds);
  if (set.size === 1) return ds[0]!;
  return set.has("F64") ? "F64" : "F32";
}

async function sha256Of(a: Adapter, t: TensorInfo): Promise<string> {
  const h = createHash("sha256");
  await a.file.copyRaw(t, async (chunk) => {
    h.update(chunk);
  });
  return h.digest("hex");
}

export function label(src: string): string {
  return src === "-" ? "<stdin>" : src;
}

export function pairModules(adapters: Adapter[], weights: number[]): Group[] {
  const groups = new Map<string, Group>();
  adapters.forEach((a, i) => {
    const seen = new Set<string>();
    for (const m of a.modules) {
      if (seen.has(m.matchKey)) throw new InvalidInputError(`${label(a.source)}: two modules map to the same name "${m.matchKey}"`);
      seen.add(m.matchKey);
      const extras = Object.keys(m.extras);
      if (extras.length) {
        throw new InvalidInputError(`${label(a.source)}: module "${m.name}" has ${extras.join(", ")}; merging those is not supported`, {
          hint: "prune or strip them first (lora prune), or merge with PEFT on the base model",
        });
      }
      const kernel = kernelOf(m.A.shape);
      const g = groups.get(m.matchKey);
      if (!g) {
        groups.set(m.matchKey, {
          key: m.matchKey,
          name: m.name,
          path: m.path,
          kind: m.kind,
          out: m.out,
          in: m.in,
          ...(kernel ? { kernel } : {}),
          ...(a.format === "kohya" ? { stem: m.name } : {}),
          members: [{ input: i, module: m }],
          active: [],
          dtype: m.A.dtype,
          rank: 0,
        });
        continue;
      }
      const first = g.members[0]!;
      const kernelSame = JSON.stringify(kernel ?? null) === JSON.stringify(g.kernel ?? null);
      if (m.kind !== g.kind || m.out !== g.out || m.in !== g.in || !kernelSame) {
        throw new InvalidInputError(
          `module "${g.name}" cannot be merged: ${label(adapters[first.input]!.source)} has a ${g.kind} ΔW of ${g.out}×${g.in}${g.kernel ? ` (kernel ${g.kernel.join("×")})` : ""}, ${label(a.source)} a ${m.kind} ΔW of ${m.out}×${m.in}${kernel ? ` (kernel ${kernel.join("×")})` : ""}`,
          { hint: "adapters for different base models (or layers) cannot be merged" },
        );
      }
      g.members.push({ input: i, module: m });
    }
  });
  for (const g of groups.values()) {
    g.active = g.members.filter((m) => weights[m.input] !== 0);
    g.dtype = widestDtype(g.members.map((m) => m.module.A.dtype));
  }
  return [...groups.values()];
}

export async function resolvePassthrough(
  adapters: Adapter[],
  policy: MergeOptions["passthrough"],
): Promise<{ kept: { input: number; tensor: TensorInfo }[]; dropped: string[]; conflicts: string[] }> {
  const byName = new Map<string, { input: number; tensor: TensorInfo; hash?: string; conflict: boolean }>();
  for (let i = 0; i < adapters.length; i++) {
    for (const t of adapters[i]!.passthrough) {
      const prev = byName.get(t.name);
      if (!prev) {
        byName.set(t.name, { input: i, tensor: t, conflict: false });
        continue;
      }
      if (prev.conflict) continue;
      let same = prev.tensor.dtype === t.dtype && JSON.stringify(prev.tensor.shape) === JSON.stringify(t.shape);
      if (same) {
        prev.hash ??= await sha256Of(adapters[prev.input]!, prev.tensor);
        same = prev.hash === (await sha256Of(adapters[i]!, t));
      }
      if (!same) prev.conflict = true;
    }
  }
  const conflicts = [...byName.entries()].filter(([, v]) => v.conflict).map(([k]) => k);
  if (conflicts.length && policy === "error") {
    throw new InvalidInputError(
      `${conflicts.length} passthrough tensor(s) differ between the inputs (${conflicts.slice(0, 4).join(", ")}${conflicts.length > 4 ? ", …" : ""}); a merged adapter can carry only one of each`,
      { hint: "--passthrough first keeps the first input's, --passthrough drop leaves them out" },
    );
  }
  const kept: { input: number; tensor: TensorInfo }[] = [];
  const dropped: string[] = [];
  for (const [name, v] of byName) {
    if (v.conflict && policy === "drop") {
      dropped.push(name);
      continue;
    }
    kept.push({ input: v.input, tensor: v.tensor });
  }
  return { kept, dropped, conflicts };
}

/** Decide each module's output rank and refuse what cannot be merged, before anything is written. */
export async function planRanks(groups: Group[], adapters: Adapter[], o: MergeOptions): Promise<void> {
  for (const g of groups) {
    const ranks = g.active.map((m) => m.module.rank);
    const maxR = Math.max(...ranks);
    const K = o.rank ?? maxR;
    const shape = { out: g.out, in: g.in };
    const fake: TermShape[] = g.active.map((m) => ({ A: { rows: m.module.rank, cols: g.in }, B: { rows: g.out, cols: m.module.rank } }));
    switch (o.method) {
      case "cat":
        g.rank = catRank(fake);
        break;
      case "svd":
        g.rank = svdRank(K, fake);
        break;
      case "linear":
        g.rank = linearRank(fake);
        break;
      case "ties":
      case "dare":
      case "dare_ties":
      case "magnitude_prune":
        g.rank = denseRank(K, shape.out, shape.in);
        break;
      case "lego": {
        const units = legoUnits(fake);
        if (K > units) {
          throw new InvalidInputError(
            `module "${g.name}": k = ${K} clusters but only ${units} rank units among the inputs (Σ rᵢ); k must be ≤ the total number of units`,
            { hint: `use --rank ${units} or less` },
          );
        }
        g.rank = K;
        break;
      }
      case "fair": {
        if (new Set(ranks).size > 1) {
          throw new InvalidInputError(`module "${g.name}": fair averages A, so every input needs the same rank (found ${ranks.join(", ")})`, {
            hint: "use --method svd or cat for inputs of different ranks",
          });
        }
        g.rank = ranks[0]!;
        break;
      }
      case "ffa": {
        const terms = await readTerms(
          adapters,
          g,
          g.active.map(() => 1),
          true,
        );
        const dev = sharedADeviation(terms);
        g.ffaDeviation = dev;
        g.ffaShared = dev <= o.ffaTol;
        if (!g.ffaShared && !o.project) {
          const why = Number.isFinite(dev)
            ? `their A factors differ (max|Aₖ − A₁| = ${dev.toExponential(3)} × max|A₁| > ${o.ffaTol})`
            : `their ranks differ (${ranks.join(", ")})`;
          throw new InvalidInputError(`module "${g.name}": ffa needs every input to share A (FFA-LoRA freezes a common A), but ${why}`, {
            hint: "--project fits each ΔW onto a shared row space (approximate), or use --method svd",
          });
        }
        g.rank = g.ffaShared ? ranks[0]! : projectedRank(K, fake);
        break;
      }
    }
  }
}

/** Every active input's factors for a module, in float64; `weights` by input index, or aligned with g.active when `positional`. */
export async function readTerms(adapters: Adapter[], g: Group, weights: number[], positional = false): Promise<MergeTerm[]> {
  const terms: MergeTerm[] = [];
  for (let j = 0; j < g.active.length; j++) {
    const { input, module } = g.active[j]!;
    const f = await readFactors(adapters[input]!, module, "f64");
    terms.push({ input, B: f.B as Mat<Float64Array>, A: f.A as Mat<Float64Array>, scale: module.scale, weight: positional ? weights[j]! : weights[input]! });
  }
  return terms;
}
