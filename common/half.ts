// Half precision (Node 20 has no Float16Array): exact F16/BF16 → number decoding and
// round-to-nearest-even F32/F64 → F16/BF16 encoding, on the bits, for dtype.ts's codecs.
const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);
const F64_SCRATCH = new Float64Array(1);
const U32x2_SCRATCH = new Uint32Array(F64_SCRATCH.buffer);

const F16_TO_F32_BITS = /* built on first use */ { table: null as Uint32Array | null };

export function f16Table(): Uint32Array {
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

const BF16_TO_F32_BITS = /* built on first use */ { table: null as Uint32Array | null };

/** The f32 bits of each bfloat16 pattern (its upper half). */
export function bf16Table(): Uint32Array {
  let t = BF16_TO_F32_BITS.table;
  if (t) return t;
  t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = (h << 16) >>> 0;
  BF16_TO_F32_BITS.table = t;
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
 * Any number (f64 or f32 value) → the bits of a binary format with `expBits` exponent and
 * `mantBits` fraction bits, one rounding, RNE. Fast path for the normal range, on the double's
 * bits: keep the top `mantBits` fraction bits, round on the 52 − mantBits below (ties to even; a
 * carry into the exponent, or to inf, is the correct result). Subnormals, overflow, inf and NaN go
 * through roundDouble.
 */
function numberToNarrowBits(x: number, expBits: number, mantBits: number): number {
  F64_SCRATCH[0] = x;
  const hi = U32x2_SCRATCH[1]!,
    lo = U32x2_SCRATCH[0]!;
  const bias = (1 << (expBits - 1)) - 1;
  const e = ((hi >>> 20) & 0x7ff) - 1023;
  if (e >= 1 - bias && e <= bias) {
    const shift = 20 - mantBits; // the fraction bits of `hi` below the kept ones
    let h = ((e + bias) << mantBits) | ((hi >>> shift) & ((1 << mantBits) - 1));
    const rem = hi & ((1 << shift) - 1),
      half = 1 << (shift - 1);
    if (rem > half || (rem === half && (lo !== 0 || (h & 1) !== 0))) h++;
    return ((hi >>> 16) & 0x8000) | h;
  }
  return roundDouble(x, expBits, mantBits);
}

/** Any number (f64 or f32 value) → binary16 bits, one rounding, RNE. */
export function numberToF16Bits(x: number): number {
  return numberToNarrowBits(x, 5, 10);
}

/** Any number (f64 or f32 value) → bfloat16 bits, one rounding, RNE. */
export function numberToBf16Bits(x: number): number {
  return numberToNarrowBits(x, 8, 7);
}
