// Longer than 400 lines: the kernels and their host drivers share one anonymous namespace and one translation unit of the emulation build.
// Own CUDA kernels on cudart only (no cuBLAS/cuSOLVER on these machines) and the host code that
// drives them. Compiled by nvcc into lora_cuda.node (binding.gyp) and into the standalone harness
// (native/cuda-harness); also compiled as plain C++ against native/cuda-harness/emu/cuda_emu.h
// (LORA_CUDA_EMU), which runs every block's threads as fibers on the CPU, so that the kernel logic
// is tested where no GPU exists.
//
// Rules that keep the two builds equivalent and the results deterministic:
//  - kernels are launched only through LORA_LAUNCH; shared memory is static (`__shared__ T x[N]`);
//  - no warp intrinsics, no atomics: reductions go through shared memory with __syncthreads;
//  - every __syncthreads is reached by all threads of a block (early returns are block-uniform);
//  - sums run in a fixed order (k-means centroids: point order, counting-sorted on the host).
//
// Algorithms: tiled GEMM (64×64 tiles, 4×4 per thread); Householder QR one column at a time
// (dlarfg/dlarf semantics, dot products in double); one-sided Jacobi (Hestenes) SVD with a
// round-robin ordering, one block per column pair, preceded by a QR when m ≥ 2n; eigSym as Jacobi
// on A + ‖A‖_F·I with Rayleigh-quotient eigenvalues; Lloyd k-means with GEMM distances.
#include "device.h"
#include "../common/gram_schmidt.h"
#include "../common/kmeans_assign.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>


