// Benchmark of catalog mode (not a test): `node dist/bench/catalog.js [--adapters 2000] [--runs 3]
// [--dir /tmp/lora-bench-catalog] [--write-docs]`.
//
// Generates a catalog of F16 adapters outside the repository (once; reused when present): even
// ones PEFT directories with Llama-7B-shaped q_proj/v_proj of layer 0 (4096×4096), odd ones kohya
// files with 16 SD-1.5-shaped attention modules (320…1280 wide, cross-attention inputs 768); ranks
// drawn from 8, 16, 32, 64. Factor bytes are slices of one random F16 pool (generic spectra;
// generating fresh Gaussians for gigabytes would dominate the set-up). Then, interleaved, `runs`
// times each: `cat` of every file to /dev/null (the read floor), `lora inspect DIR --json`, and
// `lora truncate DIR --max-bytes (half the catalog) -o OUT --force`; wall time and peak RSS from
// /usr/bin/time -v; truncate's I/O floor (bench/catalog-floor.ts: every file read twice, half of
// it written atomically with the same fsyncs and renames, nothing computed); and inspect over the
// first quarter of the catalog, for how peak RSS grows with the number of adapters. Prints a markdown section; --write-docs puts it into docs/BENCHMARKS.md.
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serializeSafetensors, type TensorSpec } from "../formats/safetensors/index.js";
import { encodeFloats } from "../formats/safetensors/index.js";
import { Rng } from "../linalg/random.js";
import { arg } from "./args.js";
import { writeBenchSection } from "./docs.js";
import { type Timed, timed } from "./timed.js";

const here = dirname(fileURLToPath(import.meta.url));
const loraBin = join(here, "..", "..", "bin", "lora.js");
const RANKS = [8, 16, 32, 64];
const SD: [string, number, number][] = [];
for (const [blk, w] of [
  ["down_blocks_0", 320],
  ["down_blocks_1", 640],
  ["down_blocks_2", 1280],
  ["up_blocks_1", 1280],
] as const) {
  for (const [p, inn] of [
    ["attn1_to_q", w],
    ["attn1_to_v", w],
    ["attn2_to_k", 768],
    ["attn2_to_out_0", w],
  ] as const)
    SD.push([`lora_unet_${blk}_attentions_0_transformer_blocks_0_${p}`, w, inn]);
}

function pool(rng: Rng, n: number): Uint8Array {
  return encodeFloats("F16", rng.normals(n, 0.02));
}

async function generate(dir: string, count: number): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(7);
  const bytes = pool(rng, 1 << 24); // 32 MiB of F16 values
  const slice = (n: number) => {
    const o = 2 * rng.int((bytes.length >> 1) - n);
    return bytes.subarray(o, o + 2 * n);
  };
  for (let i = 0; i < count; i++) {
    const r = RANKS[rng.int(RANKS.length)]!;
    const name = `a${String(i).padStart(5, "0")}`;
    if (i % 2 === 0) {
      const specs: TensorSpec[] = ["q_proj", "v_proj"].flatMap((t) => [
        { name: `base_model.model.model.layers.0.self_attn.${t}.lora_A.weight`, dtype: "F16" as const, shape: [r, 4096], data: slice(r * 4096) },
        { name: `base_model.model.model.layers.0.self_attn.${t}.lora_B.weight`, dtype: "F16" as const, shape: [4096, r], data: slice(4096 * r) },
      ]);
      mkdirSync(join(dir, name), { recursive: true });
      writeFileSync(join(dir, name, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
      writeFileSync(join(dir, name, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r, lora_alpha: 2 * r, target_modules: ["q_proj", "v_proj"] }));
    } else {
      const specs: TensorSpec[] = SD.flatMap(([stem, out, inn]) => [
        { name: `${stem}.lora_down.weight`, dtype: "F16" as const, shape: [r, inn], data: slice(r * inn) },
        { name: `${stem}.lora_up.weight`, dtype: "F16" as const, shape: [out, r], data: slice(out * r) },
        { name: `${stem}.alpha`, dtype: "F16" as const, shape: [], data: encodeFloats("F16", Float64Array.of(r)) },
      ]);
      writeFileSync(join(dir, `${name}.safetensors`), await serializeSafetensors(specs, { ss_network_dim: String(r), ss_network_alpha: String(r) }));
    }
  }
}

