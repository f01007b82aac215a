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

extern "C" {
typedef void (*sgemm_t)(fchar*, fchar*, const int*, const int*, const int*, const float*, const float*, const int*,
                        const float*, const int*, const float*, float*, const int*, flen, flen);
typedef void (*dgemm_t)(fchar*, fchar*, const int*, const int*, const int*, const double*, const double*,
                        const int*, const double*, const int*, const double*, double*, const int*, flen, flen);
typedef void (*sgeqrf_t)(const int*, const int*, float*, const int*, float*, float*, const int*, int*);
typedef void (*dgeqrf_t)(const int*, const int*, double*, const int*, double*, double*, const int*, int*);
typedef void (*sorgqr_t)(const int*, const int*, const int*, float*, const int*, const float*, float*, const int*,
                         int*);
typedef void (*dorgqr_t)(const int*, const int*, const int*, double*, const int*, const double*, double*,
                         const int*, int*);
typedef void (*sgesdd_t)(fchar*, const int*, const int*, float*, const int*, float*, float*, const int*, float*,
                         const int*, float*, const int*, int*, int*, flen);
typedef void (*dgesdd_t)(fchar*, const int*, const int*, double*, const int*, double*, double*, const int*,
                         double*, const int*, double*, const int*, int*, int*, flen);
typedef void (*ssyevd_t)(fchar*, fchar*, const int*, float*, const int*, float*, float*, const int*, int*,
                         const int*, int*, flen, flen);
typedef void (*dsyevd_t)(fchar*, fchar*, const int*, double*, const int*, double*, double*, const int*, int*,
                         const int*, int*, flen, flen);
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
  sgemm_t sgemm = nullptr;
  dgemm_t dgemm = nullptr;
  sgeqrf_t sgeqrf = nullptr;
  dgeqrf_t dgeqrf = nullptr;
  sorgqr_t sorgqr = nullptr;
  dorgqr_t dorgqr = nullptr;
  sgesdd_t sgesdd = nullptr;
  dgesdd_t dgesdd = nullptr;
  ssyevd_t ssyevd = nullptr;
  dsyevd_t dsyevd = nullptr;
  dsyrk_t dsyrk = nullptr;  // optional (factorStats falls back to dgemm)
  set_threads_t setThreads = nullptr;
  get_threads_t getThreads = nullptr;
};

/** Opens the library once (thread-safe); later calls return the same object. */
const Blas& blas();
/** Thread count for BLAS and for the addon's own loops. n ≤ 0 → leave as is. */
void setThreads(int n);
int threads();

}  // namespace lora
