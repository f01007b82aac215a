// Building one LoraModule from its tensors: grouping a file's keys into modules by suffix, and the
// shape checks shared by every format. A is r×in (conv: r×in×kh×kw, flattened), B is out×r (conv:
// out×r×1×1).
import { InvalidInputError } from "../../common/errors.js";
import type { TensorInfo } from "../safetensors/index.js";
import type { LoraModule } from "./types.js";

export interface ModuleParts {
  A?: TensorInfo;
  B?: TensorInfo;
  alpha?: TensorInfo;
  embedding?: boolean;
  extras: Record<string, TensorInfo>;
}

/**
 * The tensors of a file sorted by key suffix (the first of `roles` a name ends with): per stem (the
 * name less its suffix) the tensor of each role, stems and roles in the order the file names them;
 * `rest` the tensors no suffix matches, in file order.
 */
export function groupByRole<R extends string>(
  tensors: readonly TensorInfo[],
  roles: readonly (readonly [suffix: string, role: R])[],
): { groups: Map<string, Partial<Record<R, TensorInfo>>>; rest: TensorInfo[] } {
  const groups = new Map<string, Partial<Record<R, TensorInfo>>>();
  const rest: TensorInfo[] = [];
  for (const t of tensors) {
    const hit = roles.find(([suffix]) => t.name.endsWith(suffix));
    if (!hit) {
      rest.push(t);
      continue;
    }
    const stem = t.name.slice(0, -hit[0].length);
    const g: Partial<Record<R, TensorInfo>> = groups.get(stem) ?? {};
    g[hit[1]] = t;
    groups.set(stem, g);
  }
  return { groups, rest };
}

/** A module's parts from its tensors by role, in file order: A/embA and B/embB the factors (emb*: an embedding), alpha, any other an extra. */
export function partsOf(roles: Partial<Record<string, TensorInfo>>): ModuleParts {
  const g: ModuleParts = { extras: {} };
  for (const [role, t] of Object.entries(roles) as [string, TensorInfo][]) {
    if (role === "A" || role === "embA") g.A = t;
    else if (role === "B" || role === "embB") g.B = t;
    else if (role === "alpha") g.alpha = t;
    else g.extras[role] = t;
    if (role === "embA" || role === "embB") g.embedding = true;
  }
  return g;
}

const FLOAT_DTYPES = new Set(["F64", "F32", "F16", "BF16"]);

export function buildModule(parts: ModuleParts, id: { name: string; path: string; matchKey: string; label: string; kohyaStem?: string }): LoraModule {
  const A = parts.A!,
    B = parts.B!;
  const where = `${id.label}: module "${id.name}"`;
  for (const t of [A, B]) {
    if (!FLOAT_DTYPES.has(t.dtype)) throw new InvalidInputError(`${where}: tensor ${t.name} has dtype ${t.dtype}; LoRA factors must be F64, F32, F16 or BF16`);
  }
  let kind: LoraModule["kind"] = parts.embedding ? "embedding" : "linear";
  let rank: number, inF: number, out: number;
  if (A.shape.length === 2 && B.shape.length === 2) {
    rank = A.shape[0]!;
    inF = A.shape[1]!;
    out = B.shape[0]!;
    if (B.shape[1] !== rank) throw new InvalidInputError(`${where}: ranks differ: ${A.name} has ${rank} rows, ${B.name} has ${B.shape[1]} columns`);
  } else if (A.shape.length >= 3 && B.shape.length === A.shape.length && !parts.embedding) {
    kind = "conv";
    rank = A.shape[0]!;
    out = B.shape[0]!;
    inF = A.shape.slice(1).reduce((x, y) => x * y, 1);
    if (B.shape[1] !== rank)
      throw new InvalidInputError(`${where}: ranks differ: ${A.name} has ${rank} output channels, ${B.name} has ${B.shape[1]} input channels`);
    if (B.shape.slice(2).some((d) => d !== 1))
      throw new InvalidInputError(`${where}: ${B.name} has kernel ${B.shape.slice(2).join("×")}; only 1×1 up-convolutions are LoRA factors`);
  } else {
    throw new InvalidInputError(`${where}: factor shapes [${A.shape}] and [${B.shape}] are not a LoRA pair`);
  }
  if (rank === 0) throw new InvalidInputError(`${where}: rank 0 factors`);
  return {
    name: id.name,
    path: id.path,
    matchKey: id.matchKey,
    kind,
    rank,
    alpha: rank,
    scale: 1,
    rslora: false,
    out,
    in: inF,
    A,
    B,
    extras: parts.extras,
    ...(parts.alpha ? { alphaTensor: parts.alpha } : {}),
    ...(id.kohyaStem !== undefined ? { kohyaStem: id.kohyaStem } : {}),
  };
}
