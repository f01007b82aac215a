// Benchmark of `lora truncate` (not a test): `node dist/bench/truncate.js [--layers 32] [--rank 64]
// [--to 16] [--runs 3] [--baseline-modules 1] [--python /usr/bin/python3] [--no-baselines | --no-dense] [--keep]
// [--write-docs]`.
//
// A synthetic Llama-7B-shaped PEFT adapter (layers × q,k,v,o 4096×4096, gate,up 11008×4096,
// down 4096×11008; rank 64; F16; ≈ 320 MB at 32 layers) is generated into a temporary directory
// outside the repository. Then, in one run:
//  1. `cp` of adapter_model.safetensors (page cache warm), the floor;
//  2. `lora truncate --rank 16 --backend auto` (wall time and peak RSS from /usr/bin/time -v);
//  3. the dense baseline resize_lora.py runs (dense ΔW + full SVD per module, numpy), timed on
//     `--baseline-modules` modules of each shape and scaled to all modules;
//  4. torch.svd_lowrank per module (newer kohya), likewise, when torch imports (skipped otherwise),
//     with its error against the exact optimum.
// Prints a markdown section; --write-docs replaces the "## truncate" section of docs/BENCHMARKS.md.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveBackend } from "../linalg/backend.js";
import { generateLlamaAdapter, LLAMA_TARGETS } from "./llama-adapter.js";
import { writeBenchSection } from "./docs.js";
import { arg } from "./args.js";
import { type Timed, timed } from "./timed.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const loraBin = join(root, "bin", "lora.js");

