#!/usr/bin/env bash
# GPU check: ONE prepared run for a GPU machine (nvcc, python3; Node may be absent: bench/gpu-stage.sh
# packs a Node binary, the compiled CLI and the libraries next to this checkout). Well under 10 minutes:
#  1. builds both addons there (native/build-direct.sh, sm_90 of the GPU present) and the kernel harness;
#  2. parity: the harness's kernel table (float64 CPU references) and the TS parity tests on cuda
#     against the same tolerances as cpu (linalg/backends, kmeans, randomized SVD, the fused truncation);
#  3. benchmarks, cuda against cpu in this one run (bench/gpu.ts): the crossover table of `auto`,
#     randomized SVD of 4096×11008, lego merge of 32 × r16 adapters (Llama-7B shapes, 8 layers),
#     truncate and inspect of the Llama-7B-shaped adapter.
# Everything goes to one file: $OUT/gpu-check.md (else bench/out/gpu-check/), the log beside it.
#   bash bench/gpu-check.sh [--quick | --no-bench]
# Rehearsal without a GPU (the whole pipeline, tiny benchmark sizes, cuda = the CPU emulation addon):
#   LORA_REHEARSE_CUDA_ADDON=native/build/emu/lora_cuda.node bash bench/gpu-check.sh
# Exit: 0 parity passed and the benchmarks ran, 1 a parity failure or a benchmark error, 2 no usable GPU, 3 build failure.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/bench/out/gpu-check}"
mkdir -p "$out"
report="$out/gpu-check.md" log="$out/gpu-check.log"
: >"$log"
say() { echo "gpu-check: $*" | tee -a "$log" >&2; }
sec() { printf '\n## %s\n\n' "$1" >>"$report"; }
t00=$(date +%s)
stage="${LORA_GPU_STAGE:-}"  # from bench/gpu-stage.sh: node, libraries, headers
node="${LORA_NODE:-node}"
if [ -n "$stage" ]; then
  mkdir -p /tmp/lora-stage
  [ -x /tmp/lora-stage/node ] || xz -dc "$stage/node.xz" >/tmp/lora-stage/node && chmod +x /tmp/lora-stage/node
  tar -C /tmp/lora-stage -xJf "$stage/libs.tar.xz"
  node=/tmp/lora-stage/node
  export NODE_API_INCLUDE=/tmp/lora-stage/include LORA_BLAS=/tmp/lora-stage/lib/libopenblas.so.0
  export LD_LIBRARY_PATH="/tmp/lora-stage/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
quick=""; [ "${1:-}" = "--quick" ] && quick="--quick"
nobench=""; [ "${1:-}" = "--no-bench" ] && nobench=1
{ echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), bench/gpu-check.sh)"; echo; } >"$report"

# --- machine -------------------------------------------------------------------------------------
sec "Machine"
{ nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/- GPU: /'
  echo "- CPU: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/Mem/{print $2}') GiB"
  echo "- Node $("$node" --version 2>&1), nvcc $(nvcc --version 2>/dev/null | tail -1)"; } >>"$report" 2>&1
