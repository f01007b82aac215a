// Reading a LyCORIS module's stored tensors as float64 matrices, finite-checked (a NaN/Inf is
// exit 3 naming the tensor, as for plain factors: formats/adapter/factors.ts), and the shape
// checks that name the tensor when a file is malformed.
import { InvalidInputError } from "../../../common/errors.js";
import type { SafetensorsFile, TensorInfo } from "../../safetensors/index.js";
import type { Float64Alloc } from "../derived.js";

const FLOATS = new Set(["F64", "F32", "F16", "BF16"]);

export interface ReadCtx {
  file: SafetensorsFile;
  label: string;
}

/** A stored tensor as float64, finite-checked; in an array from `alloc` (pooled scratch) when given. */
export async function read64(c: ReadCtx, t: TensorInfo, alloc?: Float64Alloc): Promise<Float64Array> {
  const x = await c.file.readFloat64(t, alloc?.(t.shape.reduce((p, d) => p * d, 1)));
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v - v !== 0)
      throw new InvalidInputError(
        `${c.label}: tensor ${t.name} holds ${Number.isNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"} at element ${i}; factors must be finite`,
      );
  }
  return x;
}

/** Refuse a non-float or wrongly-ranked tensor, naming it. */
export function checkTensor(label: string, t: TensorInfo, ndims: number[], what: string): void {
  if (!FLOATS.has(t.dtype)) throw new InvalidInputError(`${label}: tensor ${t.name} has dtype ${t.dtype}; ${what} must be F64, F32, F16 or BF16`);
  if (!ndims.includes(t.shape.length))
    throw new InvalidInputError(`${label}: tensor ${t.name} has shape [${t.shape}]; ${what} must have ${ndims.join(" or ")} dimensions`);
  if (t.shape.some((d) => d === 0)) throw new InvalidInputError(`${label}: tensor ${t.name} has an empty shape [${t.shape}]`);
}

export function mismatch(label: string, stem: string, detail: string): InvalidInputError {
  return new InvalidInputError(`${label}: LyCORIS module "${stem}": ${detail}`);
}

/** rows × (product of the other dims). */
export function flat2(t: TensorInfo): [number, number] {
  return [t.shape[0]!, t.shape.slice(1).reduce((x, y) => x * y, 1)];
}

/** The most common dtype among a module's stored tensors (alpha excluded). */
export function storedDtype(ts: TensorInfo[]): TensorInfo["dtype"] {
  const n = new Map<string, number>();
  for (const t of ts) n.set(t.dtype, (n.get(t.dtype) ?? 0) + t.shape.reduce((x, y) => x * y, 1));
  return [...n].sort((a, b) => b[1] - a[1])[0]![0] as TensorInfo["dtype"];
}