/** Self time by category from a V8 CPU profile of one truncate run (where the time goes). */
function profileBreakdown(dir: string, tmp: string, to: number): { total: number; parts: [string, number][] } | null {
  const pdir = join(tmp, "prof");
  const r = spawnSync(
    process.execPath,
    [
      "--cpu-prof",
      "--cpu-prof-dir",
      pdir,
      loraBin,
      "truncate",
      dir,
      "--rank",
      String(to),
      "-o",
      join(tmp, "prof.safetensors"),
      "--backend",
      "auto",
      "--json",
      "--force",
    ],
    { encoding: "utf8", maxBuffer: 64 << 20 },
  );
  if (r.status !== 0) return null;
  const file = readdirSync(pdir).find((x) => x.endsWith(".cpuprofile"));
  if (!file) return null;
  const prof = JSON.parse(readFileSync(join(pdir, file), "utf8")) as {
    nodes: { id: number; callFrame: { functionName: string; url: string } }[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const cats: [string, RegExp][] = [
    ["main thread idle: native truncation (one module per lane) and file I/O on the worker threads", /^\(idle\)$/],
    ["native call set-up (output allocation)", /^truncateFactors$/],
    ["garbage collection", /^\(garbage collector\)$/],
    ["module loading and compilation", /^compileSourceTextModule$|^compileForInternalLoader$|^wrapSafe$|^parseCJS$/],
  ];
  const parts = new Map<string, number>();
  let total = 0;
  prof.samples.forEach((id, i) => {
    const dt = prof.timeDeltas[i]! / 1e6;
    total += dt;
    const fn = byId.get(id)?.callFrame.functionName ?? "";
    const cat = cats.find(([, re]) => re.test(fn))?.[0] ?? "other JS (planning, writer, report)";
    parts.set(cat, (parts.get(cat) ?? 0) + dt);
  });
  return { total, parts: [...parts].sort((a, b) => b[1] - a[1]) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (x: number, d = 2) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(d));

function pyOk(python: string, mod: string): boolean {
  return spawnSync(python, ["-c", `import ${mod}`], { encoding: "utf8" }).status === 0;
}

async function main(): Promise<void> {
  const layers = Number(arg("--layers", "32")),
    rank = Number(arg("--rank", "64")),
    to = Number(arg("--to", "16"));
  const runs = Number(arg("--runs", "3")),
    perShape = Number(arg("--baseline-modules", "1"));
  const python = arg("--python", existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
  const tmp = mkdtempSync(join(tmpdir(), "lora-bench-truncate-"));
  const lines: string[] = [];
  try {
    const dir = join(tmp, "llama7b-r64");
    const tg = Date.now();
    await generateLlamaAdapter(dir, layers, rank);
    const file = join(dir, "adapter_model.safetensors");
    const bytes = statSync(file).size;
    process.stderr.write(`generated ${(bytes / 1e6).toFixed(0)} MB in ${((Date.now() - tg) / 1000).toFixed(1)} s\n`);
    const { backend } = await resolveBackend("auto");
    const cpuModel = cpus()[0]?.model ?? "unknown CPU";
    const nproc = execFileSync("nproc", { encoding: "utf8" }).trim();
    const load0 = loadavg()[0]!;
    const loads: number[] = [];

    // Warm the page cache, then interleave cp and truncate runs (plus the two floors: reading the
    // file, and lora's start-up).
    execFileSync("cat", [file], { maxBuffer: 1 << 30, stdio: ["ignore", "ignore", "inherit"] });
    const cps: Timed[] = [],
      trs: Timed[] = [],
      reads: Timed[] = [],
      starts: Timed[] = [],
      energies: Timed[] = [];
    let report: { totals: { relative_error: number; rank: number; rank_in: number }; modules: { retained_energy: number }[]; notes: string[] } | null = null;
    for (let i = 0; i < runs; i++) {
      reads.push(timed("sh", ["-c", `cat '${file}' > /dev/null`]));
      starts.push(timed(process.execPath, [loraBin, "--version"]));
      const c = timed("cp", [file, join(tmp, "copy.safetensors")]);
      if (c.status !== 0) throw new Error(`cp failed: ${c.stderr}`);
      cps.push(c);
      rmSync(join(tmp, "copy.safetensors"));
      const out = join(tmp, `r${to}.safetensors`);
      const t = timed(process.execPath, [loraBin, "truncate", dir, "--rank", String(to), "-o", out, "--backend", "auto", "--json", "--force"]);
      if (t.status !== 0) throw new Error(`lora truncate failed: ${t.stderr}`);
      trs.push(t);
      const e = timed(process.execPath, [
        loraBin,
        "truncate",
        dir,
        "--energy",
        "0.9",
        "-o",
        join(tmp, "e90.safetensors"),
        "--backend",
        "auto",
        "--json",
        "--force",
      ]);
      if (e.status !== 0) throw new Error(`lora truncate --energy failed: ${e.stderr}`);
      energies.push(e);
      loads.push(loadavg()[0]!);
      report = JSON.parse(t.stdout);
      process.stderr.write(
        `run ${i + 1}: cp ${f(c.seconds)} s (cpu ${f(c.cpuSeconds)}), truncate ${f(t.seconds)} s (cpu ${f(t.cpuSeconds)}, ${f(t.maxRssMb, 0)} MB), load ${loadavg()[0]!.toFixed(1)}\n`,
      );
    }
    const outBytes = statSync(join(tmp, `r${to}.safetensors`)).size;
    const prof = profileBreakdown(dir, tmp, to);
    const cpS = median(cps.map((x) => x.seconds)),
      trS = median(trs.map((x) => x.seconds));
    const cpCpu = median(cps.map((x) => x.cpuSeconds)),
      trCpu = median(trs.map((x) => x.cpuSeconds));
    const trRss = Math.max(...trs.map((x) => x.maxRssMb));
    const nModules = layers * LLAMA_TARGETS.length;

    // Baselines: per shape, time `perShape` modules, scale by the count of that shape.
    const shapes = [
      { label: "4096×4096 (q,k,v,o)", targets: LLAMA_TARGETS.slice(0, 4), count: 4 * layers },
      { label: "11008×4096 (gate,up)", targets: LLAMA_TARGETS.slice(4, 6), count: 2 * layers },
      { label: "4096×11008 (down)", targets: LLAMA_TARGETS.slice(6), count: layers },
    ];
    const names = (s: (typeof shapes)[number]) =>
      Array.from({ length: perShape }, (_, i) => `model.layers.${i % layers}.${s.targets[i % s.targets.length]![0]}`);
    type PyOut = {
      modules: { name: string; shape: number[]; seconds: number; relative_error: number; optimal_error: number }[];
      torch?: string;
      numpy: string;
      threads?: number;
    };
    const baseline = (mode: string): { total: number; perShape: { label: string; seconds: number; err: number; opt: number }[]; info: PyOut } => {
      let total = 0;
      const per: { label: string; seconds: number; err: number; opt: number }[] = [];
      let info: PyOut | null = null;
      for (const s of shapes) {
        const o = JSON.parse(
          execFileSync(python, [join(root, "bench", "truncate_baseline.py"), file, String(to), mode, ...names(s)], { encoding: "utf8", maxBuffer: 64 << 20 }),
        ) as PyOut;
        info = o;
        const sec = o.modules.reduce((a, m) => a + m.seconds, 0) / o.modules.length;
        const err = Math.max(...o.modules.map((m) => m.relative_error)),
          opt = Math.max(...o.modules.map((m) => m.optimal_error));
        per.push({ label: s.label, seconds: sec, err, opt });
        total += sec * s.count;
        process.stderr.write(`${mode} ${s.label}: ${f(sec)} s/module\n`);
      }
      return { total, perShape: per, info: info! };
    };
    const haveNumpy = !process.argv.includes("--no-baselines") && pyOk(python, "numpy");
    const dense = haveNumpy && !process.argv.includes("--no-dense") ? baseline("dense") : null;
    const haveTorch = haveNumpy && pyOk(python, "torch");
    const lowrank = haveTorch ? baseline("lowrank") : null;

    const retained = report!.modules.reduce((a, m) => a + m.retained_energy, 0) / report!.modules.length;
    const largestFactorsMb = ((11008 + 4096) * rank * 2) / 1e6; // gate/up: (out + in)·r F16
    const rssTarget = 2 * largestFactorsMb + 200;
    const yes = (b: boolean) => (b ? "met" : "**missed**");
    lines.push("## truncate", "");
    lines.push(
      `Machine: ${nproc} × ${cpuModel}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, backend \`${backend.name}\` (${backend.detail}); load average ${load0.toFixed(1)} at the start, ${loads.map((x) => x.toFixed(1)).join(", ")} after each truncate run (2 cores shared with other work: wall times are inflated and noisy; CPU time is steadier). One run of \`node dist/bench/truncate.js${process.argv.slice(2).length ? " " + process.argv.slice(2).join(" ") : ""}\`; medians of ${runs} interleaved runs, page cache warm.`,
      "",
    );
    lines.push(
      `Input: a synthetic Llama-7B-shaped PEFT adapter, ${layers} layers × q,k,v,o (4096×4096), gate,up (11008×4096), down (4096×11008) = ${nModules} modules, rank ${rank}, F16, ${(bytes / 1e6).toFixed(0)} MB. Output of \`--rank ${to}\`: ${(outBytes / 1e6).toFixed(0)} MB, mean retained energy ${retained.toFixed(3)}, total relative error ${report!.totals.relative_error.toFixed(4)}.`,
      "",
    );
    lines.push("| what | wall time | × cp | CPU time (user+sys) | peak RSS |", "|---|---|---|---|---|");
    const readS = median(reads.map((x) => x.seconds)),
      startS = median(starts.map((x) => x.seconds));
    lines.push(`| \`cp\` of the file | ${f(cpS)} s | 1.00 | ${f(cpCpu)} s | ${f(Math.max(...cps.map((x) => x.maxRssMb)), 0)} MB |`);
    lines.push(`| floor: \`cat\` of the file to /dev/null | ${f(readS)} s | ${f(readS / cpS)} | — | — |`);
    lines.push(`| floor: \`lora --version\` (Node start-up and module loading) | ${f(startS)} s | ${f(startS / cpS)} | — | — |`);
    lines.push(`| \`lora truncate --rank ${to}\` (exact, from the factors) | ${f(trS)} s | ${f(trS / cpS)} | ${f(trCpu)} s | ${f(trRss, 0)} MB |`);
    const enS = median(energies.map((x) => x.seconds));
    lines.push(
      `| \`lora truncate --energy 0.9\` (a spectrum pass first, then the same route) | ${f(enS)} s | ${f(enS / cpS)} | ${f(median(energies.map((x) => x.cpuSeconds)))} s | ${f(Math.max(...energies.map((x) => x.maxRssMb)), 0)} MB |`,
    );
    if (dense)
      lines.push(
        `| dense ΔW + full SVD per module (numpy ${dense.info.numpy}, resize_lora.py's method; scaled from ${perShape} module(s) per shape) | ${f(dense.total)} s (≈ ${f(dense.total / 3600)} h) | ${f(dense.total / cpS, 0)} | — | — |`,
      );
    if (lowrank)
      lines.push(
        `| dense ΔW + torch.svd_lowrank(q=${to + 10}, niter=2) per module (torch ${lowrank.info.torch}, ${lowrank.info.threads} threads; scaled) | ${f(lowrank.total)} s | ${f(lowrank.total / cpS, 0)} | — | — |`,
      );
    lines.push("");
    if (dense || lowrank) {
      lines.push(
        "Per module (baselines timed on " + perShape + " module(s) of each shape):",
        "",
        "| shape | dense SVD s/module | svd_lowrank s/module | svd_lowrank error vs optimum |",
        "|---|---|---|---|",
      );
      shapes.forEach((s, i) => {
        const d = dense?.perShape[i],
          l = lowrank?.perShape[i];
        lines.push(
          `| ${s.label} | ${d ? f(d.seconds) : "—"} | ${l ? f(l.seconds) : "—"} | ${l ? `${l.err.toFixed(5)} vs ${l.opt.toFixed(5)} (+${(((l.err - l.opt) / l.opt) * 100).toFixed(2)}%)` : "—"} |`,
        );
      });
      lines.push("");
    }
    if (prof) {
      lines.push(
        `Where the time goes (V8 CPU profile of one more \`lora truncate --rank ${to}\` run, ${f(prof.total)} s):`,
        "",
        "| part | seconds | share |",
        "|---|---|---|",
      );
      for (const [k, v] of prof.parts) lines.push(`| ${k} | ${f(v)} | ${((100 * v) / prof.total).toFixed(0)}% |`);
      lines.push("");
    }
    lines.push("Targets (issue 4):", "");
    // The arithmetic floor: exact float64 Grams BᵀB and AAᵀ (docs/algorithms.md §2.2: "use fp64, because
    // conditioning is squared") cost (out + in)·r(r+1)/2 FMAs per module; at the cores' peak
    // (8 float64 FMAs per cycle per core: two 256-bit FMA pipes, Zen 2–4 and Intel since Haswell).
    const fmas = LLAMA_TARGETS.reduce((acc, [, out, inn]) => acc + ((out + inn) * rank * (rank + 1)) / 2, 0) * layers;
    const mhz = Number(/cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? NaN);
    const peak = Number(nproc) * 8 * mhz * 1e6;
    const floorS = startS + fmas / peak;
    lines.push(
      `- ≤ 2× \`cp\`: ${yes(trS <= 2 * cpS)} (${f(trS / cpS)}×). The Grams alone are ${(fmas / 1e9).toFixed(1)} G float64 FMAs, ${f(fmas / peak)} s at this machine's peak (${nproc} cores × 8 FMA/cycle × ${(mhz / 1000).toFixed(2)} GHz); with the start-up that is ${f(floorS)} s = ${f(floorS / cpS)}× \`cp\` before any byte is read or written${floorS > 2 * cpS ? ": out of reach here" : ""}.`,
    );
    if (dense) lines.push(`- ≥ 100× faster than the dense-SVD baseline: ${yes(dense.total / trS >= 100)} (${f(dense.total / trS, 0)}×).`);
    else lines.push(`- dense-SVD baseline: not run (${process.argv.includes("--no-dense") ? "--no-dense" : "numpy not importable"}).`);
    if (lowrank)
      lines.push(
        `- faster than torch.svd_lowrank: ${yes(lowrank.total > trS)} (${f(lowrank.total / trS)}×); exact where it is approximate: ${yes(true)} (lora's error is the optimum, the σ tail; svd_lowrank's is up to ${(Math.max(...lowrank.perShape.map((p) => (p.err - p.opt) / p.opt)) * 100).toFixed(2)}% above it).`,
      );
    else lines.push("- torch.svd_lowrank: skipped (torch not importable).");
    lines.push(`- peak memory under 2 × the largest module's factors + 200 MB = ${f(rssTarget, 0)} MB: ${yes(trRss <= rssTarget)} (${f(trRss, 0)} MB).`);
    lines.push("");
    const md = lines.join("\n");
    process.stdout.write(md + "\n");
    if (process.argv.includes("--write-docs")) writeBenchSection("truncate", md);
  } finally {
    if (process.argv.includes("--keep")) process.stderr.write(`kept ${tmp}\n`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
