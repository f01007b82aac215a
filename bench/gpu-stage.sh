#!/usr/bin/env bash
# Packs what bench/gpu-check.sh needs on a GPU machine that has no Node, no npm and no network:
# a copy of this checkout's compiled CLI and native sources (<dest>/repo) and, beside it, the Node
# binary, Node-API's headers and BLAS/LAPACK (<dest>/stage), all compressed (≈ 35 MB). On the GPU machine:
#   mkdir -p /tmp/r && tar -C /tmp/r -xJf <dest>/stage/repo.tar.xz && LORA_GPU_STAGE=<dest>/stage bash /tmp/r/bench/gpu-check.sh
# Build first (npx tsc -p .). Usage: bash bench/gpu-stage.sh <dest>
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: gpu-stage.sh <dest>}"
rm -rf "$dest/repo"
mkdir -p "$dest/repo" "$dest/stage"
cd "$root"
# The compiled CLI, tests and benches, the native sources and scripts, fixtures for the tests.
cp -r dist bin fixtures package.json "$dest/repo/"
mkdir -p "$dest/repo/native" "$dest/repo/bench" "$dest/repo/test"
cp -r native/src native/cuda-harness native/build-direct.sh "$dest/repo/native/"
cp bench/gpu-check.sh "$dest/repo/bench/"
cp test/run.js "$dest/repo/test/"
# Run-time packages of the commands, tests and benches it runs (not the dev tools: typescript, biome, …).
keep=(commander chalk ora ink react react-reconciler scheduler ml-matrix node-addon-api)
mods="$(node -e '
  const fs = require("fs"), path = require("path"), seen = new Set();
  const visit = (n) => { if (seen.has(n)) return; const d = path.join("node_modules", n, "package.json"); if (!fs.existsSync(d)) return;
    seen.add(n); const p = JSON.parse(fs.readFileSync(d, "utf8")); for (const k of Object.keys(p.dependencies || {})) visit(k); };
  for (const n of process.argv.slice(1)) visit(n); console.log([...seen].join(" "));' "${keep[@]}")"
mkdir -p "$dest/repo/node_modules"
for m in $mods; do mkdir -p "$dest/repo/node_modules/$(dirname "$m")"; cp -rL "node_modules/$m" "$dest/repo/node_modules/$m"; done
# Node, Node-API headers, OpenBLAS (+ its Fortran runtime), compressed.
[ -f "$dest/stage/node.xz" ] || xz -T2 -6 -c "$(command -v node)" >"$dest/stage/node.xz"
tmp="$(mktemp -d)"
mkdir -p "$tmp/lib" "$tmp/include"
cp /usr/include/node/{node_api.h,node_api_types.h,js_native_api.h,js_native_api_types.h} "$tmp/include/"
for l in /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 /lib/x86_64-linux-gnu/libgfortran.so.5 /lib/x86_64-linux-gnu/libquadmath.so.0; do
  cp -L "$l" "$tmp/lib/"
done
tar -C "$tmp" -cJf "$dest/stage/libs.tar.xz" lib include
rm -rf "$tmp"
tar -C "$dest/repo" -cJf "$dest/stage/repo.tar.xz" .
rm -rf "$dest/repo"
du -sh "$dest/stage"/*
