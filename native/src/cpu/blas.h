// Run-time binding to BLAS/LAPACK. Nothing here links against a BLAS: the library is opened with
// dlopen at first use (libopenblas.so.0, else libblas.so.3 + liblapack.so.3) and every routine is
// called through a hand-declared Fortran prototype (LP64 ints, hidden character lengths last).
// Before OpenBLAS is opened, OPENBLAS_CORETYPE is chosen from the CPU's features unless the user
// set it (Debian's OpenBLAS 0.3.21 falls back to generic kernels on CPUs newer than its tables).
#pragma once
#include <cstddef>
#include <string>

namespace lora {

using fchar = const char;
using flen = size_t;  // gfortran hidden string length

/** The BLAS/LAPACK routines lora calls, of one precision: T = float (s…) or double (d…). */
template <typename T>
struct Routines {
  static constexpr const char* prefix = sizeof(T) == 4 ? "s" : "d";
  typedef void (*gemm_t)(fchar*, fchar*, const int*, const int*, const int*, const T*, const T*, const int*, const T*,
                         const int*, const T*, T*, const int*, flen, flen);
  typedef void (*geqrf_t)(const int*, const int*, T*, const int*, T*, T*, const int*, int*);
  typedef void (*orgqr_t)(const int*, const int*, const int*, T*, const int*, const T*, T*, const int*, int*);
  typedef void (*gesdd_t)(fchar*, const int*, const int*, T*, const int*, T*, T*, const int*, T*, const int*, T*,
                          const int*, int*, int*, flen);
  typedef void (*syevd_t)(fchar*, fchar*, const int*, T*, const int*, T*, T*, const int*, int*, const int*, int*, flen,
                          flen);
  gemm_t gemm = nullptr;
  geqrf_t geqrf = nullptr;
  orgqr_t orgqr = nullptr;
  gesdd_t gesdd = nullptr;
  syevd_t syevd = nullptr;
};

extern "C" {
typedef void (*dsyrk_t)(fchar*, fchar*, const int*, const int*, const double*, const double*, const int*,
                        const double*, double*, const int*, flen, flen);
typedef void (*set_threads_t)(int);
typedef int (*get_threads_t)(void);
typedef char* (*get_str_t)(void);
}

struct Blas {
  bool loaded = false;
  std::string error;       // why it could not be loaded (when !loaded)
  std::string library;     // path or soname actually opened
  std::string vendor;      // "OpenBLAS 0.3.21 …" config string, or "reference BLAS/LAPACK"
  std::string corename;    // OpenBLAS core actually in use, "" when unknown
  std::string coretype;    // value of OPENBLAS_CORETYPE at load time ("" when unset)
  std::string coretypeSource;  // "user" | "lora" | "" (unset)
  Routines<float> s;
  Routines<double> d;
  dsyrk_t dsyrk = nullptr;  // optional (factorStats falls back to dgemm)
  set_threads_t setThreads = nullptr;
  get_threads_t getThreads = nullptr;

  /** The routines of precision T. */
  template <typename T>
  const Routines<T>& of() const;
};

template <>
inline const Routines<float>& Blas::of<float>() const {
  return s;
}
template <>
inline const Routines<double>& Blas::of<double>() const {
  return d;
}

/** Opens the library once (thread-safe); later calls return the same object. */
const Blas& blas();
/** Thread count for BLAS and for the addon's own loops. n ≤ 0 → leave as is. */
void setThreads(int n);
int threads();

}  // namespace lora
