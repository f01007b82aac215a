import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DTYPES,
  DTYPE_BITS,
  bf16BitsToNumber,
  decodeToFloat32,
  decodeToFloat64,
  dtypeAlignment,
  dtypeRank,
  encodeFloats,
  encodeFloatsWithResidual,
  f16BitsToNumber,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  allZeroFloats,
  firstNonFinite,
  numberToBf16Bits,
  numberToF16Bits,
  tensorByteLength,
} from "./dtype.js";
import { UnsupportedDTypeError } from "./errors.js";

const f32Bits = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0];
const u16 = (a: Uint8Array): number[] => [...new Uint16Array(a.buffer, a.byteOffset, a.byteLength / 2)];

test("dtype table: every reference dtype, bit sizes, alignment order", () => {
  assert.equal(
    DTYPES.join(" "),
    "BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64",
    "tensor.rs Dtype, in its order",
  );
  // Independent of the table: a dtype's name carries its width (BOOL is one byte; C64 is 64 bits in all)
  const fromName = (d: string): number => (d === "BOOL" ? 8 : Number(/\d+/.exec(d)![0]));
  for (const d of DTYPES) assert.equal(DTYPE_BITS[d], fromName(d), d);
  // the enum order is increasing alignment: element sizes in bytes never decrease along it
  for (let i = 1; i < DTYPES.length; i++) assert.ok(dtypeAlignment(DTYPES[i]) >= dtypeAlignment(DTYPES[i - 1]));
  assert.ok(dtypeRank("U64") > dtypeRank("F64") && dtypeRank("F64") > dtypeRank("C64") && dtypeRank("F32") > dtypeRank("BF16"));
  assert.equal(tensorByteLength("F4", [3]), NaN);
  assert.equal(tensorByteLength("F4", [4]), 2);
  assert.equal(tensorByteLength("F32", []), 4);
  assert.equal(tensorByteLength("F32", [0, 7]), 0);
  assert.equal(tensorByteLength("U8", [2 ** 32, 2 ** 32]), NaN);
});

test("F16: all 65536 bit patterns decode exactly and re-encode to themselves", () => {
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const bytes = new Uint8Array(all.buffer);
  const f32 = decodeToFloat32("F16", bytes);
  const f64 = decodeToFloat64("F16", bytes);
  const back32 = u16(encodeFloats("F16", f32));
  const back64 = u16(encodeFloats("F16", f64));
  for (let h = 0; h < 65536; h++) {
    const v = f16BitsToNumber(h);
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) {
      assert.ok(Number.isNaN(f32[h]) && Number.isNaN(f64[h]), `NaN ${h.toString(16)}`);
      assert.equal(back32[h] & 0x7c00, 0x7c00);
      assert.notEqual(back32[h] & 0x3ff, 0);
      assert.equal(back32[h], h | 0x200, "f32 path keeps sign and payload, quiet bit set");
      assert.ok((back64[h] & 0x7c00) === 0x7c00 && (back64[h] & 0x3ff) !== 0);
      continue;
    }
    assert.ok(Object.is(f32[h], v) && Object.is(f64[h], v), `value of ${h.toString(16)}`);
    assert.equal(back32[h], h, `f32 round trip of ${h.toString(16)}`);
    assert.equal(back64[h], h, `f64 round trip of ${h.toString(16)}`);
    assert.equal(numberToF16Bits(v), h);
  }
});

