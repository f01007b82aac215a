// GPU benchmark (not a test), run by bench/gpu-check.sh on a GPU machine: cuda against cpu in one
// run, and `auto` (linalg/native/auto.ts) beside them. `node dist/bench/gpu.js [--out FILE.md]
// [--crossover [--crossover-out FILE.json]] [--layers 32] [--lego-layers 8] [--adapters 32] [--quick]
// [--rehearse --cuda-addon PATH]`.
//  1. --crossover: each routable operation on a ladder of sizes, cpu vs cuda (best of 3 after a
//     warm-up); the crossover is the smallest size from which cuda won at every larger size. Its
//     JSON is the CUDA_CROSSOVER table of linalg/native/auto.ts, and auto below uses it.
//  2. randomized SVD of 4096×11008 (what extract does per weight), float32 and float64, rank 16 and 64.
//  3. lego merge of 32 × r16 adapters (Llama-7B shapes, 8 layers): clustering of every module.
//  4. `lora truncate --rank 16` and `lora inspect` of the Llama-7B-shaped adapter (bench/llama-adapter.ts),
//     --backend cpu / cuda / auto, as whole commands.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { mergeLego } from "../surgery/merge/lego.js";
import type { MergeTerm } from "../surgery/merge/types.js";
import { CUDA_CROSSOVER, probeCpu, probeCuda, routedBackend, type CrossoverTable } from "../linalg/native.js";
import { Rng } from "../linalg/random.js";
import { randomizedSvd } from "../linalg/randomized-svd.js";
import type { FactorDType, LinalgBackend, Mat } from "../linalg/types.js";
import { arg } from "./args.js";
import { generateLlamaAdapter, LLAMA_TARGETS } from "./llama-adapter.js";
import { LEGO_DEFAULTS } from "../commands/merge/methods.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const loraBin = join(root, "bin", "lora.js");
const quick = process.argv.includes("--quick");
// --rehearse: tiny sizes and the addon named by --cuda-addon (the CPU emulation build), to run this
// script end to end on a machine without a GPU before spending GPU time.
const rehearse = process.argv.includes("--rehearse");
const f = (x: number, d = 3) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(d));
const log = (s: string) => process.stderr.write(`gpu bench: ${s}\n`);

async function best(n: number, fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm-up (first cuda call pays context and cuBLAS start-up)
  let b = Infinity;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    b = Math.min(b, (performance.now() - t0) / 1000);
  }
  return b;
}

/** The streamed full-model operations are not in the ladder yet (their crossover stays Infinity: cpu). */
type Op = Exclude<keyof CrossoverTable, "measuredOn" | "mergeWeight" | "weightDelta" | "sketch">;

function rawOf(rng: Rng, n: number, dtype: FactorDType): Uint8Array {
  const v = rng.normals(n, 0.02);
  if (dtype === "F32") return new Uint8Array(Float32Array.from(v).buffer);
  const out = new Uint16Array(n),
    f32 = new Float32Array(1),
    u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < n; i++) {
    f32[0] = v[i]!;
    out[i] = u32[0]! >>> 16;
  } // BF16 by truncation: any bits do
  return new Uint8Array(out.buffer);
}

/** `call` once per lane, side by side, as the commands run modules. */
function lanes(be: LinalgBackend, call: () => Promise<unknown>): Promise<unknown> {
  const all = (n: number) => Promise.all(Array.from({ length: n }, call));
  return be.withLanes ? be.withLanes(all) : all(1);
}

/** One call of `op` at size step `s` (growing), and its size measure (per call). */
function ladder(op: Op, s: number, rng: Rng): { size: number; run: (be: LinalgBackend) => Promise<unknown> } {
  const mat = (r: number, c: number): Mat<Float64Array> => ({ rows: r, cols: c, data: rng.normals(r * c) });
  switch (op) {
    case "gemm": {
      const n = 64 << s;
      const a = mat(n, n),
        b = mat(n, n);
      return { size: n ** 3, run: (be) => be.gemm(a, b) };
    }
    case "qr":
    case "svd": {
      const n = 32 << s;
      const a = mat(4 * n, n);
      return { size: 4 * n * n * n, run: (be) => (op === "qr" ? be.qr(a) : be.svd(a)) };
    }
    case "eigSym": {
      const n = 32 << s;
      const a = mat(n, n);
      return { size: n ** 3, run: (be) => be.eigSym(a) };
    }
    case "kmeansLloyd": {
      const n = 128 << s,
        d = 1024,
        k = 16;
      const x = mat(n, d),
        c = { rows: k, cols: d, data: x.data.slice(0, k * d) };
      return { size: n * d * k, run: (be) => be.kmeansLloyd(x, c, { maxIter: 20, tol: -1 }) };
    }
    case "randomizedSvd": {
      const m = 256 << s,
        n = 2 * m,
        l = 26;
      const a = mat(m, n),
        om = mat(n, l);
      return { size: m * n * l, run: (be) => be.randomizedSvd!(a, om, 2, 16) };
    }
    // The commands run these per module side by side (withLanes): measured so, one call per lane.
    case "factorStats": {
      const n = 1024 << s,
        r = 64;
      const raw = rawOf(rng, n * r, "BF16");
      return { size: n * r, run: (be) => lanes(be, () => be.factorStats!(raw, "BF16", n, r, "gram-cols")) };
    }
    case "truncateFactors":
    case "factorSpectrum": {
      const n = 1024 << s,
        r = 64;
      const B = { raw: rawOf(rng, n * r, "BF16"), dtype: "BF16" as const, rows: n, cols: r },
        A = { raw: rawOf(rng, r * n, "BF16"), dtype: "BF16" as const, rows: r, cols: n };
      return {
        size: 2 * n * r,
        run: (be) =>
          lanes(be, () =>
            op === "factorSpectrum"
              ? be.factorSpectrum!({ B, A, scale: 2 })
              : be.truncateFactors!({ B, A, scale: 2, rank: 16, scaleOut: 2, split: "balanced", outDtype: "BF16" }),
          ),
      };
    }
  }
}

