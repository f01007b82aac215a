#!/usr/bin/env bash
# GPU check for lora's CUDA kernels, for a GPU machine that has nvcc, CMake and Python but no Node.
# Builds the standalone harness (native/cuda-harness: the same kernels.cu as lora_cuda.node), runs
# the parity table on the GPU against float64 CPU references computed in the harness, and times
# GEMM, k-means (2^20 points x 1024 dims, k = 1024) and a randomized SVD (32768 x 32768, rank 256)
# at sizes that fill an H100/H200, plus the issue's CPU-target sizes. Under 5 minutes there.
#
#   bash bench/gpu-check.sh [--seed N] [--quick] [--no-bench]    (extra flags go to the harness)
#
# Output: the markdown report on stdout and in $OUT/gpu-check.md (or bench/out/gpu-check/), the
# log in gpu-check.log beside it. Exit status: 0 all parity cases pass, 1 a case failed,
# 2 no usable GPU, 3 build failure. Paste the report into docs/BENCHMARKS.md ("GPU" part of the
# "## Linear algebra backends" section).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root/bench/out/gpu-check}"
build="${LORA_HARNESS_BUILD:-/tmp/lora-cuda-harness-build}"
mkdir -p "$out"
log="$out/gpu-check.log"
: >"$log"
say() { echo "gpu-check: $*" | tee -a "$log" >&2; }

# --- toolkit -------------------------------------------------------------------------------------
nvcc=""
for h in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-12.9 /usr/local/cuda-12.8; do
  if [ -n "$h" ] && [ -x "$h/bin/nvcc" ]; then nvcc="$h/bin/nvcc"; break; fi
done
[ -z "$nvcc" ] && nvcc="$(command -v nvcc || true)"
if [ -z "$nvcc" ]; then say "nvcc not found (set CUDA_HOME)"; exit 3; fi
say "nvcc: $nvcc ($("$nvcc" --version | tail -1))"

# --- GPU architecture: the one present (nvidia-smi), else sm_80 + sm_90 ------------------------
arch=""
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader >>"$log" 2>&1 || true
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
  [ -n "$cc" ] && arch="$cc"
fi
[ -z "$arch" ] && arch="80;90"
say "CUDA architectures: $arch"

# --- build: CMake, else nvcc directly ------------------------------------------------------------
bin="$build/lora-cuda-harness"
t0=$(date +%s)
built=0
if command -v cmake >/dev/null 2>&1; then
  if cmake -S "$root/native/cuda-harness" -B "$build" -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch" >>"$log" 2>&1 &&
     cmake --build "$build" -j "$(nproc 2>/dev/null || echo 4)" >>"$log" 2>&1; then
    built=1
  else
    say "CMake build failed (see $log); trying nvcc directly"
  fi
fi
if [ "$built" = 0 ]; then
  mkdir -p "$build"
  gencode=""
  IFS=';' read -ra archs <<<"$arch"
  for a in "${archs[@]}"; do gencode="$gencode -gencode=arch=compute_$a,code=sm_$a"; done
  if "$nvcc" -O3 -std=c++17 $gencode "$root/native/src/cuda/kernels.cu" "$root/native/cuda-harness/main.cc" \
       -o "$bin" -ldl -lpthread -lrt >>"$log" 2>&1; then
    built=1
  fi
fi
if [ "$built" = 0 ] || [ ! -x "$bin" ]; then say "build failed (see $log)"; tail -20 "$log" >&2; exit 3; fi
say "built in $(( $(date +%s) - t0 )) s"

# --- run -----------------------------------------------------------------------------------------
report="$out/gpu-check.md"
t1=$(date +%s)
timeout 280 "$bin" --out "$report" "$@" 2> >(tee -a "$log" >&2)
rc=$?
wait
say "harness exit $rc after $(( $(date +%s) - t1 )) s"
if [ -f "$report" ]; then
  { echo "### GPU check ($(date -u +%Y-%m-%d), bench/gpu-check.sh)"; echo; cat "$report"; } >"$out/gpu-check.section.md"
  cat "$out/gpu-check.section.md"
fi
[ "$rc" = 124 ] && say "timed out (limit 280 s)"
exit "$rc"
