// Element types of safetensors (tensor.rs `Dtype`), their bit sizes, and the conversions this
// tool computes with: exact F16/BF16 → F32 decoding, round-to-nearest-even F32/F64 → F16/BF16
// encoding, and decoders of the integer types. Dtypes without a decoder (F8_*, F6_*, F4, C64, …)
// are carried byte for byte. Node 20 has no Float16Array, so this file owns half precision.
import { RuntimeFailure, UnsupportedDTypeError } from "./errors.js";
import { bf16Table, f16Table, f32BitsToF16Bits, numberToBf16Bits, numberToF16Bits } from "./half.js";

export { bf16BitsToNumber, f16BitsToNumber, f32BitsToBf16Bits, f32BitsToF16Bits, numberToBf16Bits, numberToF16Bits } from "./half.js";

// safetensors data is little-endian; typed-array views use the host order. Checked once.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new RuntimeFailure("lora needs a little-endian host: safetensors data is little-endian and is read through typed arrays");
}

/**
 * Every dtype of the reference, in the reference enum order, which is increasing alignment
 * (the writer sorts by this order, descending, then by name, exactly as tensor.rs `prepare`).
 */
export const DTYPES = [
  "BOOL",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "F8_E4M3FNUZ",
  "F8_E5M2FNUZ",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "C64",
  "F64",
  "I64",
  "U64",
] as const;

export type DType = (typeof DTYPES)[number];

/** Bits per element (tensor.rs `Dtype::bitsize`). */
export const DTYPE_BITS: Readonly<Record<DType, number>> = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
});

const RANK: ReadonlyMap<string, number> = new Map(DTYPES.map((d, i) => [d, i]));

export function isDType(s: unknown): s is DType {
  return typeof s === "string" && RANK.has(s);
}

/** Position in the reference enum (= alignment order). */
export function dtypeRank(d: DType): number {
  return RANK.get(d)!;
}

export function dtypeBits(d: DType): number {
  return DTYPE_BITS[d];
}

/** Bytes per element, rounded up (1 for the sub-byte F4/F6 types). */
export function dtypeAlignment(d: DType): number {
  return Math.ceil(DTYPE_BITS[d] / 8);
}

/** Π shape (1 for a scalar `[]`); NaN when a dim is not a safe integer ≥ 0 or the product exceeds 2^53 − 1. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) return NaN;
    if (d !== 0 && n > Number.MAX_SAFE_INTEGER / d) return NaN;
    n *= d;
  }
  return n;
}

/** Bytes of a tensor of this dtype and shape; NaN on overflow or when the bits are not a whole number of bytes. */
export function tensorByteLength(dtype: DType, shape: readonly number[]): number {
  const n = elementCount(shape);
  const bits = n * DTYPE_BITS[dtype];
  if (!Number.isSafeInteger(bits) || bits % 8 !== 0) return NaN;
  return bits / 8;
}

// ---------------------------------------------------------------------------------------------
// Decoding whole tensors

/** Dtypes with a numeric decoder (to Float32Array / Float64Array). */
export const DECODABLE_DTYPES: readonly DType[] = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"];
/** Dtypes `encodeFloats` can write. */
export const FLOAT_DTYPES = ["F64", "F32", "F16", "BF16"] as const;
export type FloatDType = (typeof FLOAT_DTYPES)[number];

export function canDecode(d: DType): boolean {
  return DECODABLE_DTYPES.includes(d);
}

export function isFloatDType(d: DType): d is FloatDType {
  return d === "F64" || d === "F32" || d === "F16" || d === "BF16";
}

type ViewCtor<T> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number };

/** A typed view over `bytes`, or over an aligned copy when `bytes.byteOffset` is not a multiple of the element size. */
function view<T>(Ctor: ViewCtor<T>, bytes: Uint8Array): T {
  const size = Ctor.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`internal: ${bytes.byteLength} bytes is not a whole number of ${size}-byte elements`);
  }
  const n = bytes.byteLength / size;
  if (bytes.byteOffset % size === 0) return new Ctor(bytes.buffer, bytes.byteOffset, n);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Ctor(copy.buffer, 0, n);
}

