// Element types of safetensors (tensor.rs `Dtype`), their bit sizes, and the conversions this
// tool computes with: exact F16/BF16 → F32 decoding, round-to-nearest-even F32/F64 → F16/BF16
// encoding, and decoders of the integer types. Dtypes without a decoder (F8_*, F6_*, F4, C64, …)
// are carried byte for byte. Node 20 has no Float16Array, so this file owns half precision.
import { RuntimeFailure } from "../errors.js";
import { UnsupportedDTypeError } from "./errors.js";

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
// Half precision

const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);
const F64_SCRATCH = new Float64Array(1);
const U32x2_SCRATCH = new Uint32Array(F64_SCRATCH.buffer);

const F16_TO_F32_BITS = /* built on first use */ { table: null as Uint32Array | null };

function f16Table(): Uint32Array {
  let t = F16_TO_F32_BITS.table;
  if (t) return t;
  t = new Uint32Array(65536);
  const f = new Float32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0x1f) {
      // inf / NaN: keep sign and payload (a quiet f16 NaN stays quiet)
      t[h] = ((h & 0x8000) << 16) | 0x7f800000 | (m << 13);
    } else {
      f[h] = f16BitsToNumber(h);
    }
  }
  F16_TO_F32_BITS.table = t;
  return t;
}

/** Exact value of an IEEE binary16 bit pattern (subnormals, ±0, ±inf, NaN). */
export function f16BitsToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (1024 + m) * 2 ** (e - 25);
}

/** Exact value of a bfloat16 bit pattern (the upper half of an f32). */
export function bf16BitsToNumber(b: number): number {
  U32_SCRATCH[0] = (b & 0xffff) << 16;
  return F32_SCRATCH[0];
}

/** f32 bit pattern → binary16 bit pattern, round to nearest even; overflow → ±inf; NaN stays NaN (quiet, top payload bits kept). */
export function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // binary16 biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    const full = mant | 0x800000;
    const shift = 14 - e; // 14..24
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && m & 1)) m++;
    return sign | m; // m may carry into the smallest normal, which is correct
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry to 0x7c00 = inf, which is correct
  return sign | h;
}

/** f32 bit pattern → bfloat16 bit pattern, round to nearest even (same bits as torch `.to(bfloat16)`); NaN stays NaN. */
export function f32BitsToBf16Bits(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && u & 0x7fffff) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * A double rounded once (no double rounding through f32) to a binary format with `expBits`
 * exponent bits and `mantBits` fraction bits, round to nearest even, overflow → inf, NaN → the
 * quiet NaN with the sign of the input.
 */
function roundDouble(x: number, expBits: number, mantBits: number): number {
  const signBit = 1 << (expBits + mantBits);
  const expMask = (1 << expBits) - 1;
  F64_SCRATCH[0] = x;
  const hi = U32x2_SCRATCH[1];
  const sign = hi >>> 31 ? signBit : 0;
  if (x !== x) return sign | (expMask << mantBits) | (1 << (mantBits - 1));
  const a = Math.abs(x);
  const bias = (1 << (expBits - 1)) - 1;
  const minNormalExp = 1 - bias;
  if (a === Infinity) return sign | (expMask << mantBits);
  if (a < 2 ** minNormalExp) {
    // subnormal: units of 2^(minNormalExp - mantBits); the scaling is exact in binary64
    const m = roundHalfEven(a * 2 ** (mantBits - minNormalExp));
    return sign | m; // m == 2^mantBits is the smallest normal, encoded by the same bits
  }
  const e = ((hi >>> 20) & 0x7ff) - 1023; // a ≥ 2^-126 is a normal double
  let m = roundHalfEven(a * 2 ** (mantBits - e)); // in [2^mantBits, 2^(mantBits+1)]
  let be = e + bias;
  if (m === 2 ** (mantBits + 1)) {
    m >>>= 1;
    be++;
  }
  if (be >= expMask) return sign | (expMask << mantBits);
  return sign | (be << mantBits) | (m - 2 ** mantBits);
}

/** Round a non-negative double below 2^52 to an integer, ties to even. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f; // exact
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Any number (f64 or f32 value) → binary16 bits, one rounding, RNE. Fast path for the normal
 * range, on the double's bits: keep the top 10 fraction bits, round on the 42 below (ties to
 * even; a carry into the exponent, or to 0x7c00 = inf, is the correct result). Subnormals,
 * overflow, inf and NaN go through roundDouble.
 */
export function numberToF16Bits(x: number): number {
  F64_SCRATCH[0] = x;
  const hi = U32x2_SCRATCH[1]!, lo = U32x2_SCRATCH[0]!;
  const e = ((hi >>> 20) & 0x7ff) - 1023;
  if (e >= -14 && e <= 15) {
    let h = ((e + 15) << 10) | ((hi >>> 10) & 0x3ff);
    const rem = hi & 0x3ff;
    if (rem > 0x200 || (rem === 0x200 && (lo !== 0 || (h & 1) !== 0))) h++;
    return ((hi >>> 16) & 0x8000) | h;
  }
  return roundDouble(x, 5, 10);
}

/** Any number (f64 or f32 value) → bfloat16 bits, one rounding, RNE. */
export function numberToBf16Bits(x: number): number {
  // Fast path for the normal range, as numberToF16Bits: top 7 fraction bits, RNE on the 45 below.
  F64_SCRATCH[0] = x;
  const hi = U32x2_SCRATCH[1]!, lo = U32x2_SCRATCH[0]!;
  const e = ((hi >>> 20) & 0x7ff) - 1023;
  if (e >= -126 && e <= 127) {
    let h = ((e + 127) << 7) | ((hi >>> 13) & 0x7f);
    const rem = hi & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (lo !== 0 || (h & 1) !== 0))) h++;
    return ((hi >>> 16) & 0x8000) | h;
  }
  return roundDouble(x, 8, 7);
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
  switch (dtype) {
    case "F64": {
      const v = view(Float64Array, bytes);
      return opts.mayAlias ? v : v.slice();
    }
    case "F16": {
      const src = view(Uint16Array, bytes);
      const out = new Float64Array(src.length);
      const f = new Float32Array(f16Table().buffer);
      for (let i = 0; i < src.length; i++) out[i] = f[src[i]];
      return out;
    }
    case "F32":
    case "BF16":
      return Float64Array.from(decodeToFloat32(dtype, bytes, { mayAlias: true }));
    default:
      return Float64Array.from(decodeGeneric(dtype, bytes));
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