test("BF16: all 65536 bit patterns decode exactly and re-encode to themselves", () => {
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const bytes = new Uint8Array(all.buffer);
  const f32 = decodeToFloat32("BF16", bytes);
  const f64 = decodeToFloat64("BF16", bytes);
  const back32 = u16(encodeFloats("BF16", f32));
  const back64 = u16(encodeFloats("BF16", f64));
  for (let b = 0; b < 65536; b++) {
    const v = bf16BitsToNumber(b);
    if ((b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0) {
      assert.ok(Number.isNaN(f32[b]) && Number.isNaN(f64[b]));
      assert.equal(back32[b], b | 0x40);
      assert.ok((back64[b] & 0x7f80) === 0x7f80 && (back64[b] & 0x7f) !== 0);
      continue;
    }
    assert.equal(f32Bits(f32[b]), (b << 16) >>> 0, `bits of ${b.toString(16)}`);
    assert.ok(Object.is(f64[b], v));
    assert.equal(back32[b], b);
    assert.equal(back64[b], b);
  }
});

test("F16 encoding rounds to nearest, ties to even (hand-computed cases)", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 (even) and 0x3c01 → even
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02 (even)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
    [1 + 2 ** -11 - 2 ** -20, 0x3c00], // just below
    [2048 + 1, 0x6800], // 2049 halfway between 2048 and 2050 → 2048 (even)
    [2048 + 3, 0x6802], // 2051 → 2052
    [65504, 0x7bff], // largest finite
    [65519, 0x7bff],
    [65520, 0x7c00], // halfway to 65536 → rounds to even = inf
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [0, 0x0000],
    [-0, 0x8000],
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // halfway between 0 and 2^-24 → 0 (even)
    [2 ** -25 + 2 ** -40, 0x0001],
    [3 * 2 ** -25, 0x0002], // 1.5 units → 2 (even)
    [5 * 2 ** -25, 0x0002], // 2.5 units → 2 (even)
    [2 ** -14 - 2 ** -25, 0x0400], // largest subnormal + half unit → carries into the smallest normal
    [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -14, 0x0400], // smallest normal
    [-(2 ** -24), 0x8001],
    [1e-10, 0x0000],
    [-1e-10, 0x8000],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
  ];
  for (const [x, bits] of cases) {
    assert.equal(numberToF16Bits(x), bits, `f64 ${x}`);
    if (Math.fround(x) === x) assert.equal(f32BitsToF16Bits(f32Bits(x)), bits, `f32 ${x}`);
  }
  assert.equal(numberToF16Bits(NaN) & 0x7e00, 0x7e00);
  // one rounding from f64: 1 + 2^-11 + 2^-40 rounds up, while via f32 it would first become the tie 1 + 2^-11 and then 1.0
  assert.equal(numberToF16Bits(1 + 2 ** -11 + 2 ** -40), 0x3c01);
  assert.equal(u16(encodeFloats("F16", Float64Array.of(1 + 2 ** -11 + 2 ** -40)))[0], 0x3c01);
  assert.equal(u16(encodeFloats("F16", Float32Array.of(1 + 2 ** -11 + 2 ** -40)))[0], 0x3c00);
});

test("BF16 encoding rounds to nearest, ties to even (hand-computed cases)", () => {
  const cases: [number, number][] = [
    [1, 0x3f80],
    [1 + 2 ** -8, 0x3f80], // tie → even
    [1 + 3 * 2 ** -8, 0x3f82], // tie → even (up)
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [3.3895313892515355e38, 0x7f7f], // largest finite bf16
    [3.4028234663852886e38, 0x7f80], // f32 max rounds to inf
    [-3.4028234663852886e38, 0xff80],
    [1e39, 0x7f80],
    [2 ** -133, 0x0001], // smallest subnormal
    [2 ** -134, 0x0000], // tie → 0
    [3 * 2 ** -134, 0x0002],
    [2 ** -126 - 2 ** -134, 0x0080], // carries into the smallest normal
    [-0, 0x8000],
    [Math.PI, 0x4049],
  ];
  for (const [x, bits] of cases) {
    assert.equal(numberToBf16Bits(x), bits, `f64 ${x}`);
    if (Math.fround(x) === x) assert.equal(f32BitsToBf16Bits(f32Bits(x)), bits, `f32 ${x}`);
  }
  assert.equal(numberToBf16Bits(NaN) & 0x7fc0, 0x7fc0);
  assert.equal(f32BitsToBf16Bits(0x7f800001), 0x7fc0, "a NaN whose payload is only in the low bits stays NaN");
  assert.equal(f32BitsToBf16Bits(0xffc00000), 0xffc0);
});

test("F16/BF16: the f32 bit path and the f64 path agree on random f32 values", () => {
  let s = 12345;
  const next = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0);
  const u = new Uint32Array(200_000);
  for (let i = 0; i < u.length; i++) u[i] = next();
  const f = new Float32Array(u.buffer);
  const d = Float64Array.from(f);
  assert.deepEqual(
    u16(encodeFloats("F16", f)).filter((_, i) => !Number.isNaN(f[i])),
    u16(encodeFloats("F16", d)).filter((_, i) => !Number.isNaN(f[i])),
  );
  assert.deepEqual(
    u16(encodeFloats("BF16", f)).filter((_, i) => !Number.isNaN(f[i])),
    u16(encodeFloats("BF16", d)).filter((_, i) => !Number.isNaN(f[i])),
  );
});