function unsupported(dtype: DType): never {
  throw new UnsupportedDTypeError(dtype, DECODABLE_DTYPES);
}

export interface DecodeOptions {
  /**
   * Allow the result to share memory with `bytes` when no conversion is needed (F32 → Float32Array,
   * F64 → Float64Array) and `bytes` is aligned. Off by default: the result is always fresh.
   */
  mayAlias?: boolean;
  /** decodeToFloat64 only: write the values here (exactly their count) instead of a fresh array; it is returned. */
  into?: Float64Array;
}

/**
 * Index of the first NaN or ±Inf in little-endian float tensor bytes, or -1 (integer and bool
 * tensors never hold one). Reads only the exponent bits (all ones: Inf or NaN); nothing is decoded.
 * 32-bit words are tested a block at a time: for an exponent field E of a word's element,
 * (E + its lowest bit) carries into the bit above the field exactly when E is all ones, so OR-ing
 * those sums over a block shows whether the block holds one (then it is scanned element by element).
 */
export function firstNonFinite(dtype: DType, bytes: Uint8Array): number {
  switch (dtype) {
    case "F16":
      return firstAllOnes16(bytes, 0x7c00, 0x7c007c00, 0x04000400);
    case "BF16":
      return firstAllOnes16(bytes, 0x7f80, 0x7f807f80, 0x00800080);
    case "F32":
      return firstAllOnes32(view(Int32Array, bytes), 0, 1, 0x7f800000, 0x00800000);
    case "F64": // the high word of element k is word 2k + 1
      return firstAllOnes32(view(Int32Array, bytes), 1, 2, 0x7ff00000, 0x00100000);
    default:
      return -1;
  }
}

/** Whether every value of little-endian float tensor bytes is ±0: every bit but the sign clear (nothing decoded). */
export function allZeroFloats(dtype: FloatDType, bytes: Uint8Array): boolean {
  let acc = 0;
  if (dtype === "F16" || dtype === "BF16") {
    const u = view(Uint16Array, bytes);
    for (let i = 0; i < u.length; i++) acc |= u[i]! & 0x7fff;
  } else {
    const w = view(Int32Array, bytes);
    // F64: the low word whole, the high word but its sign bit
    if (dtype === "F64") for (let i = 0; i < w.length; i += 2) acc |= w[i]! | (w[i + 1]! & 0x7fffffff);
    else for (let i = 0; i < w.length; i++) acc |= w[i]! & 0x7fffffff;
  }
  return acc === 0;
}

/** Words tested together before a block is scanned element by element (firstNonFinite); a multiple of 4. */
const FINITE_BLOCK = 512;

/**
 * First 16-bit element whose `mask` bits are all ones, two elements to a 32-bit word: m2 is the
 * mask in both halves, c2 the mask's lowest bit in both halves (firstNonFinite).
 */
function firstAllOnes16(bytes: Uint8Array, mask: number, m2: number, c2: number): number {
  const u = view(Uint16Array, bytes);
  const n = u.length;
  let s = 0; // elements before the first 4-byte boundary
  if (u.byteOffset & 3 && n > 0) {
    if ((u[0]! & mask) === mask) return 0;
    s = 1;
  }
  const words = (n - s) >> 1;
  const w = new Int32Array(u.buffer, u.byteOffset + 2 * s, words);
  const blocks = words - (words % 4);
  for (let b = 0; b < blocks; b += FINITE_BLOCK) {
    const end = Math.min(blocks, b + FINITE_BLOCK);
    let acc = 0;
    for (let i = b; i < end; i += 4) acc |= ((w[i]! & m2) + c2) | ((w[i + 1]! & m2) + c2) | ((w[i + 2]! & m2) + c2) | ((w[i + 3]! & m2) + c2);
    if (acc & 0x80008000) for (let i = s + 2 * b; i < s + 2 * end; i++) if ((u[i]! & mask) === mask) return i;
  }
  for (let i = s + 2 * blocks; i < n; i++) if ((u[i]! & mask) === mask) return i;
  return -1;
}