namespace lora {
namespace cuda {

namespace {

constexpr int GEMM_THREADS = 256;  // gemmK's 16×16 thread layout

template <typename T>
struct Eps;
template <>
struct Eps<float> {
  static constexpr double v = 5.9604644775390625e-08;  // 2^-24
};
template <>
struct Eps<double> {
  static constexpr double v = 1.1102230246251565e-16;  // 2^-53
};

// ------------------------------------------------------------------------------------------------
// Device helpers

// Sum over the block (blockDim.x == TPB); every thread gets the result.
__device__ inline double blockSum(double v, double* sh) {
  int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = TPB / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

__device__ inline void blockSum3(double& a, double& b, double& c, double* sh) {
  int t = threadIdx.x;
  sh[t] = a;
  sh[TPB + t] = b;
  sh[2 * TPB + t] = c;
  __syncthreads();
  for (int s = TPB / 2; s > 0; s >>= 1) {
    if (t < s) {
      sh[t] += sh[t + s];
      sh[TPB + t] += sh[TPB + t + s];
      sh[2 * TPB + t] += sh[2 * TPB + t + s];
    }
    __syncthreads();
  }
  a = sh[0];
  b = sh[TPB];
  c = sh[2 * TPB];
  __syncthreads();
}

// ------------------------------------------------------------------------------------------------
// Kernels

// dst (cols×rows, row-major) = transpose of src (rows×cols, row-major). Block (32, 8).
template <typename T>
__global__ void transposeK(const T* __restrict__ src, int rows, int cols, T* __restrict__ dst) {
  __shared__ T tile[32][33];
  int r0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
  int tx = threadIdx.x, ty = threadIdx.y;
  for (int i = ty; i < 32; i += 8) {
    int r = r0 + i, c = c0 + tx;
    if (r < rows && c < cols) tile[i][tx] = src[size_t(r) * cols + c];
  }
  __syncthreads();
  for (int i = ty; i < 32; i += 8) {
    int c = c0 + i, r = r0 + tx;
    if (c < cols && r < rows) dst[size_t(c) * rows + r] = tile[tx][i];
  }
}

// C (m×n, row-major) = alpha · op(A) · op(B); A is row-major with row length lda (aCols), B with
// ldb (bCols). 64×64 output tile per block of 256 threads, 4×4 outputs per thread, k-tiles of 16.
constexpr int GBM = 64, GBN = 64, GBK = 16;

// S[q][i] = X's element (base + i, k0 + q), zero outside limit × kk; X(i, k) is X[i·ld + k] when
// kMajor, else X[k·ld + i]. Loads are laid out so that consecutive threads read consecutive addresses.
template <typename T, int W>
__device__ inline void loadTile(const T* __restrict__ X, int ld, bool kMajor, int base, int limit, int k0, int kk,
                                int tid, T (*S)[W + 1]) {
  for (int l = tid; l < W * GBK; l += GEMM_THREADS) {
    int i = kMajor ? l / GBK : l % W, q = kMajor ? l % GBK : l / W;
    int gi = base + i, gq = k0 + q;
    S[q][i] = gi < limit && gq < kk ? (kMajor ? X[size_t(gi) * ld + gq] : X[size_t(gq) * ld + gi]) : T(0);
  }
}

template <typename T>
__global__ void gemmK(int m, int n, int kk, const T* __restrict__ A, int lda, int ta, const T* __restrict__ B,
                      int ldb, int tb, T alpha, T* __restrict__ C) {
  __shared__ T As[GBK][GBM + 1];
  __shared__ T Bs[GBK][GBN + 1];
  int tid = threadIdx.x;
  int tx = tid % 16, ty = tid / 16;
  int row0 = blockIdx.y * GBM, col0 = blockIdx.x * GBN;
  T acc[4][4];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = T(0);
  for (int k0 = 0; k0 < kk; k0 += GBK) {
    // op(A)[i][k] is A[i·lda + k] unless ta; op(B)[k][j] is B[j·ldb + k] when tb (k-contiguous).
    loadTile<T, GBM>(A, lda, !ta, row0, m, k0, kk, tid, As);
    loadTile<T, GBN>(B, ldb, tb != 0, col0, n, k0, kk, tid, Bs);
    __syncthreads();
    for (int q = 0; q < GBK; q++) {
      T a[4], b[4];
      for (int i = 0; i < 4; i++) a[i] = As[q][ty + 16 * i];
      for (int j = 0; j < 4; j++) b[j] = Bs[q][tx + 16 * j];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; i++) {
    int r = row0 + ty + 16 * i;
    if (r >= m) continue;
    for (int j = 0; j < 4; j++) {
      int c = col0 + tx + 16 * j;
      if (c < n) C[size_t(r) * n + c] = alpha * acc[i][j];
    }
  }
}

// Householder reflector for column j of W (column-major, leading dimension ld, m rows), as
// LAPACK's dlarfg: W[j,j] ← β, W[j+1:,j] ← v (v_j = 1 implicit), tau[j] ← τ. One block.
template <typename T>
__global__ void houseK(T* W, int m, int ld, int j, T* tau) {
  __shared__ double sh[TPB];
  T* col = W + size_t(j) * ld;
  double s = 0;
  for (int i = j + 1 + threadIdx.x; i < m; i += TPB) {
    double x = col[i];
    s += x * x;
  }
  double alpha = col[j];
  double xn2 = blockSum(s, sh);
  if (xn2 == 0) {
    if (threadIdx.x == 0) tau[j] = T(0);
    return;
  }
  double beta = -copysign(sqrt(alpha * alpha + xn2), alpha);
  double scal = 1.0 / (alpha - beta);
  for (int i = j + 1 + threadIdx.x; i < m; i += TPB) col[i] = T(double(col[i]) * scal);
  if (threadIdx.x == 0) {
    tau[j] = T((beta - alpha) / beta);
    col[j] = T(beta);
  }
}

// Applies H_j = I − τ v vᵀ (v from column j of W, rows j..m−1) to column col0 + blockIdx.x of X
// (column-major, leading dimension ldx).
template <typename T>
__global__ void applyHK(const T* W, int ldw, int j, const T* tau, T* X, int ldx, int m, int col0) {
  __shared__ double sh[TPB];
  double t = tau[j];
  if (t == 0) return;
  const T* v = W + size_t(j) * ldw;
  T* x = X + size_t(col0 + blockIdx.x) * ldx;
  double s = 0;
  for (int i = j + threadIdx.x; i < m; i += TPB) s += (i == j ? 1.0 : double(v[i])) * double(x[i]);
  double f = t * blockSum(s, sh);
  for (int i = j + threadIdx.x; i < m; i += TPB) x[i] = T(double(x[i]) - f * (i == j ? 1.0 : double(v[i])));
}

// Upper trapezoid of the first k rows of W (column-major m×n) into R: row-major k×n (colMajor 0)
// or column-major k×n (colMajor 1), zeros below the diagonal.
template <typename T>
__global__ void upperK(const T* W, int m, int n, int k, T* R, int colMajor) {
  size_t idx = size_t(blockIdx.x) * TPB + threadIdx.x;
  if (idx >= size_t(k) * n) return;
  int i, j;
  if (colMajor) {
    j = int(idx / k);
    i = int(idx % k);
  } else {
    i = int(idx / n);
    j = int(idx % n);
  }
  R[idx] = j >= i ? W[size_t(j) * m + i] : T(0);
}

// Sets the first k columns of the m×k column-major identity (diagonal only; memset the rest).
template <typename T>
__global__ void diagOnesK(T* Q, int m, int k) {
  int j = blockIdx.x * TPB + threadIdx.x;
  if (j < k) Q[size_t(j) * m + j] = T(1);
}

// One round of one-sided Jacobi: block b rotates the column pair (pairs[2b], pairs[2b+1]) of G
// (column-major M×N) and the same columns of V (column-major N×N). pairs < 0: odd-N dummy.
template <typename T>
__global__ void jacobiK(T* G, int M, T* V, int N, const int* pairs, double tol, int* rotated) {
  __shared__ double sh[3 * TPB];
  int p = pairs[2 * blockIdx.x], q = pairs[2 * blockIdx.x + 1];
  if (p < 0 || q < 0) return;
  T* gp = G + size_t(p) * M;
  T* gq = G + size_t(q) * M;
  double a = 0, b = 0, c = 0;
  for (int i = threadIdx.x; i < M; i += TPB) {
    double x = gp[i], y = gq[i];
    a += x * x;
    b += y * y;
    c += x * y;
  }
  blockSum3(a, b, c, sh);
  if (c == 0 || fabs(c) <= tol * sqrt(a * b)) return;
  double zeta = (b - a) / (2 * c);
  double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
  double cs = 1 / sqrt(1 + t * t), sn = cs * t;
  for (int i = threadIdx.x; i < M; i += TPB) {
    double x = gp[i], y = gq[i];
    gp[i] = T(cs * x - sn * y);
    gq[i] = T(sn * x + cs * y);
  }
  T* vp = V + size_t(p) * N;
  T* vq = V + size_t(q) * N;
  for (int i = threadIdx.x; i < N; i += TPB) {
    double x = vp[i], y = vq[i];
    vp[i] = T(cs * x - sn * y);
    vq[i] = T(sn * x + cs * y);
  }
  if (threadIdx.x == 0) *rotated = 1;
}

// out[r] = ‖row r of X (rows×d)‖², one block per row.
__global__ void rowNormsK(const double* X, int d, double* out) {
  __shared__ double sh[TPB];
  const double* x = X + size_t(blockIdx.x) * d;
  double s = 0;
  for (int j = threadIdx.x; j < d; j += TPB) s += x[j] * x[j];
  s = blockSum(s, sh);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// labels[i] = argmin_q ‖x_i‖² + ‖c_q‖² − 2 x_i·c_q (ties → lowest q), G = X Cᵀ (n×k).
__global__ void assignK(const double* G, const double* xx, const double* cc, int n, int k, int* labels) {
  size_t i = size_t(blockIdx.x) * TPB + threadIdx.x;
  if (i >= size_t(n)) return;
  labels[i] = nearestCentroid(G + i * k, xx[i], cc, k);
}

// next[q, j] = Σ_{i ∈ cluster q, in point order} w_i x_ij / wsum_q, or old[q, j] when wsum_q = 0.
// Grid (k, ⌈d/TPB⌉): one thread per (cluster, dimension).
__global__ void centroidK(const double* X, int d, const int* members, const int* offsets, const double* w,
                          const double* wsum, const double* old, double* next) {
  int q = blockIdx.x;
  int j = blockIdx.y * TPB + threadIdx.x;
  if (j >= d) return;
  size_t o = size_t(q) * d + j;
  double ws = wsum[q];
  if (!(ws > 0)) {
    next[o] = old[o];
    return;
  }
  double s = 0;
  for (int t = offsets[q]; t < offsets[q + 1]; t++) {
    int i = members[t];
    s += (w ? w[i] : 1.0) * X[size_t(i) * d + j];
  }
  next[o] = s / ws;
}

// out[q] = ‖a_q − b_{rowOfB[q]}‖² (rows of d; rowOfB null = q), one block per row q: the centroids'
// shift (b = the previous centroids) and each point's distance to its centroid (b = C, rowOfB = labels).
__global__ void rowDist2K(const double* a, const double* b, const int* rowOfB, int d, double* out) {
  __shared__ double sh[TPB];
  const double* x = a + size_t(blockIdx.x) * d;
  const double* y = b + size_t(rowOfB ? rowOfB[blockIdx.x] : int(blockIdx.x)) * d;
  double s = 0;
  for (int j = threadIdx.x; j < d; j += TPB) {
    double t = x[j] - y[j];
    s += t * t;
  }
  s = blockSum(s, sh);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

__device__ inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// N(0,1) values by Box–Muller on a counter-based hash: out[i] depends only on (seed, i).
template <typename T>
__global__ void randnK(T* out, size_t n, uint64_t seed) {
  size_t i = size_t(blockIdx.x) * TPB + threadIdx.x;
  if (i >= n) return;
  uint64_t a = mix64(seed ^ mix64(2 * i)), b = mix64(seed ^ mix64(2 * i + 1));
  double u1 = (double((a >> 11) + 1)) * (1.0 / 9007199254740993.0);  // (0, 1]
  double u2 = double(b >> 11) * (1.0 / 9007199254740992.0);
  out[i] = T(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

// ------------------------------------------------------------------------------------------------
// Host-side plumbing

template <typename T>
void transposeDev(const T* src, int rows, int cols, T* dst) {
  dim3 grid((rows + 31) / 32, (cols + 31) / 32), block(32, 8);
  if (grid.y > 65535) throw CudaError("transpose: too many columns");
  LORA_LAUNCH(transposeK<T>, grid, block, src, rows, cols, dst);
  CKL("transposeK");
}

template <typename T>
void gemmDev(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool ta, bool tb, T alpha, T* c) {
  int m = ta ? aCols : aRows, kk = ta ? aRows : aCols, n = tb ? bRows : bCols;
  dim3 grid((n + GBN - 1) / GBN, (m + GBM - 1) / GBM);
  if (grid.y > 65535) throw CudaError("gemm: too many rows for one launch");
  if (kk == 0) {
    CK(cudaMemset(c, 0, size_t(m) * n * sizeof(T)));
    return;
  }
  // cuBLAS when the machine has it (cublas.cc): row-major C = op(A)op(B) is column-major
  // Cᵀ = op(B)ᵀop(A)ᵀ, and a row-major buffer read column-major is the transpose (as cpu/ops.cc).
  if (blas::gemm(sizeof(T) == 8, tb, ta, n, m, kk, double(alpha), b, std::max(1, bCols), a, std::max(1, aCols), c, n))
    return;
  LORA_LAUNCH(gemmK<T>, grid, dim3(GEMM_THREADS), m, n, kk, a, aCols, int(ta), b, bCols, int(tb), alpha, c);
  CKL("gemmK");
}

// Householder QR in place: W (column-major m×n) ← R above the diagonal and the reflectors below.
template <typename T>
void householderDev(T* W, int m, int n, T* tau) {
  int k = std::min(m, n);
  for (int j = 0; j < k; j++) {
    LORA_LAUNCH(houseK<T>, dim3(1), dim3(TPB), W, m, m, j, tau);
    if (n - j - 1 > 0) LORA_LAUNCH(applyHK<T>, dim3(n - j - 1), dim3(TPB), W, m, j, tau, W, m, m, j + 1);
  }
  CKL("householder");
}

// Q (column-major m×k) = H_0 … H_{k−1} [I; 0], accumulated backwards as LAPACK's orgqr.
template <typename T>
void formQDev(const T* W, int m, int k, const T* tau, T* Q) {
  CK(cudaMemset(Q, 0, size_t(m) * k * sizeof(T)));
  LORA_LAUNCH(diagOnesK<T>, dim3(blocksFor(k)), dim3(TPB), Q, m, k);
  for (int j = k - 1; j >= 0; j--) LORA_LAUNCH(applyHK<T>, dim3(k - j), dim3(TPB), W, m, j, tau, Q, m, m, j);
  CKL("formQ");
}

// Round-robin (circle method) schedule: N' − 1 rounds of N'/2 disjoint pairs, N' = N rounded up
// to even; the odd one out is marked −1.
std::vector<int> roundRobin(int N, int& rounds, int& perRound) {
  int Np = N + (N & 1);
  rounds = Np - 1;
  perRound = Np / 2;
  std::vector<int> pairs(size_t(rounds) * perRound * 2);
  for (int r = 0; r < rounds; r++) {
    int* pr = pairs.data() + size_t(r) * perRound * 2;
    int a = r, b = Np - 1;
    pr[0] = a < N ? a : -1;
    pr[1] = b < N ? b : -1;
    for (int i = 1; i < perRound; i++) {
      int x = (r + i) % (Np - 1), y = (r - i + (Np - 1)) % (Np - 1);
      pr[2 * i] = x < N ? x : -1;
      pr[2 * i + 1] = y < N ? y : -1;
    }
  }
  return pairs;
}

// One-sided Jacobi on G (column-major M×N, M ≥ N): on return G = U Σ (columns orthogonal) and
// V (column-major N×N, set here) holds the rotations. Returns the number of sweeps.
template <typename T>
int jacobiDev(T* G, int M, int N, T* V, int maxSweeps = 40) {
  CK(cudaMemset(V, 0, size_t(N) * N * sizeof(T)));
  LORA_LAUNCH(diagOnesK<T>, dim3(blocksFor(N)), dim3(TPB), V, N, N);
  if (N < 2) return 0;
  int rounds = 0, perRound = 0;
  std::vector<int> pairs = roundRobin(N, rounds, perRound);
  DBuf<int> dPairs(pairs.size()), dFlag(1);
  dPairs.upload(pairs.data(), pairs.size());
  double tol = Eps<T>::v * std::sqrt(double(M));
  int sweep = 0;
  for (; sweep < maxSweeps; sweep++) {
    CK(cudaMemset(dFlag.p, 0, sizeof(int)));
    for (int r = 0; r < rounds; r++)
      LORA_LAUNCH(jacobiK<T>, dim3(perRound), dim3(TPB), G, M, V, N, dPairs.p + size_t(r) * perRound * 2, tol,
                  dFlag.p);
    CKL("jacobiK");
    int flag = 0;
    dFlag.download(&flag, 1);
    if (!flag) break;
  }
  if (std::getenv("LORA_CUDA_DEBUG")) std::fprintf(stderr, "jacobi %dx%d: %d sweeps\n", M, N, sweep);
  return sweep;
}

// Column norms of Ucol (M×N col-major, host, double work), a descending order, normalised
// columns, and orthonormal completions for zero columns (rank-deficient inputs).
void finishColumns(std::vector<double>& U, int M, int N, std::vector<double>& sigma, std::vector<int>& order) {
  sigma.assign(N, 0);
  for (int j = 0; j < N; j++) {
    double s = 0;
    for (int i = 0; i < M; i++) s += U[size_t(j) * M + i] * U[size_t(j) * M + i];
    sigma[j] = std::sqrt(s);
  }
  order.resize(N);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return sigma[a] > sigma[b]; });
  std::vector<int> zero;
  for (int j = 0; j < N; j++) {
    double* u = U.data() + size_t(j) * M;
    if (sigma[j] > 0 && std::isfinite(1.0 / sigma[j])) {
      for (int i = 0; i < M; i++) u[i] /= sigma[j];
    } else {
      zero.push_back(j);
    }
  }
  // Gram–Schmidt (twice) of unit vectors against the columns kept so far.
  std::vector<char> done(N, 1);
  for (int j : zero) done[j] = 0;
  int e = 0;
  for (int j : zero) {
    double* u = U.data() + size_t(j) * M;
    for (; e < M; e++) {
      std::fill(u, u + M, 0.0);
      u[e] = 1;
      const double nr = orthogonalizeTwice(u, M, U.data(), N, [&](int c) { return done[c] != 0; });
      if (nr > 0.5) {
        for (int i = 0; i < M; i++) u[i] /= nr;
        done[j] = 1;
        e++;
        break;
      }
    }
  }
}

template <typename T>
std::vector<double> toDouble(const DBuf<T>& b, size_t n) {
  std::vector<T> h(n);
  b.download(h.data(), n);
  return std::vector<double>(h.begin(), h.end());
}

// SVD of the tall column-major G (M×N, M ≥ N) on the device. Out (host, double): Ucol (M×N,
// column-major, unnormalised U·Σ) and Vcol (N×N column-major).
template <typename T>
void svdTallDev(T* G, int M, int N, std::vector<double>& Ucol, std::vector<double>& Vcol) {
  DBuf<T> V(size_t(N) * N);
  if (M >= 2 * N && N > 1) {
    DBuf<T> tau(N), J(size_t(N) * N), Q(size_t(M) * N), U(size_t(M) * N);
    householderDev(G, M, N, tau.p);
    LORA_LAUNCH(upperK<T>, dim3(blocksFor(size_t(N) * N)), dim3(TPB), G, M, N, N, J.p, 1);
    formQDev(G, M, N, tau.p, Q.p);
    jacobiDev(J.p, N, N, V.p);
    // Column-major U = Q·J, i.e. row-major Uᵀ (N×M) = Jᵀ (N×N) · Qᵀ (N×M), the buffers as they are.
    gemmDev<T>(J.p, N, N, Q.p, N, M, false, false, T(1), U.p);
    Ucol = toDouble(U, size_t(M) * N);
  } else {
    jacobiDev(G, M, N, V.p);
    std::vector<T> h(size_t(M) * N);
    CK(cudaMemcpy(h.data(), G, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
    Ucol.assign(h.begin(), h.end());
  }
  Vcol = toDouble(V, size_t(N) * N);
}

}  // namespace

// ================================================================================================
// Public API

Probe probe() {
  Probe p;
  void* h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (h) {
    p.libcuda = true;
    dlclose(h);
  } else {
    const char* e = dlerror();
    p.dlerror = e ? e : "libcuda.so.1 not found";
  }
  cudaRuntimeGetVersion(&p.runtimeVersion);
  cudaDriverGetVersion(&p.driverVersion);
  cudaError_t e = cudaGetDeviceCount(&p.deviceCount);
  p.error = int(e);
  p.errorString = cudaGetErrorString(e);
  if (e != cudaSuccess) {
    p.deviceCount = 0;
    cudaGetLastError();
    return p;
  }
  if (p.deviceCount > 0) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
      p.device = prop.name;
      p.ccMajor = prop.major;
      p.ccMinor = prop.minor;
      p.memoryBytes = prop.totalGlobalMem;
      p.multiprocessors = prop.multiProcessorCount;
      p.blas = blas::describe();
      if (prop.major < 8) {
        p.error = -1;
        p.errorString = "compute capability " + std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                        " is older than the sm_80 this build targets";
      }
    } else {
      cudaGetLastError();
    }
  }
  return p;
}

namespace dev {

Status synchronize() {
  return guard("synchronize", [] { CK(cudaDeviceSynchronize()); });
}

template <typename T>
Status randn(T* d, size_t n, uint64_t seed) {
  return guard("randn", [&] {
    LORA_LAUNCH(randnK<T>, dim3(blocksFor(n)), dim3(TPB), d, n, seed);
    CKL("randnK");
  });
}

template <typename T>
Status gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB, T alpha,
            T* c) {
  return guard("gemm", [&] { gemmDev<T>(a, aRows, aCols, b, bRows, bCols, transA, transB, alpha, c); });
}

template <typename T>
Status orthonormalize(const T* y, int m, int n, T* q) {
  return guard("orthonormalize", [&] {
    DBuf<T> W(size_t(m) * n), tau(n), Q(size_t(m) * n);
    transposeDev(y, m, n, W.p);
    householderDev(W.p, m, n, tau.p);
    formQDev(W.p, m, n, tau.p, Q.p);
    transposeDev(Q.p, n, m, q);
  });
}

template <typename T>
Status rsvd(const T* mat, int d, int k, int t, int p, int q, uint64_t seed, T* hostS, T* devU, T* devVt) {
  int l = std::min(t + p, std::min(d, k));
  if (t > l) return Status::fail("BAD_SHAPE", "rsvd: rank larger than the matrix");
  DBuf<T> Om;
  Status st = guard("rsvd", [&] {
    Om = DBuf<T>(size_t(k) * l);
    LORA_LAUNCH(randnK<T>, dim3(blocksFor(Om.n)), dim3(TPB), Om.p, Om.n, seed);
    CKL("randnK");
  });
  return st.ok() ? rsvdWith<T>(mat, d, k, Om.p, l, q, t, hostS, devU, devVt) : st;
}

template <typename T>
Status rsvdWith(const T* mat, int d, int k, const T* omega, int l, int q, int t, T* hostS, T* devU, T* devVt) {
  return guard("rsvd", [&] {
    if (t > l || l > std::min(d, k)) throw CudaError("rsvd: need t ≤ l ≤ min(rows, cols)");
    DBuf<T> Y(size_t(d) * l), Q(size_t(d) * l), Z(size_t(k) * l), Zq(size_t(k) * l), Bt(size_t(l) * k);
    gemmDev<T>(mat, d, k, omega, k, l, false, false, T(1), Y.p);
    Status s = orthonormalize<T>(Y.p, d, l, Q.p);
    if (!s.ok()) throw CudaError(s.message);
    for (int it = 0; it < q; it++) {
      gemmDev<T>(mat, d, k, Q.p, d, l, true, false, T(1), Z.p);  // Mᵀ Q
      s = orthonormalize<T>(Z.p, k, l, Zq.p);
      if (!s.ok()) throw CudaError(s.message);
      gemmDev<T>(mat, d, k, Zq.p, k, l, false, false, T(1), Y.p);  // M Z
      s = orthonormalize<T>(Y.p, d, l, Q.p);
      if (!s.ok()) throw CudaError(s.message);
    }
    gemmDev<T>(Q.p, d, l, mat, d, k, true, false, T(1), Bt.p);  // B̃ = Qᵀ M (l×k)
    // SVD of B̃ (wide): its row-major buffer is the column-major tall B̃ᵀ (k×l).
    std::vector<double> Ucol, Vcol, sigma;
    std::vector<int> order;
    svdTallDev(Bt.p, k, l, Ucol, Vcol);
    finishColumns(Ucol, k, l, sigma, order);
    // B̃ = V_G Σ U_Gᵀ: U_B̃ = V_G (l×l), Vt = U_Gᵀ.
    for (int j = 0; j < t; j++) hostS[j] = T(sigma[order[j]]);
    if (devU) {
      std::vector<T> Ub(size_t(l) * t);
      for (int i = 0; i < l; i++)
        for (int j = 0; j < t; j++) Ub[size_t(i) * t + j] = T(Vcol[size_t(order[j]) * l + i]);
      DBuf<T> dUb(Ub.size());
      dUb.upload(Ub.data(), Ub.size());
      gemmDev<T>(Q.p, d, l, dUb.p, l, t, false, false, T(1), devU);
    }
    if (devVt) {
      std::vector<T> V(size_t(t) * k);
      for (int j = 0; j < t; j++)
        for (int c = 0; c < k; c++) V[size_t(j) * k + c] = T(Ucol[size_t(order[j]) * k + c]);
      CK(cudaMemcpy(devVt, V.data(), V.size() * sizeof(T), cudaMemcpyHostToDevice));
    }
    CK(cudaDeviceSynchronize());
  });
}

Status kmeansLloyd(const double* x, int n, int d, double* c, int k, const double* hostWeights, int maxIter,
                   double tol, int32_t* hostLabels, KmeansOut* out) {
  return guard("kmeans", [&] {
    DBuf<double> xx(n), cc(k), G(size_t(n) * k), cur(size_t(k) * d), next(size_t(k) * d), wsum(k), part(std::max(n, k));
    DBuf<int> lab(n), members(n), offsets(size_t(k) + 1);
    DBuf<double> w;
    if (hostWeights) {
      w = DBuf<double>(n);
      w.upload(hostWeights, n);
    }
    CK(cudaMemcpy(cur.p, c, cur.n * sizeof(double), cudaMemcpyDeviceToDevice));
    LORA_LAUNCH(rowNormsK, dim3(n), dim3(TPB), x, d, xx.p);
    std::vector<int> hl(n), off(size_t(k) + 1), mem(n);
    std::vector<double> ws(k), sh(std::max(n, k));
    auto assign = [&] {
      LORA_LAUNCH(rowNormsK, dim3(k), dim3(TPB), cur.p, d, cc.p);
      gemmDev<double>(x, n, d, cur.p, k, d, false, true, 1.0, G.p);
      LORA_LAUNCH(assignK, dim3(blocksFor(n)), dim3(TPB), G.p, xx.p, cc.p, n, k, lab.p);
      CKL("assign");
      lab.download(hl.data(), n);
    };
    int iterations = 0;
    for (int it = 0; it < maxIter; it++) {
      assign();
      iterations = it + 1;
      std::fill(ws.begin(), ws.end(), 0.0);
      std::fill(off.begin(), off.end(), 0);
      for (int i = 0; i < n; i++) {
        ws[hl[i]] += hostWeights ? hostWeights[i] : 1.0;
        off[hl[i] + 1]++;
      }
      for (int q = 0; q < k; q++) off[q + 1] += off[q];
      {
        std::vector<int> pos(off.begin(), off.end() - 1);
        for (int i = 0; i < n; i++) mem[pos[hl[i]]++] = i;
      }
      members.upload(mem.data(), n);
      offsets.upload(off.data(), off.size());
      wsum.upload(ws.data(), k);
      dim3 grid(k, (d + TPB - 1) / TPB);
      LORA_LAUNCH(centroidK, grid, dim3(TPB), x, d, members.p, offsets.p, hostWeights ? w.p : nullptr, wsum.p,
                  cur.p, next.p);
      LORA_LAUNCH(rowDist2K, dim3(k), dim3(TPB), next.p, cur.p, static_cast<const int*>(nullptr), d, part.p);
      CKL("update");
      part.download(sh.data(), k);
      double shift = 0;
      for (int q = 0; q < k; q++) shift += sh[q];
      std::swap(cur, next);
      if (shift <= tol) break;
    }
    assign();
    LORA_LAUNCH(rowDist2K, dim3(n), dim3(TPB), x, cur.p, static_cast<const int*>(lab.p), d, part.p);
    CKL("inertia");
    part.download(sh.data(), n);
    double inertia = 0;
    for (int i = 0; i < n; i++) inertia += (hostWeights ? hostWeights[i] : 1.0) * sh[i];
    CK(cudaMemcpy(c, cur.p, cur.n * sizeof(double), cudaMemcpyDeviceToDevice));
    std::copy(hl.begin(), hl.end(), hostLabels);
    out->inertia = inertia;
    out->iterations = iterations;
  });
}

template Status randn<float>(float*, size_t, uint64_t);
template Status randn<double>(double*, size_t, uint64_t);
template Status gemm<float>(const float*, int, int, const float*, int, int, bool, bool, float, float*);
template Status gemm<double>(const double*, int, int, const double*, int, int, bool, bool, double, double*);
template Status orthonormalize<float>(const float*, int, int, float*);
template Status orthonormalize<double>(const double*, int, int, double*);
template Status rsvd<float>(const float*, int, int, int, int, int, uint64_t, float*, float*, float*);
template Status rsvd<double>(const double*, int, int, int, int, int, uint64_t, double*, double*, double*);
template Status rsvdWith<float>(const float*, int, int, const float*, int, int, int, float*, float*, float*);
template Status rsvdWith<double>(const double*, int, int, const double*, int, int, int, double*, double*, double*);

}  // namespace dev

}  // namespace cuda
}  // namespace lora

// ================================================================================================
// Ops<Cuda> (common/ops.h): the dense operations and k-means; the raw-bytes ones and the randomized
// SVD are in fused.cu.

namespace lora {
using namespace cuda;

template <>
template <typename T>
Status Ops<Cuda>::gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB, T alpha,
            T* c) {
  return guard("gemm", [&] {
    int m = transA ? aCols : aRows, n = transB ? bRows : bCols;
    const bool gram = a == b && aRows == bRows && aCols == bCols;  // X·Xᵀ or Xᵀ·X: one upload
    DBuf<T> A(size_t(aRows) * aCols), B(gram ? 0 : size_t(bRows) * bCols), C(size_t(m) * n);
    A.upload(a, A.n);
    if (!gram) B.upload(b, B.n);
    gemmDev<T>(A.p, aRows, aCols, gram ? A.p : B.p, bRows, bCols, transA, transB, alpha, C.p);
    C.download(c, C.n);
  });
}

template <>
template <typename T>
Status Ops<Cuda>::qr(const T* a, int m, int n, T* q, T* r) {
  return guard("qr", [&] {
    int k = std::min(m, n);
    DBuf<T> A(size_t(m) * n), W(size_t(m) * n), tau(k), Q(size_t(m) * k), Qr(size_t(m) * k), R(size_t(k) * n);
    A.upload(a, A.n);
    transposeDev(A.p, m, n, W.p);  // row-major m×n → column-major m×n
    householderDev(W.p, m, n, tau.p);
    LORA_LAUNCH(upperK<T>, dim3(blocksFor(size_t(k) * n)), dim3(TPB), W.p, m, n, k, R.p, 0);
    formQDev(W.p, m, k, tau.p, Q.p);
    transposeDev(Q.p, k, m, Qr.p);  // column-major m×k → row-major m×k
    CKL("qr");
    Qr.download(q, Qr.n);
    R.download(r, R.n);
    for (int i = 0; i < k; i++) {
      if (r[size_t(i) * n + i] < 0) {
        for (int j = i; j < n; j++) r[size_t(i) * n + j] = -r[size_t(i) * n + j];
        for (int row = 0; row < m; row++) q[size_t(row) * k + i] = -q[size_t(row) * k + i];
      }
    }
  });
}

template <>
template <typename T>
Status Ops<Cuda>::svd(const T* a, int m, int n, T* u, T* s, T* vt) {
  return guard("svd", [&] {
    bool tall = m >= n;
    int M = std::max(m, n), N = std::min(m, n);
    DBuf<T> A(size_t(m) * n), G(size_t(M) * N);
    A.upload(a, A.n);
    if (tall) transposeDev(A.p, m, n, G.p);  // column-major A
    else CK(cudaMemcpy(G.p, A.p, A.n * sizeof(T), cudaMemcpyDeviceToDevice));  // row-major A = column-major Aᵀ
    std::vector<double> Ucol, Vcol, sigma;
    std::vector<int> order;
    svdTallDev(G.p, M, N, Ucol, Vcol);
    finishColumns(Ucol, M, N, sigma, order);
    int k = N;
    for (int j = 0; j < k; j++) s[j] = T(sigma[order[j]]);
    if (tall) {  // A = U Σ Vᵀ: U = Ucol, V = Vcol
      for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) u[size_t(i) * k + j] = T(Ucol[size_t(order[j]) * M + i]);
      for (int j = 0; j < k; j++)
        for (int c = 0; c < n; c++) vt[size_t(j) * n + c] = T(Vcol[size_t(order[j]) * N + c]);
    } else {  // Aᵀ = U_G Σ V_Gᵀ, so A = V_G Σ U_Gᵀ
      for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) u[size_t(i) * k + j] = T(Vcol[size_t(order[j]) * N + i]);
      for (int j = 0; j < k; j++)
        for (int c = 0; c < n; c++) vt[size_t(j) * n + c] = T(Ucol[size_t(order[j]) * M + c]);
    }
  });
}

template <>
template <typename T>
Status Ops<Cuda>::eigSym(const T* a, int n, T* values, T* vectors) {
  return guard("eigSym", [&] {
    std::vector<double> S(size_t(n) * n);
    double f2 = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j <= i; j++) {
        double v = a[size_t(i) * n + j];
        S[size_t(i) * n + j] = S[size_t(j) * n + i] = v;
        f2 += (i == j ? 1 : 2) * v * v;
      }
    double shift = std::sqrt(f2);
    std::vector<T> B(size_t(n) * n);
    for (size_t i = 0; i < B.size(); i++) B[i] = T(S[i]);
    for (int i = 0; i < n; i++) B[size_t(i) * n + i] = T(S[size_t(i) * n + i] + shift);
    DBuf<T> G(B.size()), V(B.size());
    G.upload(B.data(), B.size());
    jacobiDev(G.p, n, n, V.p);
    std::vector<double> Vcol = toDouble(V, B.size());
    std::vector<double> lam(n), Sv(n);
    for (int j = 0; j < n; j++) {
      const double* v = Vcol.data() + size_t(j) * n;
      double l = 0;
      for (int i = 0; i < n; i++) {
        double t = 0;
        for (int c = 0; c < n; c++) t += S[size_t(i) * n + c] * v[c];
        l += v[i] * t;
      }
      lam[j] = l;
    }
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return lam[x] > lam[y]; });
    for (int j = 0; j < n; j++) {
      values[j] = T(lam[order[j]]);
      for (int i = 0; i < n; i++) vectors[size_t(i) * n + j] = T(Vcol[size_t(order[j]) * n + i]);
    }
  });
}

template <>
Status Ops<Cuda>::kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* weights, int maxIter,
                   double tol, double* centroids, int32_t* labels, KmeansOut* out) {
  DBuf<double> X, C;
  Status st = guard("kmeans", [&] {
    X = DBuf<double>(size_t(n) * d);
    C = DBuf<double>(size_t(k) * d);
    X.upload(x, X.n);
    C.upload(init, C.n);
  });
  if (!st.ok()) return st;
  st = dev::kmeansLloyd(X.p, n, d, C.p, k, weights, maxIter, tol, labels, out);
  if (!st.ok()) return st;
  return guard("kmeans", [&] { C.download(centroids, C.n); });
}

LORA_INSTANTIATE_DENSE_OPS(Cuda, float)
LORA_INSTANTIATE_DENSE_OPS(Cuda, double)


}  // namespace lora