rehearse="${LORA_REHEARSE_CUDA_ADDON:-}"
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
[ -n "$rehearse" ] && cc=90 && rehearse="$(realpath "$rehearse")"
[ -z "$cc" ] && { say "no GPU (nvidia-smi)"; exit 2; }
# cuBLAS from the python wheels (nvidia-cublas), if any: cublas.cc opens it at run time.
# Every nvidia/*/lib folder goes on the library path (cuBLAS needs cublasLt and may need the runtime).
cublas=""
for d in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
  [ -d "$d/nvidia" ] || continue
  cublas="$(find "$d/nvidia" -name 'libcublas.so.1[0-9]*' 2>/dev/null | sort | head -1)"
  [ -z "$cublas" ] && continue
  for l in $(find "$d/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u); do LD_LIBRARY_PATH="$l${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
  export LD_LIBRARY_PATH
  break
done
echo "- cuBLAS: ${cublas:-none found (own GEMM kernel)}" >>"$report"

# --- build ---------------------------------------------------------------------------------------
t0=$(date +%s)
export CUDA_ARCH="-gencode=arch=compute_$cc,code=sm_$cc"
hb=/tmp/lora-harness; mkdir -p "$hb"
( [ -n "$rehearse" ] && exit 1; nvcc -O3 -std=c++17 $CUDA_ARCH native/src/cuda/kernels.cu native/src/cuda/cublas.cc native/cuda-harness/main.cc -o "$hb/harness" -ldl -lpthread -lrt >"$hb/build.log" 2>&1 ) &
hpid=$!
bash native/build-direct.sh "$root/native/build/Release" >>"$log" 2>&1; brc=$?
wait $hpid; hrc=$?
sec "Build"
echo "- addons (native/build-direct.sh, sm_$cc): $([ $brc = 0 ] && echo built || echo FAILED), harness: $([ $hrc = 0 ] && echo built || echo FAILED), $(( $(date +%s) - t0 )) s" >>"$report"
if [ "$brc" != 0 ]; then tail -30 native/build/build.log | tee -a "$report" >&2; say "addon build failed"; exit 3; fi
"$node" -e 'import("./dist/linalg/native.js").then(n=>{for (const p of [n.probeCpu(), n.probeCuda()]) console.log("- " + (p.ok ? p.backend.name + ": " + p.backend.detail : "unavailable: " + p.reason))})' >>"$report" 2>&1

# --- parity --------------------------------------------------------------------------------------
rc=0
sec "Parity"
if [ "$hrc" = 0 ]; then
  timeout 120 "$hb/harness" --no-bench --out "$out/harness.md" >>"$log" 2>&1; h=$?
  echo "- kernel harness (native/cuda-harness, float64 CPU references): exit $h $( [ $h = 0 ] && echo '(all cases pass)')" >>"$report"
  [ $h = 0 ] || rc=1
fi
t0=$(date +%s)
timeout 200 "$node" test/run.js linalg/backends linalg/kmeans linalg/randomized-svd linalg/lowrank commands/truncate/fused commands/truncate/svd >"$out/parity.log" 2>&1; p=$?
{ echo "- TS parity tests on js, cpu and cuda (\`node test/run.js linalg/backends linalg/kmeans linalg/randomized-svd linalg/lowrank commands/truncate/fused commands/truncate/svd\`): exit $p, $(( $(date +%s) - t0 )) s"
  grep -E '^ℹ (tests|pass|fail|skipped)' "$out/parity.log" | sed 's/^ℹ /  - /'
  grep -E '^\s*✖' "$out/parity.log" | head -20 | sed 's/^/  /'
  grep -cE 'on cuda|cuda:' "$out/parity.log" | sed 's/^/  - lines naming cuda: /'; } >>"$report"
[ $p = 0 ] || rc=1

# --- benchmarks ----------------------------------------------------------------------------------
if [ -n "$nobench" ]; then say "done in $(( $(date +%s) - t00 )) s (--no-bench), exit $rc"; exit $rc; fi
sec "Benchmarks (bench/gpu.ts)"
timeout $(( 490 - ($(date +%s) - t00) )) "$node" dist/bench/gpu.js --crossover --crossover-out "$out/crossover.json" --out "$out/bench.md" $quick ${rehearse:+--rehearse --cuda-addon "$rehearse"} 2>>"$log"; b=$?
if [ -f "$out/bench.md" ]; then cat "$out/bench.md" >>"$report"; else echo "benchmarks did not finish (exit $b); see gpu-check.log" >>"$report"; tail -20 "$log" >>"$report"; fi
[ $b = 0 ] || rc=1
say "done in $(( $(date +%s) - t00 )) s, exit $rc"
echo >>"$report"; echo "Total $(( $(date +%s) - t00 )) s, exit $rc." >>"$report"
exit $rc