async function crossover(cpu: LinalgBackend, cuda: LinalgBackend, lines: string[]): Promise<CrossoverTable> {
  const steps: Record<Op, number> = rehearse
    ? { gemm: 1, qr: 1, svd: 1, eigSym: 1, kmeansLloyd: 1, randomizedSvd: 1, factorStats: 1, truncateFactors: 1, factorSpectrum: 1 }
    : {
        gemm: quick ? 4 : 6,
        qr: 4,
        svd: 3,
        eigSym: 4,
        kmeansLloyd: quick ? 5 : 8,
        randomizedSvd: quick ? 3 : 5,
        factorStats: 5,
        truncateFactors: 5,
        factorSpectrum: 5,
      };
  const table: CrossoverTable = { ...CUDA_CROSSOVER };
  lines.push(
    "### Crossover (cpu vs cuda per operation and size; best of 3 after a warm-up; factorStats, truncateFactors, factorSpectrum one call per lane, side by side)",
    "",
    "| operation | size measure | cpu s / cuda s at each size (smallest first) | crossover |",
    "|---|---|---|---|",
  );
  for (const op of Object.keys(steps) as Op[]) {
    const rng = new Rng(7);
    const cells: string[] = [];
    let cross = Infinity;
    for (let s = 0; s < steps[op]; s++) {
      const { size, run } = ladder(op, s, rng);
      const tc = await best(3, () => run(cpu)),
        tg = await best(3, () => run(cuda));
      cells.push(`${size.toExponential(1)}: ${f(tc, 4)}/${f(tg, 4)}`);
      if (tg < tc) {
        if (!Number.isFinite(cross)) cross = size;
      } else cross = Infinity;
      log(`crossover ${op} size ${size.toExponential(2)}: cpu ${tc.toFixed(4)} s, cuda ${tg.toFixed(4)} s`);
      if (tc > 20 || tg > 20) break;
    }
    table[op] = cross;
    lines.push(`| ${op} | | ${cells.join("; ")} | ${Number.isFinite(cross) ? cross.toExponential(1) : "∞ (cpu)"} |`);
  }
  lines.push("");
  return table;
}

function legoTerms(layer: number, out: number, inn: number, adapters: number, rank: number): MergeTerm[] {
  const rng = new Rng(1000 + layer * 7 + out + inn);
  return Array.from({ length: adapters }, (_, i) => ({
    input: i,
    scale: 2,
    weight: 1 / adapters,
    A: { rows: rank, cols: inn, data: rng.normals(rank * inn, 1 / Math.sqrt(inn)) },
    B: { rows: out, cols: rank, data: rng.normals(out * rank, 0.02) },
  }));
}

