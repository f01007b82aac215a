// Derived modules (docs/formats.md "Derived modules"): families that store ΔW as something other
// than one B·A pair (LoHa, LoKr, Tucker cores, AdaLoRA's P·Λ·Q, LoRA-XS's B·R·A, …) are read into
// ordinary LoraModules whose A and B are their exact factors, computed on read in float64 with the
// scale folded in. Every command then takes them through the factor route unchanged; a family
// whose structure gives its spectrum or its optimal truncation more cheaply says so in `family`.
import { InvalidInputError } from "../../common/errors.js";
import { SafetensorsFile, type DerivedTensor, type TensorInfo } from "../safetensors/index.js";
import type { Adapter, ModuleFamily, ModuleKind, LoraModule } from "./types.js";

/** Exact factors of ΔW with the scale folded in: B out×R and A R×in, row-major float64. */
export interface ExactFactors {
  B: Float64Array;
  A: Float64Array;
}

/** n float64 values, contents undefined. */
export type Float64Alloc = (n: number) => Float64Array;

/** Float64 arrays in the byte buffers `take` hands out (pooled buffers start 8-byte aligned). */
function float64From(take: (bytes: number) => Uint8Array): Float64Alloc {
  return (n) => {
    const b = take(n * 8);
    return b.byteOffset % 8 === 0 ? new Float64Array(b.buffer, b.byteOffset, n) : new Float64Array(n);
  };
}

export interface DerivedModuleSpec {
  name: string;
  path: string;
  matchKey: string;
  kohyaStem?: string;
  kind: ModuleKind;
  out: number;
  /** Columns of ΔW (conv: in_channels·kh·kw). */
  in: number;
  /** Conv kernel dims (e.g. [3, 3]): the factor A is then [R, in/(kh·kw), kh, kw]. */
  kernel?: number[];
  /** R, the number of columns of B (rows of A) that `factors` returns. */
  rank: number;
  family: ModuleFamily;
  /**
   * Computes the factors. `alloc`, when given, hands out scratch arrays that the reader gives back
   * to its pool after one use (contents undefined: every element must be written); families whose
   * factors are large (LoHa's face-splitting) build them there instead of in fresh memory.
   */
  factors: (alloc?: Float64Alloc) => Promise<ExactFactors>;
  /** The module's own extras carried through (e.g. "lora_B.bias"). */
  extras?: Record<string, TensorInfo>;
}

/** Names of the computed factor tensors in the derived file (never written: outputs name their own keys). */
const derivedKey = (name: string, f: "A" | "B") => `${name}::derived_${f}`;

/**
 * The derived file over `base` (passthrough and extras read from it as they are) and the modules
 * whose A/B tensors are the computed factors. Plain B·A modules of the same file are passed in
 * `plain` and keep reading their stored tensors.
 */
export function buildDerivedAdapterParts(
  base: SafetensorsFile,
  specs: readonly DerivedModuleSpec[],
  plain: readonly LoraModule[],
  passthrough: readonly TensorInfo[],
): { file: SafetensorsFile; modules: LoraModule[]; passthrough: TensorInfo[] } {
  const tensors: DerivedTensor[] = [];
  const carried = new Set<string>();
  const carry = (t: TensorInfo) => {
    if (carried.has(t.name)) return;
    carried.add(t.name);
    tensors.push({ name: t.name, from: t });
  };
  for (const m of plain) {
    for (const t of [m.A, m.B, ...(m.alphaTensor ? [m.alphaTensor] : []), ...Object.values(m.extras)]) carry(t);
  }
  for (const t of passthrough) carry(t);
  for (const s of specs) {
    for (const t of Object.values(s.extras ?? {})) carry(t);
    // One computation serves both factors: kept until both were read, then dropped. Computed in
    // the reader's pooled buffers, it serves only reads from that same reader (one module's pair
    // read together); any other read computes anew.
    let cached: Promise<ExactFactors> | null = null;
    let cachedFor: ((bytes: number) => Uint8Array) | undefined;
    let pending = 0;
    const take = async (f: "A" | "B", from?: (bytes: number) => Uint8Array): Promise<Uint8Array> => {
      if (!cached || cachedFor !== from) {
        cached = s.factors(from ? float64From(from) : undefined);
        cachedFor = from;
        pending = 2;
      }
      const got = await cached;
      if (--pending === 0) cached = null;
      const data = f === "A" ? got.A : got.B;
      const want = f === "A" ? s.rank * s.in : s.out * s.rank;
      if (data.length !== want) throw new Error(`internal: derived module ${s.name} gave ${data.length} values for ${f}, expected ${want}`);
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    };
    const kprod = (s.kernel ?? []).reduce((x, y) => x * y, 1);
    const aShape = s.kind === "conv" && s.kernel ? [s.rank, s.in / kprod, ...s.kernel] : [s.rank, s.in];
    const bShape = s.kind === "conv" && s.kernel ? [s.out, s.rank, ...s.kernel.map(() => 1)] : [s.out, s.rank];
    tensors.push({ name: derivedKey(s.name, "A"), dtype: "F64", shape: aShape, produce: (from) => take("A", from) });
    tensors.push({ name: derivedKey(s.name, "B"), dtype: "F64", shape: bShape, produce: (from) => take("B", from) });
  }
  const file = SafetensorsFile.derived(base.label, base, tensors, base.metadata);
  const same = (t: TensorInfo) => file.tensor(t.name);
  const modules: LoraModule[] = plain.map((m) => ({
    ...m,
    A: same(m.A),
    B: same(m.B),
    ...(m.alphaTensor ? { alphaTensor: same(m.alphaTensor) } : {}),
    extras: Object.fromEntries(Object.entries(m.extras).map(([k, t]) => [k, same(t)])),
  }));
  for (const s of specs) {
    if (s.rank < 1) throw new InvalidInputError(`${base.label}: module "${s.name}" has no live rank (nothing to read)`);
    modules.push({
      name: s.name,
      path: s.path,
      matchKey: s.matchKey,
      kind: s.kind,
      rank: s.rank,
      alpha: s.rank,
      scale: 1,
      rslora: false,
      out: s.out,
      in: s.in,
      A: file.tensor(derivedKey(s.name, "A")),
      B: file.tensor(derivedKey(s.name, "B")),
      extras: Object.fromEntries(Object.entries(s.extras ?? {}).map(([k, t]) => [k, same(t)])),
      family: s.family,
      ...(s.kohyaStem !== undefined ? { kohyaStem: s.kohyaStem } : {}),
    });
  }
  return { file, modules, passthrough: passthrough.map(same) };
}

/** Exit 3 for a write command on an adapter with modules whose ΔW needs the base weights. */
export function refuseBaseDependent(a: Adapter, what: string): void {
  const deps = a.baseDependent ?? [];
  if (deps.length === 0) return;
  const first = deps[0]!;
  throw new InvalidInputError(
    `${a.source}: ${deps.length} module(s) need the base model's weights for ΔW (${first.name}: ${first.reason}${deps.length > 1 ? ", …" : ""}); ${what} works from the file alone`,
    { hint: "`lora inspect` lists them; pass --base where the command takes it" },
  );
}