test("integer and bool decoders, 64-bit via BigInt", () => {
  const i64 = BigInt64Array.of(-3n, 0n, 2n ** 53n + 1n, -(2n ** 62n));
  assert.deepEqual([...decodeToFloat64("I64", new Uint8Array(i64.buffer))], [-3, 0, 2 ** 53, -(2 ** 62)]);
  const u64 = BigUint64Array.of(7n, 2n ** 64n - 1n);
  assert.deepEqual([...decodeToFloat64("U64", new Uint8Array(u64.buffer))], [7, 2 ** 64]);
  assert.deepEqual([...decodeToFloat32("I32", new Uint8Array(Int32Array.of(-5, 7, 2 ** 31 - 1).buffer))], [-5, 7, 2 ** 31]);
  assert.deepEqual([...decodeToFloat64("I32", new Uint8Array(Int32Array.of(-5, 7, 2 ** 31 - 1).buffer))], [-5, 7, 2 ** 31 - 1]);
  assert.deepEqual([...decodeToFloat64("I16", new Uint8Array(Int16Array.of(-32768, 32767).buffer))], [-32768, 32767]);
  assert.deepEqual([...decodeToFloat64("I8", Uint8Array.of(0xff, 0x80, 1))], [-1, -128, 1]);
  assert.deepEqual([...decodeToFloat64("U8", Uint8Array.of(0xff, 0x80, 1))], [255, 128, 1]);
  assert.deepEqual([...decodeToFloat32("BOOL", Uint8Array.of(0, 1, 0, 2))], [0, 1, 0, 1]);
  assert.deepEqual([...decodeToFloat64("U16", new Uint8Array(Uint16Array.of(65535).buffer))], [65535]);
  assert.deepEqual([...decodeToFloat64("U32", new Uint8Array(Uint32Array.of(2 ** 32 - 1).buffer))], [2 ** 32 - 1]);
});

test("decoders copy unaligned input and never alias it unless asked", () => {
  const values = Float64Array.of(1.5, -2.25, 1e300);
  const buf = new Uint8Array(values.byteLength + 3);
  buf.set(new Uint8Array(values.buffer), 3);
  const unaligned = buf.subarray(3);
  assert.deepEqual([...decodeToFloat64("F64", unaligned)], [...values]);
  const f32 = Float32Array.of(0.5, 3);
  const bytes = new Uint8Array(f32.buffer);
  const fresh = decodeToFloat32("F32", bytes);
  fresh[0] = 9;
  assert.equal(f32[0], 0.5);
  const alias = decodeToFloat32("F32", bytes, { mayAlias: true });
  alias[0] = 9;
  assert.equal(f32[0], 9);
  const h = new Uint8Array(7);
  h.set(new Uint8Array(Uint16Array.of(0x3c00, 0xc000, 0x7c00).buffer), 1);
  assert.deepEqual([...decodeToFloat32("F16", h.subarray(1))], [1, -2, Infinity]);
  assert.deepEqual([...decodeToFloat32("BF16", h.subarray(1))], [bf16BitsToNumber(0x3c00), bf16BitsToNumber(0xc000), bf16BitsToNumber(0x7c00)]);
});

test("encodeFloats F32/F64 are exact; unsupported dtypes are refused", () => {
  const d = Float64Array.of(0.1, -3, 1e-300);
  assert.deepEqual([...new Float64Array(encodeFloats("F64", d).buffer)], [...d]);
  assert.deepEqual([...new Float32Array(encodeFloats("F32", d).buffer)], [...Float32Array.from(d)]);
  assert.throws(() => encodeFloats("I8", d), UnsupportedDTypeError);
  assert.throws(() => decodeToFloat32("F8_E4M3", new Uint8Array(4)), UnsupportedDTypeError);
  assert.throws(
    () => decodeToFloat32("C64", new Uint8Array(8)),
    (e: unknown) => e instanceof UnsupportedDTypeError && e.exitCode === 3,
  );
});

