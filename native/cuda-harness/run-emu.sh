#!/usr/bin/env bash
# Builds the harness against the CPU emulation of CUDA (emu/cuda_emu.h) and runs it: the parity
# table of the CUDA kernels, checked against float64 CPU references, on a machine without a GPU.
# Slow (the kernels' threads run as fibers) but it checks indexing, barriers and host logic.
#   bash native/cuda-harness/run-emu.sh [--seed N] [--no-bench]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${LORA_EMU_BUILD:-$here/../build/cuda-harness-emu}"
mkdir -p "$out"
"${CXX:-g++}" -std=c++17 -O2 -DLORA_CUDA_EMU -include "$here/emu/cuda_emu.h" \
  -x c++ "$here/../src/cuda/kernels.cu" -x c++ "$here/../src/cuda/cublas.cc" -x c++ "$here/main.cc" -o "$out/lora-cuda-harness-emu" -ldl
exec "$out/lora-cuda-harness-emu" "$@"
