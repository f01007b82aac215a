// IEEE binary16 and bfloat16 ↔ float conversions on the bits, exact, for code that cannot rely
// on the compiler's _Float16 (the baseline builds, ops.cc's factorStats, the CUDA decode kernel).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace lora {

/** binary16 → float32, exact (subnormals, ±Inf and NaN included). */
LORA_HOST_DEVICE inline float halfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float f;
  if (e == 0) {
    f = float(m) * 5.9604644775390625e-8f;  // m · 2⁻²⁴, exact
    return sign ? -f : f;
  }
  uint32_t bits = sign | (e == 31 ? (0xffu << 23) : ((e + 112) << 23)) | (m << 13);
  std::memcpy(&f, &bits, 4);
  return f;
}

LORA_HOST_DEVICE inline float bf16ToFloat(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/** float32 → binary16 bits, round to nearest even; overflow to ±Inf, NaN kept NaN. */
inline uint16_t floatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // ≥ 65520 rounds to Inf
  if (ax < 0x38800000u) {                                  // below 2⁻¹⁴: subnormal half (or 0)
    if (ax < 0x33000000u) return uint16_t(sign);           // < 2⁻²⁵: rounds to 0
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    int shift = 126 - int(e);  // value = m·2^(e−150); half subnormal unit 2⁻²⁴ → shift by (126 − e)
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return uint16_t(sign | q);
  }
  uint32_t m = ax + 0xfff + ((ax >> 13) & 1);  // round the 13 dropped bits to nearest even
  return uint16_t(sign | ((m - 0x38000000u) >> 13));
}

/** float32 → bfloat16 bits, round to nearest even (NaN kept NaN). */
inline uint16_t floatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/**
 * float64 → the nearest value with `bits` significant bits and exponent range [emin, emax]
 * (binary16: 11, −14, 15; bfloat16: 8, −126, 127), ties to even, as a double; ±Inf past the
 * largest finite value. One rounding straight from the double (no double rounding via float).
 */
inline double roundToFormat(double x, int bits, int emin, int emax) {
  if (!(x == x) || x == 0 || x - x != 0) return x;  // NaN, ±0, ±Inf
  int e;
  std::frexp(x, &e);  // x = m·2^e with 0.5 ≤ |m| < 1, so the unit in the last place is 2^(e − bits)
  int ulpExp = (e - 1 < emin ? emin : e - 1) - (bits - 1);
  double q = std::nearbyint(std::ldexp(x, -ulpExp));  // default rounding mode: ties to even
  double y = std::ldexp(q, ulpExp);
  double maxFinite = std::ldexp(std::ldexp(1.0, bits) - 1, emax - bits + 1);
  if (std::fabs(y) > maxFinite) return x > 0 ? HUGE_VAL : -HUGE_VAL;
  return y;
}

}  // namespace lora