test("numberToF16Bits / numberToBf16Bits fast paths agree with the f32-bit converters on random float32 values", async () => {
  const d = await import("./dtype.js");
  const f = new Float32Array(1),
    u = new Uint32Array(f.buffer);
  let seed = Date.now() >>> 0 || 1;
  console.log(`dtype fast-path seed=${seed}`);
  for (let i = 0; i < 200_000; i++) {
    seed ^= seed << 13;
    seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    seed >>>= 0; // xorshift32
    u[0] = seed;
    const x = f[0]!;
    if (Number.isNaN(x)) continue;
    assert.equal(d.numberToF16Bits(x), d.f32BitsToF16Bits(u[0]!), `F16 of ${x}`);
    assert.equal(d.numberToBf16Bits(x), d.f32BitsToBf16Bits(u[0]!), `BF16 of ${x}`);
  }
  // Exact ties between two halves round to even; a hair above rounds up (the bits below f32's).
  assert.equal(d.numberToF16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(d.numberToF16Bits(1 + 2 ** -11 + 2 ** -40), 0x3c01);
  assert.equal(d.numberToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(d.numberToBf16Bits(1 + 2 ** -8 + 2 ** -45), 0x3f81);
  assert.equal(d.numberToF16Bits(65520), 0x7c00);
  assert.equal(d.numberToF16Bits(65519.99), 0x7bff);
});

test("firstNonFinite: every F16/BF16 pattern as decoding says; random F32/F64 with one NaN/±Inf planted", () => {
  for (const dtype of ["F16", "BF16"] as const) {
    for (let h = 0; h < 65536; h++) {
      const bytes = new Uint8Array(Uint16Array.of(0, h).buffer);
      const want = Number.isFinite(decodeToFloat64(dtype, bytes)[1]!) ? -1 : 1;
      if (firstNonFinite(dtype, bytes) !== want) assert.fail(`${dtype} pattern ${h.toString(16)}`);
    }
  }
  let seed = Date.now() >>> 0 || 1;
  console.log(`firstNonFinite seed=${seed}`);
  const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(rnd() * 300);
    const at = Math.floor(rnd() * n);
    const bad = [Number.NaN, Infinity, -Infinity][trial % 3]!;
    // finite values of every magnitude, the largest finite ones included
    const f32 = Float32Array.from({ length: n }, () => (rnd() - 0.5) * 2 ** Math.floor(rnd() * 250 - 125));
    const f64 = Float64Array.from({ length: n }, () => (rnd() - 0.5) * 2 ** Math.floor(rnd() * 2040 - 1020));
    f32[(at + 1) % n] = 3.4028234663852886e38;
    f64[(at + 1) % n] = Number.MAX_VALUE;
    assert.equal(firstNonFinite("F32", new Uint8Array(f32.buffer)), -1);
    assert.equal(firstNonFinite("F64", new Uint8Array(f64.buffer)), -1);
    f32[at] = bad;
    f64[at] = bad;
    assert.equal(firstNonFinite("F32", new Uint8Array(f32.buffer)), at, `F32 trial ${trial}`);
    assert.equal(firstNonFinite("F64", new Uint8Array(f64.buffer)), at, `F64 trial ${trial}`);
  }
  assert.equal(firstNonFinite("I32", new Uint8Array(Int32Array.of(-1, 0x7fffffff).buffer)), -1);
});

test("firstNonFinite: long tensors at every byte offset, non-finite values planted in and across blocks, against decoding", () => {
  let seed = (Date.now() ^ 0x5bd1e995) >>> 0 || 1;
  console.log(`firstNonFinite blocks seed=${seed}`);
  const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const sizes = { F16: 2, BF16: 2, F32: 4, F64: 8 } as const;
  const exponent = { F16: [0x7c00, 10], BF16: [0x7f80, 7], F32: [0x7f800000, 23], F64: [0x7ff00000, 20] } as const;
  for (const dtype of ["F16", "BF16", "F32", "F64"] as const) {
    const size = sizes[dtype];
    for (let trial = 0; trial < 60; trial++) {
      const n = 1 + Math.floor(rnd() * 5000);
      const offset = trial % 8; // within the buffer: aligned, 2-byte, odd
      const buf = new Uint8Array(offset + n * size);
      for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(rnd() * 256);
      const bytes = buf.subarray(offset);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      // the word holding the exponent: the element itself, or F64's high word
      const at = (i: number) => (size === 8 ? 8 * i + 4 : size * i);
      const get = (i: number) => (size === 2 ? dv.getUint16(at(i), true) : dv.getUint32(at(i), true));
      const set = (i: number, v: number) => (size === 2 ? dv.setUint16(at(i), v, true) : dv.setUint32(at(i), v >>> 0, true));
      const [mask, shift] = exponent[dtype];
      // random patterns hit an all-ones exponent now and then; clear one exponent bit of those
      for (let i = 0; i < n; i++) if ((get(i) & mask) === mask) set(i, get(i) & ~(1 << shift));
      const plants = Math.floor(rnd() * 3);
      for (let k = 0; k < plants; k++) {
        const i = Math.floor(rnd() * n);
        set(i, get(i) | mask);
      }
      const values = decodeToFloat64(dtype, bytes);
      const want = values.findIndex((v) => !Number.isFinite(v));
      assert.equal(firstNonFinite(dtype, bytes), want, `${dtype} n=${n} offset=${offset} plants=${plants}`);
    }
  }
});

test("firstNonFinite: a non-finite value first, last or alone, for lengths around the word, group and block sizes", () => {
  const ones = { F16: [2, 0x7c00], BF16: [2, 0x7f80], F32: [4, 0x7f800000], F64: [8, 0x7ff00000] } as const;
  const lengths = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4097];
  for (const dtype of ["F16", "BF16", "F32", "F64"] as const) {
    const [size, mask] = ones[dtype];
    for (const n of lengths) {
      for (const offset of [0, 2, 4, 6]) {
        for (const where of [0, n - 1, n >> 1]) {
          const bytes = new Uint8Array(offset + n * size).subarray(offset); // zeros: finite
          const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
          if (size === 2) dv.setUint16(2 * where, mask, true);
          else dv.setUint32(size * where + (size === 8 ? 4 : 0), mask, true);
          assert.equal(firstNonFinite(dtype, bytes), where, `${dtype} n=${n} offset=${offset} at ${where}`);
          assert.equal(firstNonFinite(dtype, new Uint8Array(offset + n * size).subarray(offset)), -1);
        }
      }
    }
  }
});

