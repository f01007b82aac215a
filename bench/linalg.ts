// Benchmark of the linear-algebra backends against numpy on the same machine, in the same run
// (not a test):
//   node dist/bench/linalg.js [--rounds 2] [--runs 5] [--python python3] [--write-docs]
//
// Sizes are the issue's targets: thin QR 4096×64, SVD 256×256, k-means 1024 points × 8192 dims
// with k = 64 (Lloyd, 20 iterations from the same initial centroids); plus GEMM 1024³ and eigSym
// 256 for the record. The inputs are generated here (seeded) and written to a temporary
// directory, so numpy (bench/linalg_numpy.py, run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
// python3 …` so that our kernel choice does not leak into it) times the same data. Every case
// runs numpy then each backend, round after round (so load drift hits both sides alike); every figure is the best over all rounds of the best of
// --runs runs after a warm-up (the js backend gets one run on the slow cases). Prints a markdown
// section; --write-docs replaces the "## Linear algebra backends" section of docs/BENCHMARKS.md
// (creating the file if needed) and leaves the other sections alone.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveBackend } from "../linalg/backend.js";
import { probeCpu, probeCuda } from "../linalg/native.js";
import type { FloatArray, LinalgBackend, Mat } from "../linalg/types.js";
import { writeBenchSection } from "./docs.js";
import { Rng } from "../linalg/random.js";
import { arg } from "./args.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = existsSync(join(here, "..", "package.json")) ? join(here, "..") : join(here, "..", "..");
const SECTION = "## Linear algebra backends";

const ROUNDS = Number(arg("--rounds", "2"));
const RUNS = Number(arg("--runs", "5"));
// Thread counts to measure numpy and the cpu backend at ("all" = every core). Single-threaded
// figures are far less disturbed when other jobs share the machine.
const THREADS = [
  ...new Set(
    arg("--threads", "all,1")
      .split(",")
      .map((t) => (t === "all" ? availableParallelism() : Number(t))),
  ),
];
const PYTHON = arg("--python", "python3");

// ---- data ----------------------------------------------------------------------------------

type Op = "gemm" | "qr" | "svd" | "eigSym" | "kmeans";
interface Case {
  id: string;
  op: Op;
  dtype: "f32" | "f64";
  label: string;
  size: string;
  target?: string; // the issue's target for the cpu backend
  a: Mat;
  b?: Mat;
  iters?: number;
  jsRuns: number;
}

function gaussian(rng: Rng, rows: number, cols: number, dt: "f32" | "f64"): Mat {
  const d = dt === "f32" ? new Float32Array(rows * cols) : new Float64Array(rows * cols);
  for (let i = 0; i < d.length; i++) d[i] = rng.normal();
  return { rows, cols, data: d };
}

function symmetric(rng: Rng, n: number, dt: "f32" | "f64"): Mat {
  const g = gaussian(rng, n, n, "f64");
  const d = dt === "f32" ? new Float32Array(n * n) : new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) d[i * n + j] = (g.data[i * n + j]! + g.data[j * n + i]!) / 2;
  return { rows: n, cols: n, data: d };
}

function blobs(rng: Rng, n: number, dim: number, centres: number): Mat {
  const mu = gaussian(rng, centres, dim, "f64");
  const x = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(rng.uniform() * centres);
    for (let j = 0; j < dim; j++) x[i * dim + j] = 0.5 * mu.data[c * dim + j]! + rng.normal();
  }
  return { rows: n, cols: dim, data: x };
}

