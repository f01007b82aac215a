#!/usr/bin/env bash
# Builds lora_cpu.node and lora_cuda.node with g++ and nvcc directly: no node-gyp and no Node needed,
# only Node-API's C headers. For machines without Node's build tools, such as the GPU machine that
# bench/gpu-check.sh runs on; npm install uses build.js (node-gyp, binding.gyp: the same sources and flags).
#   bash native/build-direct.sh [out dir (default native/build/Release)]
# Environment: NODE_API_INCLUDE (dir of node_api.h, default /usr/include/node), NAPI_INCLUDE
# (node-addon-api, default node_modules/node-addon-api), CUDA_HOME (default /usr/local/cuda),
# CUDA_ARCH (nvcc -gencode flags, default sm_80 + sm_90 + compute_90 PTX), LORA_CUDA=0 (cpu only).
# Exit 0 when every addon asked for was built; build.log beside the addons has the compiler output.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
src="$here/src"
out="${1:-$here/build/Release}"
mkdir -p "$out"
log="$out/../build.log"
: >"$log"
nodeinc="${NODE_API_INCLUDE:-/usr/include/node}"
napi="${NAPI_INCLUDE:-$root/node_modules/node-addon-api}"
cuda="${CUDA_HOME:-/usr/local/cuda}"
arch="${CUDA_ARCH:--gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90}"
flags=(-std=c++17 -O3 -fPIC -fexceptions -Wno-psabi -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -I"$napi" -I"$nodeinc")
obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
pids=()
cc() { "${CXX:-g++}" "${flags[@]}" -c "$1" -o "$2" >>"$log" 2>&1; }
for f in addon blas ops kernels truncate rsvd streamed; do cc "$src/cpu/$f.cc" "$obj/cpu_$f.o" & pids+=($!); done
want_cuda=0
if [ "${LORA_CUDA:-1}" != 0 ] && [ -x "$cuda/bin/nvcc" ]; then
  want_cuda=1
  for f in kernels fused; do
    "$cuda/bin/nvcc" -O3 -std=c++17 -Xcompiler -fPIC $arch -c "$src/cuda/$f.cu" -o "$obj/cuda_$f.o" >>"$log" 2>&1 & pids+=($!)
  done
  for f in addon cublas streamed; do cc "$src/cuda/$f.cc" "$obj/cuda_$f.o" & pids+=($!); done
fi
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
cpu_ok=false cuda_ok=false
if [ "$fail" = 0 ] || [ -f "$obj/cpu_rsvd.o" ]; then
  "${CXX:-g++}" -shared -o "$out/lora_cpu.node" "$obj"/cpu_{addon,blas,ops,kernels,truncate,rsvd,streamed}.o -ldl -lpthread >>"$log" 2>&1 && cpu_ok=true
fi
if [ "$want_cuda" = 1 ]; then
  "${CXX:-g++}" -shared -o "$out/lora_cuda.node" "$obj"/cuda_{addon,kernels,fused,cublas,streamed}.o "$obj"/cpu_{blas,ops,kernels,truncate}.o \
    "$cuda/lib64/libcudart_static.a" -ldl -lpthread -lrt >>"$log" 2>&1 && cuda_ok=true
fi
reason() { if [ "$1" = true ]; then echo ""; else echo "build failed (native/build-direct.sh; see build.log)"; fi; }
printf '{ "cpu": { "built": %s, "reason": "%s" }, "cuda": { "built": %s, "reason": "%s" } }\n' \
  "$cpu_ok" "$(reason $cpu_ok)" "$cuda_ok" "$( [ $want_cuda = 1 ] && reason $cuda_ok || echo 'not attempted (no nvcc or LORA_CUDA=0)')" >"$out/../status.json"
echo "build-direct: cpu addon built: $cpu_ok; cuda addon built: $cuda_ok ($out)"
[ "$cpu_ok" = true ] && { [ "$want_cuda" = 0 ] || [ "$cuda_ok" = true ]; }