test("allZeroFloats: ±0 everywhere is zero; the smallest subnormal or a NaN anywhere is not (every float dtype, odd offsets)", () => {
  let seed = (Date.now() ^ 0x27d4eb2f) >>> 0 || 1;
  console.log(`allZeroFloats seed=${seed}`);
  const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const sign = { F16: [2, 0x8000], BF16: [2, 0x8000], F32: [4, 0x80000000], F64: [8, 0x80000000] } as const;
  for (const dtype of ["F16", "BF16", "F32", "F64"] as const) {
    const [size, bit] = sign[dtype];
    for (let trial = 0; trial < 40; trial++) {
      const n = 1 + Math.floor(rnd() * 700);
      const offset = trial % 3 === 0 ? 1 : 0;
      const bytes = new Uint8Array(offset + n * size).subarray(offset);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const hi = (i: number) => size * i + (size === 8 ? 4 : 0); // the word (or half) holding the sign
      for (let i = 0; i < n; i++) if (rnd() < 0.5) size === 2 ? dv.setUint16(hi(i), bit, true) : dv.setUint32(hi(i), bit >>> 0, true);
      assert.equal(allZeroFloats(dtype, bytes), true, `${dtype} ±0 n=${n}`);
      assert.ok(decodeToFloat64(dtype, bytes).every((v) => v === 0));
      const i = Math.floor(rnd() * n);
      bytes[size * i] |= 1; // the smallest subnormal magnitude (the lowest mantissa bit)
      assert.equal(allZeroFloats(dtype, bytes), false, `${dtype} subnormal at ${i} of ${n}`);
      assert.ok(decodeToFloat64(dtype, bytes).some((v) => v !== 0));
    }
  }
});

test("encodeFloatsWithResidual: the bytes of encodeFloats, and the residual = stored value − value exactly (subnormals, zeros, overflow)", () => {
  const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const values = new Float64Array(20000);
  for (let i = 0; i < values.length; i++) values[i] = (next() - 0.5) * 2 ** Math.floor(next() * 300 - 170); // 2^-170 … 2^130
  values.set([0, -0, 65504, 65520, -70000, 2 ** -25, 3 * 2 ** -26, 1e-300, 3.4e38, 3.5e38]);
  for (const dtype of ["F16", "BF16", "F32", "F64"] as const) {
    const { bytes, residual } = encodeFloatsWithResidual(dtype, values);
    assert.deepEqual(Buffer.from(bytes), Buffer.from(encodeFloats(dtype, values)), `${dtype} bytes (seed ${seed})`);
    const stored = decodeToFloat64(dtype, bytes);
    if (dtype === "F64") {
      assert.equal(residual, null);
      continue;
    }
    for (let i = 0; i < values.length; i++) {
      const want = stored[i]! - values[i]!;
      assert.ok(Object.is(residual![i], want) || residual![i] === want, `${dtype} [${i}] ${values[i]}: ${residual![i]} vs ${want} (seed ${seed})`);
      // exact: the value plus its residual is the stored value
      if (Number.isFinite(stored[i]!)) assert.ok(values[i]! + residual![i]! === stored[i], `${dtype} [${i}] ${values[i]} not exact`);
    }
  }
});
