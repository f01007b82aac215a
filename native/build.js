#!/usr/bin/env node
// The npm `install` script: builds the native addons with node-gyp and NEVER fails the install.
//   lora_cpu.node   always attempted (needs a C++ toolchain; BLAS/LAPACK is opened at run time,
//                   so it builds without one)
//   lora_cuda.node  attempted only when nvcc exists (CUDA_HOME, CUDA_PATH, /usr/local/cuda or PATH)
// On failure it prints one line saying why, and native/build/status.json records
//   {"cpu": {"built": bool, "reason": "…"}, "cuda": {"built": bool, "reason": "…"}}
// which `lora backends` reports. Full compiler output goes to native/build/build.log.
//
//   node native/build.js [--verbose]
// Environment: LORA_SKIP_NATIVE=1 builds nothing; LORA_CUDA=0 skips the CUDA addon;
// CUDA_HOME picks the toolkit. Node headers come from nodedir (~/.npmrc nodedir=/usr here);
// --nodedir=/usr is passed when /usr/include/node exists, so nothing is downloaded.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const buildDir = join(here, "build");
const logFile = join(buildDir, "build.log");
const verbose = process.argv.includes("--verbose");
const status = {
  cpu: { built: false, reason: "not attempted" },
  cuda: { built: false, reason: "not attempted" },
};
let log = "";

function say(line) {
  process.stderr.write(`lora native: ${line}\n`);
}

function run(args, env) {
  const r = spawnSync(process.execPath, args, {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    timeout: 15 * 60 * 1000,
  });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  log += `\n$ node ${args.join(" ")}\n${out}`;
  if (verbose) process.stdout.write(out);
  return { ok: r.status === 0, out, error: r.error };
}

// The first line that says what went wrong, shortened: a compiler error, then a missing tool,
// then make's failing target, then node-gyp's own error.
function firstError(out, fallback) {
  const lines = out
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const pick =
    lines.find((l) => /(fatal )?error:/.test(l) && !/^gyp /.test(l)) ??
    lines.find((l) => /not found|No such file|cannot find|command not found|find Python/i.test(l) && !/^gyp info/.test(l)) ??
    lines.find((l) => /^make: \*\*\*/.test(l)) ??
    lines.find((l) => /^gyp ERR! (stack )?Error:/.test(l)) ??
    lines.find((l) => /^gyp ERR!/.test(l) && !/not ok|cwd|node -v|node-gyp -v|System|command/.test(l));
  const s = (pick ?? fallback).replace(/^gyp ERR! (stack )?/, "");
  return s.length > 240 ? `${s.slice(0, 237)}…` : s;
}

function findNvcc() {
  if (process.env.LORA_CUDA === "0") return { reason: "skipped (LORA_CUDA=0)" };
  const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH, "/usr/local/cuda"].filter(Boolean);
  for (const h of homes) if (existsSync(join(h, "bin", "nvcc"))) return { home: h };
  const w = spawnSync("sh", ["-c", "command -v nvcc"], { encoding: "utf8" });
  const p = (w.stdout ?? "").trim();
  if (w.status === 0 && p) {
    // A wrapper script (as /usr/local/bin/nvcc here) or a symlink: find the toolkit beside it.
    let real = p;
    try {
      real = realpathSync(p);
    } catch {
      /* keep p */
    }
    const h = dirname(dirname(real));
    if (existsSync(join(h, "include", "cuda_runtime.h"))) return { home: h };
    for (const c of ["/usr/local/cuda", "/usr/lib/cuda", "/usr"]) {
      if (existsSync(join(c, "include", "cuda_runtime.h")) && existsSync(join(c, "bin", "nvcc"))) return { home: c };
    }
    return { reason: `nvcc found at ${p} but not the CUDA headers beside it (set CUDA_HOME)` };
  }
  return { reason: "nvcc not found (no CUDA toolkit; set CUDA_HOME to build the CUDA addon)" };
}

function cudaLibDir(home) {
  for (const d of ["lib64", "lib", "lib/x86_64-linux-gnu", "targets/x86_64-linux/lib"]) {
    if (existsSync(join(home, d, "libcudart_static.a"))) return join(home, d);
  }
  return undefined;
}

// Loads a built addon in a child process (a crash there cannot take the install down).
function tryLoad(file, call) {
  const r = spawnSync(process.execPath, ["-e", `const a=require(${JSON.stringify(file)});process.stdout.write(JSON.stringify(a.${call}()))`], {
    encoding: "utf8",
    timeout: 60 * 1000,
  });
  if (r.status !== 0) return { ok: false, why: firstError(`${r.stderr}`, `loading ${file} failed`) };
  try {
    return { ok: true, info: JSON.parse(r.stdout) };
  } catch {
    return { ok: false, why: `loading ${file} printed no result` };
  }
}