function cli(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [loraBin, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`lora ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const out = arg("--out", "");
  const cpuP = probeCpu(),
    cudaP = rehearse ? probeCuda({ binding: arg("--cuda-addon", "") }) : probeCuda();
  if (!cpuP.ok) throw new Error(`cpu backend unavailable: ${cpuP.reason}`);
  if (!cudaP.ok) throw new Error(`cuda backend unavailable: ${cudaP.reason}`);
  const cpu = cpuP.backend,
    cuda = cudaP.backend;
  const lines = [
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}.`,
    "",
    `- cpu: ${cpu.detail}`,
    `- cuda: ${cuda.detail}`,
    "",
  ];
  let table: CrossoverTable = CUDA_CROSSOVER;
  if (process.argv.includes("--crossover")) {
    table = { ...(await crossover(cpu, cuda, lines)), measuredOn: `${cudaP.backend.detail.split(" (")[0]}, ${new Date().toISOString().slice(0, 10)}` };
    const json = JSON.stringify(table, (_k, v: unknown) => (v === Infinity ? "Infinity" : v), 2);
    lines.push("Measured table (auto below uses it; paste into linalg/native/auto.ts):", "", "```json", json, "```", "");
    const co = arg("--crossover-out", "");
    if (co) writeFileSync(co, json);
  }
  const auto = routedBackend(cpu, () => cuda, table);
  const bes: [string, LinalgBackend][] = [
    ["cpu", cpu],
    ["cuda", cuda],
    ["auto", auto],
  ];

  // Randomized SVD of 4096×11008.
  lines.push(
    "### Randomized SVD of a 4096×11008 matrix (oversampling 10, 2 power iterations; best of 3)",
    "",
    "| element type, rank | cpu (s) | cuda (s) | auto (s) | cuda × faster | max σ difference cuda vs cpu / σ₁ |",
    "|---|---|---|---|---|---|",
  );
  const [rows, cols] = rehearse ? [128, 344] : [4096, 11008];
  for (const [f32, t] of [
    [true, 16],
    [false, 16],
    [true, 64],
  ] as const) {
    const rng = new Rng(11);
    const data = rng.normals(rows * cols);
    const m = { rows, cols, data: f32 ? Float32Array.from(data) : data } as Mat<Float64Array>;
    const times: number[] = [];
    const sig: Float64Array[] = [];
    for (const [, be] of bes) {
      let last = new Float64Array(0);
      times.push(
        await best(quick ? 1 : 3, async () => {
          last = Float64Array.from((await randomizedSvd(be, m, t, { seed: 3 })).S);
        }),
      );
      sig.push(last);
    }
    const dev = Math.max(...Array.from(sig[0]!, (v, i) => Math.abs(v - sig[1]![i]!))) / sig[0]![0]!;
    lines.push(
      `| ${f32 ? "float32" : "float64"}, ${t} | ${f(times[0]!)} | ${f(times[1]!)} | ${f(times[2]!)} | ${f(times[0]! / times[1]!, 1)} | ${dev.toExponential(1)} |`,
    );
    log(`rsvd ${f32 ? "f32" : "f64"} t=${t}: ${times.map((x) => x.toFixed(3)).join(" / ")}`);
  }
  lines.push("");

  // lego: 32 × r16, Llama-7B shapes, 8 layers.
  const adapters = Number(arg("--adapters", rehearse ? "2" : "32")),
    legoLayers = Number(arg("--lego-layers", quick || rehearse ? "1" : "8"));
  lines.push(
    `### lego merge of ${adapters} × r16 adapters (Llama-7B shapes, ${legoLayers} layers = ${legoLayers * 7} modules): clustering + reweighting of every module`,
    "",
    "| backend | seconds | Σ k-means inertia |",
    "|---|---|---|",
  );
  const legoT: number[] = [];
  for (const [name, be] of bes) {
    let secs = 0,
      inertia = 0;
    for (let l = 0; l < legoLayers; l++)
      for (const [, o, i] of rehearse ? [["", 64, 64] as const] : LLAMA_TARGETS) {
        const terms = legoTerms(l, o, i, adapters, 16);
        const t0 = performance.now();
        const r = await mergeLego(be, terms, { k: 16, seed: 0, ...LEGO_DEFAULTS });
        secs += (performance.now() - t0) / 1000;
        inertia += r.details.inertia;
      }
    legoT.push(secs);
    lines.push(`| ${name} | ${f(secs)} | ${inertia.toFixed(6)} |`);
    log(`lego ${name}: ${secs.toFixed(2)} s`);
  }
  lines.push("", `cuda × faster than cpu: ${f(legoT[0]! / legoT[1]!, 1)}; auto: ${f(legoT[0]! / legoT[2]!, 2)}.`, "");

  // truncate and inspect of the Llama-7B-shaped adapter, whole commands.
  const layers = Number(arg("--layers", rehearse ? "1" : quick ? "4" : "32"));
  const tmp = mkdtempSync(join(tmpdir(), "lora-gpu-bench-"));
  try {
    const dir = join(tmp, "in");
    await generateLlamaAdapter(dir, layers, 64);
    lines.push(
      `### truncate and inspect of the Llama-7B-shaped adapter (${layers} layers, rank 64, F16; whole commands, best of 3)`,
      "",
      "| command | cpu (s) | cuda (s) | auto (s) |",
      "|---|---|---|---|",
    );
    for (const [what, args] of [
      ["truncate --rank 16", ["truncate", dir, "--rank", "16", "--json", "--force"]],
      ["inspect", ["inspect", dir, "--json"]],
    ] as const) {
      const row: number[] = [];
      for (const b of rehearse ? ["cpu", "cpu", "cpu"] : ["cpu", "cuda", "auto"]) {
        const a = [...args, "--backend", b];
        const o = what.startsWith("truncate") ? ["-o", join(tmp, `out-${b}.safetensors`)] : [];
        cli([...a, ...o]);
        row.push(Math.min(cli([...a, ...o]), cli([...a, ...o]), quick ? Infinity : cli([...a, ...o])));
      }
      lines.push(`| \`lora ${what}\` | ${f(row[0]!)} | ${f(row[1]!)} | ${f(row[2]!)} |`);
      log(`${what}: ${row.map((x) => x.toFixed(2)).join(" / ")}`);
    }
    lines.push("");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const md = lines.join("\n");
  process.stdout.write(md + "\n");
  if (out) writeFileSync(out, md + "\n");
}

main().catch((e: unknown) => {
  process.stderr.write(`gpu bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