function files(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((n) => {
      const p = join(dir, n);
      return statSync(p).isDirectory() ? readdirSync(p).map((m) => join(p, m)) : [p];
    });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function main(): Promise<void> {
  const count = Number(arg("--adapters", "2000")),
    runs = Number(arg("--runs", "3"));
  const dir = arg("--dir", `/tmp/lora-bench-catalog-${count}`);
  const out = `${dir}-out`;
  if (!existsSync(join(dir, ".complete"))) {
    rmSync(dir, { recursive: true, force: true });
    const t0 = Date.now();
    await generate(dir, count);
    writeFileSync(join(dir, ".complete"), "");
    console.error(`generated ${count} adapters in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const all = files(dir).filter((f) => !f.endsWith(".complete"));
  const totalBytes = all.reduce((s, f) => s + statSync(f).size, 0);
  const maxBytes = Math.floor(totalBytes / 2);
  const quarter = join(`${dir}-quarter.txt`);
  const everyInput = `${dir}-inputs.txt`;
  writeFileSync(
    everyInput,
    readdirSync(dir)
      .filter((n) => n !== ".complete")
      .sort()
      .map((n) => join(dir, n))
      .join("\n"),
  );
  writeFileSync(
    quarter,
    readdirSync(dir)
      .filter((n) => n !== ".complete")
      .sort()
      .slice(0, count / 4)
      .map((n) => join(dir, n))
      .join("\n"),
  );
  const rows: Record<string, Timed[]> = { cat: [], inspect: [], truncate: [], floor: [], inspectQuarter: [] };
  timed("sh", ["-c", `cat ${dir}/*.safetensors ${dir}/*/* > /dev/null`]); // warm the page cache
  for (let i = 0; i < runs; i++) {
    rows["cat"]!.push(timed("sh", ["-c", `cat ${dir}/*.safetensors ${dir}/*/* > /dev/null`]));
    rows["inspect"]!.push(timed(process.execPath, [loraBin, "inspect", dir, "--json", "--quiet"]));
    rows["truncate"]!.push(timed(process.execPath, [loraBin, "truncate", dir, "--max-bytes", String(maxBytes), "-o", out, "--force", "--json", "--quiet"]));
    rows["floor"]!.push(timed(process.execPath, [join(here, "catalog-floor.js"), everyInput, `${dir}-floor-out`]));
    rows["inspectQuarter"]!.push(timed(process.execPath, [loraBin, "inspect", "--from-list", quarter, "--json", "--quiet"]));
  }
  for (const [k, v] of Object.entries(rows)) for (const t of v) if (t.status !== 0) throw new Error(`${k} failed: ${t.stderr.slice(-2000)}`);
  const med = (k: string) => median(rows[k]!.map((t) => t.seconds));
  const rss = (k: string) => median(rows[k]!.map((t) => t.maxRssMb));
  const lines = [
    "## catalog",
    "",
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}; load average at the start ${loadavg()[0]!.toFixed(2)}. ` +
      `One run of \`node dist/bench/catalog.js --adapters ${count} --runs ${runs}\`: ${count} F16 adapters (half PEFT with Llama-7B-shaped q/v 4096×4096, half kohya with 16 SD-1.5-shaped attention modules; ranks 8–64), ${(totalBytes / 2 ** 20).toFixed(0)} MiB in ${all.length} files; medians of ${runs} interleaved runs, page cache warm.`,
    "",
    "| command | wall s | adapters/s | × cat | peak RSS MB |",
    "|---|---:|---:|---:|---:|",
    `| cat of every file > /dev/null | ${med("cat").toFixed(2)} | | 1 | ${rss("cat").toFixed(0)} |`,
    `| lora inspect DIR --json | ${med("inspect").toFixed(2)} | ${(count / med("inspect")).toFixed(0)} | ${(med("inspect") / med("cat")).toFixed(1)} | ${rss("inspect").toFixed(0)} |`,
    `| lora truncate DIR --max-bytes ${maxBytes} (half) -o OUT | ${med("truncate").toFixed(2)} | ${(count / med("truncate")).toFixed(0)} | ${(med("truncate") / med("cat")).toFixed(1)} | ${rss("truncate").toFixed(0)} |`,
    `| I/O floor of that truncate (every file read twice, half written atomically; bench/catalog-floor.ts) | ${med("floor").toFixed(2)} | ${(count / med("floor")).toFixed(0)} | ${(med("floor") / med("cat")).toFixed(1)} | ${rss("floor").toFixed(0)} |`,
    `| lora inspect (first ${count / 4} adapters only) | ${med("inspectQuarter").toFixed(2)} | ${(count / 4 / med("inspectQuarter")).toFixed(0)} | | ${rss("inspectQuarter").toFixed(0)} |`,
    "",
    `truncate against its I/O floor: ${(med("truncate") / med("floor")).toFixed(2)}×.`,
    "",
  ];
  const text = lines.join("\n");
  console.log(text);
  if (process.argv.includes("--write-docs")) writeBenchSection("catalog", text);
}

await main();