/**
 * First element k (word from + k·step of w) whose `mask` bits are all ones (`low`: the mask's
 * lowest bit; the field ends at bit 30, so the carry lands in the sign bit), or -1.
 */
function firstAllOnes32(w: Int32Array, from: number, step: 1 | 2, mask: number, low: number): number {
  const count = w.length > from ? Math.floor((w.length - from - 1) / step) + 1 : 0;
  const groups = count - (count % 4);
  for (let g = 0; g < groups; g += FINITE_BLOCK) {
    const end = Math.min(groups, g + FINITE_BLOCK);
    let acc = 0;
    if (step === 1) {
      for (let i = from + g; i < from + end; i += 4)
        acc |= ((w[i]! & mask) + low) | ((w[i + 1]! & mask) + low) | ((w[i + 2]! & mask) + low) | ((w[i + 3]! & mask) + low);
    } else {
      for (let i = from + 2 * g; i < from + 2 * end; i += 8)
        acc |= ((w[i]! & mask) + low) | ((w[i + 2]! & mask) + low) | ((w[i + 4]! & mask) + low) | ((w[i + 6]! & mask) + low);
    }
    if (acc < 0) for (let k = g; k < end; k++) if ((w[from + k * step]! & mask) === mask) return k;
  }
  for (let k = groups; k < count; k++) if ((w[from + k * step]! & mask) === mask) return k;
  return -1;
}

/** Little-endian tensor bytes → Float32Array (F64 and 64-bit integers are rounded to f32). */
export function decodeToFloat32(dtype: DType, bytes: Uint8Array, opts: DecodeOptions = {}): Float32Array {
  switch (dtype) {
    case "F32": {
      const v = view(Float32Array, bytes);
      return opts.mayAlias ? v : v.slice();
    }
    case "F16": {
      const src = view(Uint16Array, bytes);
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      const t = f16Table();
      for (let i = 0; i < src.length; i++) bits[i] = t[src[i]];
      return out;
    }
    case "BF16": {
      const src = view(Uint16Array, bytes);
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
      return out;
    }
    case "F64":
      return Float32Array.from(view(Float64Array, bytes));
    default:
      return Float32Array.from(decodeGeneric(dtype, bytes));
  }
}

/** Little-endian tensor bytes → Float64Array (exact for every decodable dtype except 64-bit integers beyond 2^53). */
export function decodeToFloat64(dtype: DType, bytes: Uint8Array, opts: DecodeOptions = {}): Float64Array {
  const { into } = opts;
  /** Where n values go: `into` (checked to hold exactly n) or a fresh array. */
  const target = (n: number): Float64Array => {
    if (!into) return new Float64Array(n);
    if (into.length !== n) throw new RangeError(`internal: decoding ${n} values into ${into.length}`);
    return into;
  };
  const fill = (src: ArrayLike<number>): Float64Array => {
    if (!into) return Float64Array.from(src);
    const out = target(src.length);
    for (let i = 0; i < src.length; i++) out[i] = src[i]!;
    return out;
  };
  switch (dtype) {
    case "F64": {
      const v = view(Float64Array, bytes);
      if (into) return fill(v);
      return opts.mayAlias ? v : v.slice();
    }
    case "F16":
    case "BF16": {
      // every F16/BF16 value is an f32: looked up in the f32 table of the 65536 patterns, widened exactly
      const src = view(Uint16Array, bytes);
      const out = target(src.length);
      const t = new Float32Array((dtype === "F16" ? f16Table() : bf16Table()).buffer);
      for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
      return out;
    }
    case "F32":
      return fill(view(Float32Array, bytes));
    default:
      return fill(decodeGeneric(dtype, bytes));
  }
}

