// Benchmark (not a test): `lora truncate --rank 16` of a generated Flux-shaped LoKr file and of an
// SDXL-shaped LoHa file, against the route the usual tools take (dense ΔW by LyCORIS's formula +
// full SVD per module, numpy float32: bench/lycoris_dense.py), one run, side by side. The dense
// route is timed on one module of each shape and scaled by the count of that shape. Writes the
// "LyCORIS truncate" section of docs/BENCHMARKS.md with --write-docs.
// usage: node dist/bench/lycoris.js [--flux-blocks N] [--sdxl-blocks N] [--write-docs]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Rng } from "../linalg/random.js";
import { type LySpec, lycorisFile } from "../test/lycoris-files.js";
import { loraBin } from "../test/paths.js";
import { arg } from "./args.js";
import { writeBenchSection } from "./docs.js";
import { timed } from "./timed.js";

const fluxBlocks = Number(arg("--flux-blocks", "19"));
const sdxlBlocks = Number(arg("--sdxl-blocks", "10"));
const writeDocs = process.argv.includes("--write-docs");
const RANK = 16;

/** Flux LoKr as SimpleTuner's default LyCORIS config trains it: factor 16, full-matrix mode (w1 [16,16], w2 full), s = 1. */
function fluxSpecs(): LySpec[] {
  const out: LySpec[] = [];
  const lin = (stem: string, o: number, i: number): LySpec => ({ kind: "lokr", stem, a: 16, b: o / 16, c: 16, d: i / 16, alpha: 1 });
  for (let n = 0; n < fluxBlocks; n++)
    for (const side of ["img", "txt"]) {
      const p = `lora_unet_double_blocks_${n}_${side}`;
      out.push(lin(`${p}_attn_qkv`, 9216, 3072), lin(`${p}_attn_proj`, 3072, 3072), lin(`${p}_mlp_0`, 12288, 3072), lin(`${p}_mlp_2`, 3072, 12288));
    }
  return out;
}

/** SDXL LoHa (dim 8, alpha 4) on the attention and feed-forward modules of `sdxlBlocks` transformer blocks (640 and 1280 wide). */
function sdxlSpecs(): LySpec[] {
  const out: LySpec[] = [];
  for (let n = 0; n < sdxlBlocks; n++) {
    const w = n < 4 ? 640 : 1280;
    const p = `lora_unet_${n < 4 ? "input_blocks_4" : "middle_block"}_1_transformer_blocks_${n}`;
    const m = (stem: string, o: number, i: number): LySpec => ({ kind: "loha", stem: `${p}_${stem}`, out: o, in: i, r1: 8, r2: 8, alpha: 4 });
    out.push(
      m("attn1_to_q", w, w),
      m("attn1_to_k", w, w),
      m("attn1_to_v", w, w),
      m("attn1_to_out_0", w, w),
      m("attn2_to_q", w, w),
      m("attn2_to_k", w, 2048),
      m("attn2_to_v", w, 2048),
      m("attn2_to_out_0", w, w),
      m("ff_net_0_proj", 8 * w, w),
      m("ff_net_2", w, 4 * w),
    );
  }
  return out;
}

const shapeOf = (s: LySpec) => (s.kind === "lokr" ? `${s.a * s.b}×${s.c * s.d}` : s.kind === "loha" ? `${s.out}×${s.in}` : "?");

interface Row {
  name: string;
  modules: number;
  ours: number;
  oursErr: number;
  dense: number;
  denseErr: number;
  sample: number;
}