function makeCases(): Case[] {
  const rng = new Rng(20261128);
  const cs: Case[] = [];
  for (const dt of ["f32", "f64"] as const) {
    cs.push({
      id: `gemm-${dt}`,
      op: "gemm",
      dtype: dt,
      label: "GEMM",
      size: "1024×1024 · 1024×1024",
      a: gaussian(rng, 1024, 1024, dt),
      b: gaussian(rng, 1024, 1024, dt),
      jsRuns: 1,
    });
  }
  for (const dt of ["f32", "f64"] as const) {
    cs.push({ id: `qr-${dt}`, op: "qr", dtype: dt, label: "thin QR", size: "4096×64", target: "≤ 1.5×", a: gaussian(rng, 4096, 64, dt), jsRuns: 3 });
  }
  for (const dt of ["f32", "f64"] as const) {
    cs.push({ id: `svd-${dt}`, op: "svd", dtype: dt, label: "SVD (U, S, Vᵀ)", size: "256×256", target: "≤ 1.5×", a: gaussian(rng, 256, 256, dt), jsRuns: 1 });
  }
  cs.push({ id: "eig-f64", op: "eigSym", dtype: "f64", label: "symmetric eigen", size: "256×256", a: symmetric(rng, 256, "f64"), jsRuns: 1 });
  const x = blobs(rng, 1024, 8192, 64);
  const init: Mat = { rows: 64, cols: 8192, data: (x.data as Float64Array).slice(0, 64 * 8192) };
  cs.push({
    id: "kmeans",
    op: "kmeans",
    dtype: "f64",
    label: "k-means (Lloyd, 20 iterations)",
    size: "1024 × 8192, k = 64",
    target: "≤ 1.5×",
    a: x,
    b: init,
    iters: 20,
    jsRuns: 1,
  });
  return cs;
}

// ---- timing ----------------------------------------------------------------------------------

async function runOp(be: LinalgBackend, c: Case): Promise<unknown> {
  switch (c.op) {
    case "gemm":
      return be.gemm(c.a, c.b!);
    case "qr":
      return be.qr(c.a);
    case "svd":
      return be.svd(c.a);
    case "eigSym":
      return be.eigSym(c.a);
    case "kmeans":
      return be.kmeansLloyd(c.a as Mat<Float64Array>, c.b as Mat<Float64Array>, { maxIter: c.iters!, tol: -1 });
  }
}

async function time(be: LinalgBackend, c: Case, runs: number): Promise<{ best: number; out: unknown }> {
  const out = await runOp(be, c); // warm-up
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await runOp(be, c);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { best, out };
}

