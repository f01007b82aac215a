#!/usr/bin/env bash
# Builds lora_cuda.node against the CPU emulation of CUDA (emu/cuda_emu.h), so that the CUDA
# addon's N-API layer and linalg/native's adapter can be run through the TS parity table on a
# machine without a GPU:
#   bash native/cuda-harness/build-emu-addon.sh
#   LORA_TEST_CUDA_ADDON=native/build/emu/lora_cuda.node node test/run.js backends
# (one operation at a time only: the emulation keeps global state).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$root/native/src"
out="$root/native/build/emu"
mkdir -p "$out"
napi="$(cd "$root" && node -p "require('node-addon-api').include_dir")"
nodeinc="${NODE_INCLUDE:-/usr/include/node}"
flags=(-std=c++17 -O2 -fPIC -Wno-psabi -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -I"$napi" -I"$nodeinc")
objs=()
for f in blas ops kernels truncate; do  # the cpu code the fused operations reuse: no emulation header
  "${CXX:-g++}" "${flags[@]}" -c "$src/cpu/$f.cc" -o "$out/cpu_$f.o"
  objs+=("$out/cpu_$f.o")
done
"${CXX:-g++}" "${flags[@]}" -shared -DLORA_CUDA_EMU -include "$here/emu/cuda_emu.h" \
  -x c++ "$src/cuda/kernels.cu" -x c++ "$src/cuda/fused.cu" -x c++ "$src/cuda/cublas.cc" -x c++ "$src/cuda/addon.cc" -x c++ "$src/cuda/streamed.cc" \
  -x none "${objs[@]}" -o "$out/lora_cuda.node" -ldl -lpthread
echo "$out/lora_cuda.node"