async function run(name: string, specs: LySpec[], dtype: "BF16" | "F16", dir: string): Promise<Row> {
  const { bytes } = await lycorisFile(new Rng(1), specs, dtype, { ss_network_module: "lycoris.kohya" }, { dense: false });
  const file = join(dir, `${name}.safetensors`);
  writeFileSync(file, bytes);
  process.stderr.write(`${name}: ${specs.length} modules, ${(statSync(file).size / 2 ** 20).toFixed(0)} MiB\n`);
  const out = join(dir, `${name}-r${RANK}.safetensors`);
  const t = timed(process.execPath, [loraBin, "truncate", file, "--rank", String(RANK), "-o", out, "--json", "--force"]);
  if (t.status !== 0) throw new Error(t.stderr);
  const rep = JSON.parse(t.stdout) as { modules: { name: string; relative_error: number }[] };
  const oursErr = new Map(rep.modules.map((m) => [m.name, m.relative_error]));
  // Dense route: one module of each shape, scaled by the count of that shape.
  const byShape = new Map<string, LySpec[]>();
  for (const s of specs) byShape.set(shapeOf(s), [...(byShape.get(shapeOf(s)) ?? []), s]);
  const sample = [...byShape.values()].map((v) => v[0]!.stem);
  const r = spawnSync("python3", [join(import.meta.dirname, "..", "..", "bench", "lycoris_dense.py"), file, String(RANK), ...sample], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(r.stderr);
  const dense = JSON.parse(r.stdout) as Record<string, { seconds: number; relative_error: number }>;
  let denseSec = 0,
    worst = 0,
    worstDense = 0;
  for (const v of byShape.values()) {
    const d = dense[v[0]!.stem]!;
    denseSec += d.seconds * v.length;
    worst = Math.max(worst, Math.abs(oursErr.get(v[0]!.stem)! - d.relative_error));
    worstDense = Math.max(worstDense, d.relative_error);
  }
  process.stderr.write(`${name}: ours ${t.seconds.toFixed(1)} s, dense ${denseSec.toFixed(1)} s (scaled), max |Δ rel. error| ${worst.toExponential(2)}\n`);
  return { name, modules: specs.length, ours: t.seconds, oursErr: worst, dense: denseSec, denseErr: worstDense, sample: sample.length };
}

const dir = mkdtempSync(join(tmpdir(), "lora-bench-lycoris-"));
try {
  const rows = [await run("flux-lokr", fluxSpecs(), "BF16", dir), await run("sdxl-loha", sdxlSpecs(), "F16", dir)];
  const np = spawnSync("python3", ["-c", "import numpy; print(numpy.__version__)"], { encoding: "utf8" }).stdout.trim();
  const md = [
    "## LyCORIS truncate",
    "",
    `\`lora truncate --rank ${RANK}\` (default backend, one run, whole command) against the usual tools' route: dense ΔW by LyCORIS's formula in float32 and a full SVD per module (numpy ${np}, bench/lycoris_dense.py), timed on one module of each shape and scaled by the count of that shape. Machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"} (shared with other jobs). Generated by \`node dist/bench/lycoris.js --write-docs\` (bench/lycoris.ts).`,
    "",
    "| file | modules | lora truncate | dense ΔW + SVD (scaled) | speed-up | max \\|Δ relative error\\| vs dense | dense relative error (worst) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.name === "flux-lokr" ? `Flux LoKr, factor 16 full-matrix (w1 16×16, w2 full), ${fluxBlocks} double blocks` : `SDXL LoHa dim 8·8, ${sdxlBlocks} transformer blocks`} | ${r.modules} | ${r.ours.toFixed(1)} s | ${r.dense.toFixed(1)} s (${r.sample} shapes timed) | ${(r.dense / r.ours).toFixed(0)}× | ${r.oursErr.toExponential(1)} | ${r.denseErr.toFixed(4)} |`,
    ),
    "",
    "Both routes reach the Eckart–Young optimum (the error columns: ours is from the spectrum tail plus the output rounding; the dense one from its float32 SVD). LoKr: the spectrum and the top-16 Kronecker pairs come from SVDs of the 16×16 and ≤768×192 factors (formats/adapter/lycoris/lokr.ts), never the 3072×12288 ΔW; LoHa: the rank-64 face-splitting factors through the factor route.",
  ].join("\n");
  process.stdout.write(`${md}\n`);
  if (writeDocs) writeBenchSection("LyCORIS truncate", md);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