function writeRaw(dir: string, name: string, data: FloatArray): string {
  writeFileSync(join(dir, name), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return name;
}

interface NumpyOut {
  config: Record<string, unknown>;
  results: Record<string, number>;
  checks: Record<string, { inertia: number; labels: number[] }>;
}

function runNumpy(dir: string, id: string, threads: number): NumpyOut | string {
  const out = join(dir, "numpy-out.json");
  const r = spawnSync(
    "env",
    [
      "-u",
      "OPENBLAS_CORETYPE",
      "-u",
      "OPENBLAS_L2_SIZE",
      `OPENBLAS_NUM_THREADS=${threads}`,
      PYTHON,
      join(root, "bench", "linalg_numpy.py"),
      join(dir, "spec.json"),
      out,
      id,
    ],
    {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 256 * 1024 * 1024,
    },
  );
  if (r.status !== 0) return `numpy run failed: ${(r.stderr || r.error?.message || "").trim().split("\n").slice(-3).join(" ")}`;
  return JSON.parse(readFileSync(out, "utf8")) as NumpyOut;
}

function fmt(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return "—";
  return s >= 1 ? `${s.toFixed(2)} s` : `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) ? `${(a / b).toFixed(2)}×` : "—";
}

async function main(): Promise<void> {
  const loadBefore = loadavg()[0]!;
  const cases = makeCases();
  const dir = mkdtempSync(join(tmpdir(), "lora-bench-linalg-"));
  try {
    const spec = {
      cases: cases.map((c) => ({
        id: c.id,
        op: c.op,
        dtype: c.dtype,
        runs: RUNS,
        iters: c.iters,
        a: writeRaw(dir, `${c.id}-a.bin`, c.a.data),
        aShape: [c.a.rows, c.a.cols],
        b: c.b ? writeRaw(dir, `${c.id}-b.bin`, c.b.data) : undefined,
        bShape: c.b ? [c.b.rows, c.b.cols] : undefined,
      })),
    };
    writeFileSync(join(dir, "spec.json"), JSON.stringify(spec));

    const backends: LinalgBackend[] = [(await resolveBackend("js")).backend];
    const missing: Record<string, string> = {};
    const cpu = probeCpu();
    if (cpu.ok) backends.push(cpu.backend);
    else missing.cpu = cpu.reason;
    const cuda = probeCuda();
    if (cuda.ok) backends.push(cuda.backend);
    else missing.cuda = cuda.reason;

    // best[side][case id], side = "numpy@T", "cpu@T" (T threads), "js", "cuda".
    const best: Record<string, Record<string, number>> = {};
    const put = (side: string, id: string, v: number) => {
      best[side] ??= {};
      best[side]![id] = Math.min(best[side]![id] ?? Infinity, v);
    };
    const npConfig: Record<number, Record<string, unknown>> = {};
    const npChecks: NumpyOut["checks"] = {};
    const outs: Record<string, unknown> = {};
    const cpuDetails: Record<number, string> = {};
    // Interleaved per case: numpy, then each backend, so that load drift hits both sides alike.
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of cases) {
        for (const t of THREADS) {
          process.stderr.write(`round ${round + 1}/${ROUNDS} ${c.id} ${t} thread(s): numpy`);
          const np = runNumpy(dir, c.id, t);
          if (typeof np === "string") throw new Error(np);
          npConfig[t] = np.config;
          if (np.checks[c.id]) npChecks[c.id] = np.checks[c.id]!;
          for (const [id, v] of Object.entries(np.results)) put(`numpy@${t}`, id, v);
          for (const be0 of backends) {
            let be = be0;
            let side: string = be.name;
            if (be.name === "cpu") {
              const p = probeCpu({ threads: t });
              if (!p.ok) continue;
              be = p.backend;
              cpuDetails[t] = be.detail;
              side = `cpu@${t}`;
            } else if (t !== THREADS[0] || round > 0) {
              continue; // js (single-threaded, slow, not targeted) and cuda: once
            }
            process.stderr.write(`, ${be.name}`);
            const r = await time(be, c, be.name === "js" ? c.jsRuns : RUNS);
            put(side, c.id, r.best);
            if (c.op === "kmeans" && t === THREADS[0]) outs[be.name] = r.out;
          }
          process.stderr.write("\n");
        }
      }
    }
    probeCpu(); // back to all cores

    // k-means agreement with numpy (same data, same init, same iterations).
    const kmNotes: string[] = [];
    const npk = npChecks.kmeans;
    for (const [name, o] of Object.entries(outs)) {
      const r = o as { labels: Int32Array; inertia: number };
      if (!npk) continue;
      let diff = 0;
      for (let i = 0; i < r.labels.length; i++) if (r.labels[i] !== npk.labels[i]) diff++;
      kmNotes.push(
        `${name}: ${diff} of ${r.labels.length} labels differ from numpy's, inertia relative difference ${(Math.abs(r.inertia - npk.inertia) / npk.inertia).toExponential(1)}`,
      );
    }

    const cpuDetail = cpu.ok
      ? THREADS.map((t) => cpuDetails[t] ?? "")
          .filter(Boolean)
          .join("; ")
      : `not available (${missing.cpu})`;
    const npc = npConfig[THREADS[0]!] ?? {};
    const npBlas = [
      npc.library,
      npc.config ?? npc.version,
      npc.coretype ? `${String(npc.coretype)} kernels` : undefined,
      `threads as reported: ${THREADS.map((t) => String(npConfig[t]?.threads ?? "?")).join(", ")}`,
    ]
      .filter((x) => x !== undefined && x !== "")
      .join(", ");
    const cpuModel = cpus()[0]?.model?.trim() ?? "unknown CPU";
    const load = `load average ${loadBefore.toFixed(1)} before, ${loadavg()[0]!.toFixed(1)} after (other jobs share this machine)`;
    const lines: string[] = [];
    lines.push(SECTION, "");
    lines.push(
      `Machine: ${availableParallelism()} × ${cpuModel}, Node ${process.version}, ${load}. \`node dist/bench/linalg.js --write-docs\`: ${ROUNDS} rounds, interleaved per case (numpy, then each backend), each figure the best over the rounds of the best of ${RUNS} runs after a warm-up (js: one round, 1–3 runs). Same data on both sides (seeded, written to a temporary directory). Threads: ${THREADS.join(" and ")} on both sides (numpy through OPENBLAS_NUM_THREADS, the cpu backend through --threads).`,
      "",
      `- cpu backend: ${cpuDetail}.`,
      `- numpy ${String(npc.numpy ?? "?")}: ${npBlas || "BLAS unknown"}; run as \`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/linalg_numpy.py\`. QR is \`np.linalg.qr(mode="reduced")\`, SVD \`np.linalg.svd(full_matrices=False)\` (gesdd), eigen \`np.linalg.eigh\`, k-means the same Lloyd iteration in numpy (distances by one GEMM, centroid sums by a one-hot GEMM).`,
      `- cuda backend: ${cuda.ok ? cuda.backend.detail : `not measured here (${missing.cuda}). GPU figures are not measured yet; bench/gpu-check.sh runs the CUDA parity table and GPU timings on a GPU machine (see below).`}`,
      "",
      `| operation | size | dtype | threads | numpy | cpu | cpu / numpy | target (cpu) | js | js / numpy |${cuda.ok ? " cuda | cuda / numpy |" : ""}`,
      `|---|---|---|---|---|---|---|---|---|---|${cuda.ok ? "---|---|" : ""}`,
    );
    for (const c of cases) {
      THREADS.forEach((t, ti) => {
        const n = best[`numpy@${t}`]?.[c.id],
          cp = best[`cpu@${t}`]?.[c.id];
        const js = ti === 0 ? best.js?.[c.id] : undefined;
        const met = c.target && cp !== undefined && n !== undefined ? (cp / n <= 1.5 ? "≤ 1.5× — met" : "≤ 1.5× — **not met**") : "—";
        lines.push(
          `| ${c.label} | ${c.size} | ${c.dtype} | ${t} | ${fmt(n)} | ${fmt(cp)} | ${ratio(cp, n)} | ${met} | ${ti === 0 ? fmt(js) : ""} | ${ti === 0 ? ratio(js, best[`numpy@${t}`]?.[c.id]) : ""} |${cuda.ok ? ` ${ti === 0 ? fmt(best.cuda?.[c.id]) : ""} | ${ti === 0 ? ratio(best.cuda?.[c.id], n) : ""} |` : ""}`,
        );
      });
    }
    lines.push("");
    if (kmNotes.length) lines.push(`k-means agreement (same init, 20 iterations): ${kmNotes.join("; ")}.`, "");
    lines.push(
      "The machine was shared with other jobs during the run (load average above): the 1-thread rows are the least disturbed; the 2-thread numpy figures in particular vary a lot between runs. Targets are judged on both.",
      "",
    );
    lines.push(
      "Notes: the js backend is float64 throughout (float32 inputs are widened), so its f32 rows are f64 work. The cpu backend's OpenBLAS is Debian's 0.3.21 with the kernel set chosen from CPU features (OPENBLAS_CORETYPE, set by lora before the library loads unless the user set it); on CPUs that release does not recognise it would otherwise fall back to generic kernels 5–6× slower. On this AMD machine 0.3.21 itself picks Cooperlake (the same AVX-512 GEMM kernels), so the override changes little here.",
      "",
      "GPU: not measured yet — no GPU was available where this table was made. The CUDA kernels compile here (nvcc 13.0, sm_80/sm_90 + PTX) and their parity table passes under the CPU emulation of native/cuda-harness (`bash native/cuda-harness/run-emu.sh`; also through the Node addon: `LORA_TEST_CUDA_ADDON=… node test/run.js backends`). On a GPU machine, `bash bench/gpu-check.sh` builds the standalone harness, runs the parity table on the GPU and times GEMM, k-means (2²⁰ points × 1024 dims, k = 1024) and a randomized SVD (32768 × 32768, rank 256) in under 5 minutes; paste its report here.",
      "",
    );
    const md = lines.join("\n");
    process.stdout.write(`${md}\n`);
    if (process.argv.includes("--write-docs")) writeBenchSection(SECTION.replace(/^## /, ""), md);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