/** The integer and bool dtypes, as an array-like of numbers. */
function decodeGeneric(dtype: DType, bytes: Uint8Array): ArrayLike<number> {
  switch (dtype) {
    case "I32":
      return view(Int32Array, bytes);
    case "U32":
      return view(Uint32Array, bytes);
    case "I16":
      return view(Int16Array, bytes);
    case "U16":
      return view(Uint16Array, bytes);
    case "I8":
      return new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    case "U8":
      return bytes;
    case "BOOL": {
      const out = new Uint8Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) out[i] = bytes[i] !== 0 ? 1 : 0;
      return out;
    }
    case "I64":
    case "U64": {
      const src = dtype === "I64" ? view(BigInt64Array, bytes) : view(BigUint64Array, bytes);
      const out = new Float64Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
      return out;
    }
    default:
      return unsupported(dtype);
  }
}

/**
 * encodeFloats of float64 values, and what the rounding did to each: residual[i] = (the stored
 * value) − values[i], exact in float64 (the two are within a factor 2 of each other, or the stored
 * value is 0), ±Inf where the dtype overflows. F64 stores the values as they are: residual null.
 */
export function encodeFloatsWithResidual(dtype: DType, values: Float64Array): { bytes: Uint8Array; residual: Float64Array | null } {
  const n = values.length;
  switch (dtype) {
    case "F64":
      return { bytes: encodeFloats(dtype, values), residual: null };
    case "F32": {
      const out = Float32Array.from(values);
      const residual = new Float64Array(n);
      for (let i = 0; i < n; i++) residual[i] = out[i]! - values[i]!;
      return { bytes: new Uint8Array(out.buffer), residual };
    }
    case "F16":
    case "BF16": {
      const out = new Uint16Array(n);
      const residual = new Float64Array(n);
      const t = new Float32Array((dtype === "F16" ? f16Table() : bf16Table()).buffer);
      if (dtype === "F16") for (let i = 0; i < n; i++) out[i] = numberToF16Bits(values[i]!);
      else for (let i = 0; i < n; i++) out[i] = numberToBf16Bits(values[i]!);
      for (let i = 0; i < n; i++) residual[i] = t[out[i]!]! - values[i]!;
      return { bytes: new Uint8Array(out.buffer), residual };
    }
    default:
      throw new UnsupportedDTypeError(dtype, FLOAT_DTYPES, undefined, "encoded from numbers");
  }
}

/**
 * Numbers → little-endian bytes of a float dtype (F64, F32, F16 or BF16; F16/BF16 rounded to
 * nearest even, once, overflow → ±inf, NaN kept). The result is a fresh buffer.
 */
export function encodeFloats(dtype: DType, values: Float32Array | Float64Array): Uint8Array {
  const n = values.length;
  switch (dtype) {
    case "F64": {
      const out = values instanceof Float64Array ? values.slice() : Float64Array.from(values);
      return new Uint8Array(out.buffer);
    }
    case "F32": {
      const out = values instanceof Float32Array ? values.slice() : Float32Array.from(values);
      return new Uint8Array(out.buffer);
    }
    case "F16":
    case "BF16": {
      const out = new Uint16Array(n);
      if (values instanceof Float32Array) {
        const bits = view(Uint32Array, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
        if (dtype === "F16") for (let i = 0; i < n; i++) out[i] = f32BitsToF16Bits(bits[i]);
        else {
          // f32BitsToBf16Bits inlined on int32 bits (the sum wraps mod 2³² exactly as the
          // unsigned one would: ±max rounds to ±inf), 4× faster on large tensors
          const ibits = new Int32Array(bits.buffer, bits.byteOffset, n);
          for (let i = 0; i < n; i++) {
            const u = ibits[i]!;
            out[i] = (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) & 0xffff : ((u + 0x7fff + ((u >>> 16) & 1)) | 0) >>> 16;
          }
        }
      } else if (dtype === "F16") {
        for (let i = 0; i < n; i++) out[i] = numberToF16Bits(values[i]);
      } else {
        for (let i = 0; i < n; i++) out[i] = numberToBf16Bits(values[i]);
      }
      return new Uint8Array(out.buffer);
    }
    default:
      throw new UnsupportedDTypeError(dtype, FLOAT_DTYPES, undefined, "encoded from numbers");
  }
}