/**
 * After node-gyp ran for one addon: its status (built, or why not) and the line to print.
 * `failed`: the error to name when the build log has none, and what to add to a failed build's
 * line; `describe` words what the loaded addon reported.
 */
function checkBuilt(kind, res, file, mode, failed, describe) {
  if (!res.ok || !existsSync(file)) {
    const reason = `build failed: ${firstError(res.out, failed.fallback)}`;
    return { status: { built: false, reason }, line: `${kind} addon NOT built (${reason})${failed.tail}` };
  }
  const l = tryLoad(file, mode);
  if (!l.ok) return { status: { built: false, reason: `built but does not load: ${l.why}` }, line: `${kind} addon built but does not load (${l.why})` };
  return { status: { built: true, reason: "" }, line: describe(l.info) };
}

function writeStatus() {
  try {
    mkdirSync(buildDir, { recursive: true });
    writeFileSync(join(buildDir, "status.json"), `${JSON.stringify(status, null, 2)}\n`);
    writeFileSync(logFile, log);
  } catch {
    /* never fail the install */
  }
}

function main() {
  if (process.env.LORA_SKIP_NATIVE === "1") {
    status.cpu.reason = status.cuda.reason = "skipped (LORA_SKIP_NATIVE=1)";
    say("skipped (LORA_SKIP_NATIVE=1); the js backend will be used");
    return;
  }
  let gyp;
  try {
    gyp = createRequire(join(root, "package.json")).resolve("node-gyp/bin/node-gyp.js");
  } catch {
    status.cpu.reason = status.cuda.reason = "node-gyp is not installed (npm install without dependencies?)";
    say(`not built: ${status.cpu.reason}; the js backend will be used`);
    return;
  }
  const common = ["--directory", "native"];
  if (existsSync("/usr/include/node/node_api.h")) common.push("--nodedir=/usr");
  if (!verbose) common.push("--loglevel=warn");

  // 1. The CPU addon, from clean.
  // (configure and build run separately: node-gyp would hand the -D gyp defines to make too.)
  run([gyp, "clean", ...common]);
  let cpu = run([gyp, "configure", ...common, "--", "-Dwith_cuda=0"]);
  if (cpu.ok) cpu = run([gyp, "build", ...common]);
  const cpuFile = join(buildDir, "Release", "lora_cpu.node");
  const cpuFailed = { fallback: cpu.error ? String(cpu.error) : "node-gyp failed", tail: "; the js backend will be used — see native/build/build.log" };
  const cpuCheck = checkBuilt("cpu", cpu, cpuFile, "info", cpuFailed, (i) =>
    i.loaded
      ? `cpu addon built (${String(i.vendor).split(" ").slice(0, 2).join(" ")}, ${i.corename || "?"} kernels, ${i.threads} threads)`
      : `cpu addon built, but no BLAS/LAPACK at run time (${i.error}); apt-get install libopenblas0-pthread`,
  );
  status.cpu = cpuCheck.status;
  const cpuLine = cpuCheck.line;

  // 2. The CUDA addon, when nvcc exists. The CPU target is already built and stays as it is.
  let cudaLine;
  const nv = findNvcc();
  if (!nv.home) {
    status.cuda.reason = nv.reason;
    cudaLine = `cuda addon not built: ${nv.reason}`;
  } else if (!status.cpu.built && !existsSync(cpuFile)) {
    status.cuda.reason = "skipped: the C++ build itself failed (see the cpu reason)";
    cudaLine = `cuda addon not built (${status.cuda.reason})`;
  } else {
    const lib = cudaLibDir(nv.home);
    if (!lib) {
      status.cuda.reason = `libcudart_static.a not found under ${nv.home}`;
      cudaLine = `cuda addon not built: ${status.cuda.reason}`;
    } else {
      let cu = run([gyp, "configure", ...common, "--", "-Dwith_cuda=1", `-Dcuda_home=${nv.home}`, `-Dcuda_lib=${lib}`]);
      if (cu.ok) cu = run([gyp, "build", ...common]);
      const cudaFile = join(buildDir, "Release", "lora_cuda.node");
      const cudaCheck = checkBuilt("cuda", cu, cudaFile, "probe", { fallback: "node-gyp failed", tail: "" }, (i) =>
        i.deviceCount > 0 && i.error === 0 ? `cuda addon built (${i.device})` : `cuda addon built (no GPU here: ${i.errorString})`,
      );
      status.cuda = cudaCheck.status;
      cudaLine = cudaCheck.line;
    }
  }
  say(`${cpuLine}; ${cudaLine}`);
}

try {
  main();
} catch (e) {
  status.cpu.reason = status.cpu.built ? status.cpu.reason : `build script error: ${e instanceof Error ? e.message : String(e)}`;
  say(`native build skipped after an error (${e instanceof Error ? e.message : String(e)}); the js backend will be used`);
}
writeStatus();
process.exit(0);
