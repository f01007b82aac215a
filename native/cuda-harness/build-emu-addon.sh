#!/usr/bin/env bash
# Builds lora_cuda.node against the CPU emulation of CUDA (emu/cuda_emu.h), so that the CUDA
# addon's N-API layer and linalg/native.ts's adapter can be run through the TS parity table on a
# machine without a GPU:
#   bash native/cuda-harness/build-emu-addon.sh
#   LORA_TEST_CUDA_ADDON=native/build/emu/lora_cuda.node node test/run.js backends
# (one operation at a time only: the emulation keeps global state).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/native/build/emu"
mkdir -p "$out"
napi="$(cd "$root" && node -p "require('node-addon-api').include_dir")"
nodeinc="${NODE_INCLUDE:-/usr/include/node}"
"${CXX:-g++}" -std=c++17 -O2 -fPIC -shared -DLORA_CUDA_EMU -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS \
  -I"$napi" -I"$nodeinc" -include "$here/emu/cuda_emu.h" \
  -x c++ "$root/native/src/cuda/kernels.cu" -x c++ "$root/native/src/cuda/addon.cc" \
  -o "$out/lora_cuda.node" -ldl
echo "$out/lora_cuda.node"
