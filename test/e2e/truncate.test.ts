// `lora truncate` end to end: spawns bin/lora.js. Exit codes and streams (--json is one document
// on stdout; errors one JSON object on stderr), `-o - | lora inspect -`, nothing left behind on
// errors, inspect/truncate agreement through the CLI, the real adapters of ../shared/fixtures/real
// (GPT-2 fan_in_fan_out, DistilBERT) and, when its prerequisites are present (Debian python3 with
// torch, PEFT's src/ at $LORA_PEFT_SRC or /tmp/peft-src), ../shared/tools/peft-check: PEFT's own code
// loads the output of every mode and must compute the ΔW our loader computes (≤ 1e-6 relative).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { gemm64 } from "../../linalg/js/dense.js";
import { fixturesDir, loraBin, realDir, sharedDir } from "../paths.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-truncate-e2e-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function lora(args: string[], input?: Buffer): { status: number; stdout: string; stderr: string; raw: Buffer } {
  const r = spawnSync(process.execPath, [loraBin, ...args], {
    env: { ...process.env, LORA_TEST: "1", NO_COLOR: "1" },
    maxBuffer: 256 << 20,
    ...(input ? { input } : {}),
  });
  return { status: r.status ?? -1, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8"), raw: r.stdout };
}

const example = join(fixturesDir, "example");

test("--json: one document with per-module rank in/out, retained energy and relative error", () => {
  const out = join(tmp, "ex-r4");
  const r = lora(["truncate", example, "--rank", "4", "-o", out, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as {
    command: string;
    method: string;
    output: string;
    format: string;
    modules: { name: string; rank_in: number; rank: number; relative_error: number; retained_energy: number; target_norm: number }[];
    totals: { modules: number; rank_in: number; rank: number; relative_error: number };
  };
  assert.equal(rep.command, "truncate");
  assert.equal(rep.method, "svd");
  assert.equal(rep.format, "peft");
  assert.equal(rep.modules.length, 8);
  for (const m of rep.modules) {
    assert.equal(m.rank_in, 8);
    assert.equal(m.rank, 4);
    assert.ok(m.retained_energy > 0 && m.retained_energy < 1);
    assert.ok(Math.abs(m.relative_error - Math.sqrt(1 - m.retained_energy)) < 1e-5, `${m.name}: ${m.relative_error}`);
  }
  assert.deepEqual([rep.totals.modules, rep.totals.rank_in, rep.totals.rank], [8, 64, 32]);
  assert.equal(r.stderr, "");
});

/** Σ (end − begin) over the tensors of a safetensors file, from its header read here by hand. */
function tensorDataBytes(path: string): number {
  const file = statSync(path).isDirectory() ? join(path, "adapter_model.safetensors") : path;
  const raw = readFileSync(file);
  const n = Number(raw.readBigUInt64LE(0));
  const header = JSON.parse(raw.subarray(8, 8 + n).toString("utf8")) as Record<string, { data_offsets?: [number, number] }>;
  let sum = 0;
  for (const [k, v] of Object.entries(header)) if (k !== "__metadata__") sum += v.data_offsets![1] - v.data_offsets![0];
  assert.equal(sum, raw.length - 8 - n, `${file}: the data section is the tensors' bytes`);
  return sum;
}

test("write reports: totals.bytes is the output's tensor data, as its header gives it (truncate, prune, merge)", () => {
  const kohya = join(fixturesDir, "kohya-sd.safetensors");
  const runs: [string, string[]][] = [
    [join(tmp, "bytes-tr"), ["truncate", example, "--rank", "3"]],
    [join(tmp, "bytes-tr-kohya.safetensors"), ["truncate", kohya, "--energy", "0.7"]],
    [join(tmp, "bytes-prune"), ["prune", example, "--method", "modules", "--match", "q_proj"]],
    [join(tmp, "bytes-merge"), ["merge", example, example, "--method", "svd", "--rank", "5"]],
  ];
  for (const [out, args] of runs) {
    const r = lora([...args, "-o", out, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as { totals: { bytes: number } };
    assert.equal(rep.totals.bytes, tensorDataBytes(out), args.join(" "));
    const human = lora([...args, "-o", out, "--force"]);
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stderr, new RegExp(`\\(${(rep.totals.bytes / 1000).toFixed(1).replace(".", "\\.")} kB\\)`), args.join(" "));
  }
});

test("human output: TSV rows on a pipe, summary on stderr", () => {
  const r = lora(["truncate", example, "--energy", "0.8", "-o", join(tmp, "ex-e8.safetensors")]);
  assert.equal(r.status, 0, r.stderr);
  const rows = r.stdout
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.equal(rows.length, 8);
  for (const row of rows) assert.equal(row.length, 5);
  assert.match(r.stderr, /truncate \(svd\): 8 modules, rank 64 → \d+, total relative error/);
});

test("lora inspect --budget prints the ranks lora truncate --budget writes", () => {
  const insp = lora(["inspect", example, "--budget", "20", "--score", "ratio", "--json"]);
  assert.equal(insp.status, 0, insp.stderr);
  const want = (JSON.parse(insp.stdout) as { redistribution: { ranks: Record<string, number> } }).redistribution.ranks;
  const out = join(tmp, "ex-b20.safetensors");
  const r = lora(["truncate", example, "--budget", "20", "--score", "ratio", "-o", out, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const got = Object.fromEntries((JSON.parse(r.stdout) as { modules: { name: string; rank: number }[] }).modules.map((m) => [m.name, m.rank]));
  assert.deepEqual(got, want);
  const back = lora(["inspect", out, "--json"]);
  const mods = (JSON.parse(back.stdout) as { modules: { name: string; rank: number }[] }).modules;
  for (const m of mods) assert.equal(m.rank, want[m.name]);
  assert.equal(mods.length, Object.values(want).filter((x) => x > 0).length);
});

test("-o - streams a file that lora inspect - reads", () => {
  const r = lora(["truncate", example, "--rank", "2", "-o", "-"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /→ standard output/);
  const i = lora(["inspect", "-", "--json"], r.raw);
  assert.equal(i.status, 0, i.stderr);
  const rep = JSON.parse(i.stdout) as { format: string; modules: { rank: number }[] };
  assert.equal(rep.format, "peft");
  assert.ok(rep.modules.every((m) => m.rank === 2));
});

test("exit codes: DoRA and bad files 3, usage 2; errors as JSON on stderr; nothing written", () => {
  const dir = join(tmp, "errors");
  mkdirSync(dir);
  const out = join(dir, "out");
  const dora = lora(["truncate", join(fixturesDir, "peft-dora"), "--rank", "1", "-o", out, "--json"]);
  assert.equal(dora.status, 3);
  assert.equal(dora.stdout, "");
  const err = JSON.parse(dora.stderr) as { error: { code: string; message: string } };
  assert.equal(err.error.code, "INVALID_INPUT");
  assert.match(err.error.message, /DoRA/);
  for (const f of ["nan-factor.safetensors", "inf-factor.safetensors", "rank-mismatch.safetensors", "not-lora.safetensors"]) {
    const r = lora(["truncate", join(fixturesDir, "bad-adapters", f), "--rank", "1", "-o", out]);
    assert.equal(r.status, 3, `${f}: ${r.stderr}`);
    assert.match(r.stderr, /^lora: error: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
  assert.equal(lora(["truncate", join(fixturesDir, "bad", "HeaderTooSmall.safetensors"), "--rank", "1", "-o", out]).status, 3);
  for (const args of [
    ["--rank", "0"],
    [],
    ["--energy", "1.5"],
    ["--rank", "2", "--energy", "0.5"],
    ["--dynamic", "sv_fro"],
    ["--method", "magic", "--rank", "2"],
    ["--rank", "2", "--alpha-mode", "lycoris", "--method", "svd"],
  ]) {
    const r = lora(["truncate", example, ...args, "-o", out]);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
  }
  assert.deepEqual(readdirSync(dir), []);
  // An existing output is not replaced without --force.
  mkdirSync(out);
  writeFileSync(join(out, "keep"), "x");
  const again = lora(["truncate", example, "--rank", "2", "-o", out]);
  assert.notEqual(again.status, 0);
  assert.deepEqual(readdirSync(out), ["keep"]);
  // --force does not replace a directory holding what truncate does not write
  const forced = lora(["truncate", example, "--rank", "2", "-o", out, "--force"]);
  assert.equal(forced.status, 2, forced.stderr);
  assert.match(forced.stderr, /holds what this command does not write \(keep\)/);
  assert.deepEqual(readdirSync(out), ["keep"]);
  // an earlier output is replaced with --force
  rmSync(out, { recursive: true });
  assert.equal(lora(["truncate", example, "--rank", "4", "-o", out]).status, 0);
  assert.equal(lora(["truncate", example, "--rank", "2", "-o", out, "--force"]).status, 0);
  assert.deepEqual(readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
});

test("an output that is the input: refused without --force (exit 2, untouched), replaced in place with it", () => {
  const dir = join(tmp, "in-place");
  mkdirSync(dir);
  const copy = join(dir, "ad");
  mkdirSync(copy);
  for (const f of readdirSync(example)) writeFileSync(join(copy, f), readFileSync(join(example, f)));
  const before = readFileSync(join(copy, "adapter_model.safetensors"));
  const elsewhere = join(dir, "r2");
  assert.equal(lora(["truncate", example, "--rank", "2", "-o", elsewhere]).status, 0);
  for (const target of [copy, `${copy}/`, join(dir, ".", "ad")]) {
    const r = lora(["truncate", copy, "--rank", "2", "-o", target]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /refusing to overwrite input/);
    assert.doesNotMatch(r.stderr, /pass --force to replace the input,/);
    assert.ok(readFileSync(join(copy, "adapter_model.safetensors")).equals(before), "the input is untouched");
  }
  assert.equal(lora(["truncate", copy, "--rank", "2", "-o", copy, "--force"]).status, 0);
  // The input was read whole before it was replaced: the same bytes as the truncation written elsewhere.
  assert.ok(readFileSync(join(copy, "adapter_model.safetensors")).equals(readFileSync(join(elsewhere, "adapter_model.safetensors"))));
  assert.deepEqual(readdirSync(dir).sort(), ["ad", "r2"], "no temp file left beside it");
});

test("same inputs and options give a byte-identical file, whatever the output path", () => {
  const a = lora(["truncate", example, "--budget", "30", "-o", "-"]);
  const b = lora(["truncate", example, "--budget", "30", "-o", join(tmp, "det.safetensors")]);
  assert.equal(b.status, 0);
  const c = lora(["truncate", example, "--budget", "30", "-o", "-"]);
  assert.ok(a.raw.equals(c.raw));
});

test("kohya DyLoRA: the CLI says it uses prefix; --unit writes kohya's split files", () => {
  const dy = join(fixturesDir, "kohya-dylora.safetensors");
  const r = lora(["truncate", dy, "--rank", "4", "-o", join(tmp, "dy4.safetensors")]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /note: kohya DyLoRA .*--method prefix/);
  const dir = join(tmp, "dysplit");
  mkdirSync(dir);
  const s = lora(["truncate", dy, "--unit", "4", "-o", join(dir, "dy.safetensors"), "--json"]);
  assert.equal(s.status, 0, s.stderr);
  const rep = JSON.parse(s.stdout) as { outputs: { output: string; totals: { rank: number } }[] };
  assert.deepEqual(
    rep.outputs.map((o) => o.output),
    [join(dir, "dy-0004.safetensors")],
  );
  assert.deepEqual(readdirSync(dir), ["dy-0004.safetensors"]);
});

// ---------------------------------------------------------------------------------------------
// Real adapters and PEFT's own loader

const imdb = join(realDir, "distilbert-imdb"),
  gpt2 = join(realDir, "gpt2-tigrinya");
const haveReal = existsSync(join(imdb, "adapter_model.safetensors")) && existsSync(join(gpt2, "adapter_model.safetensors"));

const peftSrc = process.env["LORA_PEFT_SRC"] ?? "/tmp/peft-src";
const peftLoad = join(sharedDir, "tools", "peft-check", "peft_load.py");
const peftCheckWhyNot: string | null = (() => {
  if (!existsSync(peftLoad)) return `${peftLoad} not found`;
  if (!existsSync(join(peftSrc, "peft", "__init__.py"))) return `PEFT src/ not found at ${peftSrc} (set LORA_PEFT_SRC)`;
  const r = spawnSync("/usr/bin/python3", ["-c", "import torch, numpy, packaging, yaml, tqdm, psutil"], { encoding: "utf8" });
  if (r.status !== 0) return "Debian python3 with torch/numpy/packaging/yaml/tqdm/psutil not available at /usr/bin/python3";
  return null;
})();

test("F64 factors whose products overflow float64 (‖A‖ ≈ 1e200): truncate, inspect and diff exit 3 naming the module, on every backend, nothing written", async () => {
  const dir = join(tmp, "f64-huge");
  mkdirSync(dir);
  const r = 4,
    n = 16;
  // finite values whose squares are not: A ~ 1e200, B ~ 1
  const A = Float64Array.from({ length: r * n }, (_, i) => (i % 3 === 0 ? -1 : 1) * (1 + (i % 5)) * 1e200);
  const B = Float64Array.from({ length: n * r }, (_, i) => 1 + (i % 7) / 7);
  const specs: TensorSpec[] = [
    { name: "base_model.model.layers.0.q_proj.lora_A.weight", dtype: "F64", shape: [r, n], data: encodeFloats("F64", A) },
    { name: "base_model.model.layers.0.q_proj.lora_B.weight", dtype: "F64", shape: [n, r], data: encodeFloats("F64", B) },
  ];
  writeFileSync(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, null));
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r, lora_alpha: r, target_modules: ["q_proj"] }));
  const backends = lora(["backends"])
    .stdout.split("\n")
    .filter((l) => /\tyes\t/.test(l))
    .map((l) => l.split("\t")[0]!);
  assert.ok(backends.includes("js"));
  for (const be of backends) {
    const out = join(tmp, `f64-huge-out-${be}`);
    for (const args of [
      ["truncate", dir, "--rank", "2", "-o", out],
      ["inspect", dir],
      ["diff", dir, dir],
    ]) {
      const res = lora([...args, "--backend", be]);
      assert.equal(res.status, 3, `${be} ${args[0]}: ${res.stderr}`);
      assert.match(res.stderr, /layers\.0\.q_proj: factor values too large for float64/);
    }
    assert.ok(!existsSync(out), `${be}: nothing written`);
  }
});

/** Our loader's ΔW = scale·B·A of every module of a PEFT dir, as an F64 safetensors file keyed by module path. */
async function expectedDeltas(dir: string): Promise<{ path: string; modules: number }> {
  const a = await loadAdapter(dir);
  try {
    const specs: TensorSpec[] = [];
    for (const m of a.modules) {
      const f = await readFactors(a, m, "f64");
      const W = gemm64(f.B.data, m.out, m.rank, f.A.data, m.rank, m.in, false, false, m.scale).data;
      specs.push({ name: m.path, dtype: "F64", shape: [m.out, m.in], data: encodeFloats("F64", W) });
    }
    const path = join(tmp, `expected-${Math.random().toString(36).slice(2)}.safetensors`);
    writeFileSync(path, await serializeSafetensors(specs, null));
    return { path, modules: a.modules.length };
  } finally {
    await a.file.close();
  }
}

function run(cmd: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let stdout = "",
      stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    p.on("close", (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

interface PeftResult {
  modules: number;
  expected: number;
  maxRel: number;
  missing: string[];
}

/** PEFT's ΔW of every module of a PEFT dir against ours: module count and largest relative difference. */
async function peftCheck(dir: string): Promise<PeftResult> {
  const npz = join(tmp, `peft-${Math.random().toString(36).slice(2)}.npz`);
  const r = await run("/usr/bin/python3", [peftLoad, peftSrc, dir, npz]);
  if (r.status !== 0) throw new Error(`peft_load.py failed on ${dir}: ${r.stderr}`);
  const exp = await expectedDeltas(dir);
  const cmp = await run("/usr/bin/python3", [
    "-c",
    `
import sys, json, numpy as np
sys.path.insert(0, ${JSON.stringify(join(sharedDir, "tools", "peft-check"))})
import st_numpy
d = np.load(sys.argv[1]); _, t = st_numpy.read_st(sys.argv[2])
worst, missing = 0.0, [k for k in t if k not in d.files]
for k in d.files:
    ref = t[k][0].astype(np.float64)
    worst = max(worst, float(np.linalg.norm(d[k] - ref) / max(np.linalg.norm(ref), 1e-300)))
print(json.dumps({"modules": len(d.files), "maxRel": worst, "missing": missing}))
`,
    npz,
    exp.path,
  ]);
  if (cmp.status !== 0) throw new Error(cmp.stderr);
  return { ...(JSON.parse(cmp.stdout) as { modules: number; maxRel: number; missing: string[] }), expected: exp.modules };
}

/**
 * Every mode's output as a PEFT directory. peft_load.py builds a bare model of Linear layers only,
 * so conv and embedding outputs (checked against dense references in commands/truncate/run.test.ts)
 * are not part of this list.
 */
const MODES: [string, string, string[]][] = [
  ["rank (uniform)", example, ["--rank", "4"]],
  ["rank, all-in-up split", example, ["--rank", "3", "--split", "all-in-up"]],
  ["energy (mixed ranks → rank_pattern/alpha_pattern)", example, ["--energy", "0.7"]],
  ["budget (modules dropped)", example, ["--budget", "12"]],
  ["budget --score params --min-rank 1", example, ["--budget", "16", "--score", "params", "--min-rank", "1"]],
  ["dynamic sv_fro, clean rule", example, ["--dynamic", "sv_fro", "--dynamic-param", "0.8"]],
  ["kohya-compat sv_ratio", example, ["--kohya-compat", "--dynamic", "sv_ratio", "--dynamic-param", "1.5"]],
  ["rsLoRA + rank_pattern/alpha_pattern input", join(fixturesDir, "peft-rslora"), ["--rank", "5"]],
  ["rsLoRA budget", join(fixturesDir, "peft-rslora"), ["--budget", "20"]],
  ["BF16 single-file input, --dtype F32", join(fixturesDir, "peft-bf16.safetensors"), ["--rank", "3", "--dtype", "F32"]],
  ["BF16 kept", join(fixturesDir, "peft-bf16.safetensors"), ["--energy", "0.9"]],
  ["kohya DyLoRA prefix → --to peft", join(fixturesDir, "kohya-dylora.safetensors"), ["--rank", "4", "--to", "peft"]],
  [
    "kohya DyLoRA prefix, --alpha-mode kohya-train",
    join(fixturesDir, "kohya-dylora.safetensors"),
    ["--rank", "2", "--alpha-mode", "kohya-train", "--to", "peft"],
  ],
  [
    "kohya svd, kohya-compat → --to peft",
    join(fixturesDir, "kohya-dylora.safetensors"),
    ["--method", "svd", "--kohya-compat", "--dynamic", "sv_fro", "--dynamic-param", "0.9", "--to", "peft"],
  ],
];
if (haveReal) {
  MODES.push(["real DistilBERT, budget", imdb, ["--budget", "40"]]);
  MODES.push(["real GPT-2 (fan_in_fan_out), rank", gpt2, ["--rank", "4"]]);
}

describe("PEFT's own loader reads every truncate mode as intended (peft-check)", { skip: peftCheckWhyNot ?? false }, () => {
  // Python with torch takes seconds to start: every mode is truncated and loaded up front, four at a time.
  const results = new Map<string, Promise<PeftResult>>();
  before(async () => {
    const queue = [...MODES];
    const worker = async () => {
      for (let m = queue.shift(); m; m = queue.shift()) {
        const [label, input, args] = m;
        const out = join(tmp, `peft-${label.replace(/[^a-z0-9]+/gi, "-")}`);
        const job = (async () => {
          const r = await run(process.execPath, [loraBin, "truncate", input, ...args, "-o", out]);
          if (r.status !== 0) throw new Error(`lora truncate ${args.join(" ")} failed: ${r.stderr}`);
          return peftCheck(out);
        })();
        job.catch(() => {}); // reported by the test that awaits it
        results.set(label, job);
        await job.catch(() => {});
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  });
  for (const [label] of MODES) {
    test(label, async () => {
      const c = await results.get(label)!;
      assert.equal(c.modules, c.expected, `PEFT built ${c.modules} LoRA layers, we wrote ${c.expected}`);
      assert.deepEqual(c.missing, []);
      assert.ok(c.maxRel <= 1e-6, `${label}: PEFT's ΔW differs from ours by ${c.maxRel}`);
    });
  }
});

describe("real adapters", { skip: haveReal ? false : `no real adapters at ${realDir}` }, () => {
  test("GPT-2 (fan_in_fan_out): --rank 4 reloads with the optimal ΔW of every module", async () => {
    const out = join(tmp, "gpt2-r4");
    const r = lora(["truncate", gpt2, "--rank", "4", "-o", out, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as { modules: { relative_error: number; retained_energy: number }[] };
    for (const m of rep.modules) assert.ok(Math.abs(m.relative_error - Math.sqrt(1 - m.retained_energy)) < 1e-4);
    const a = await loadAdapter(out);
    try {
      assert.equal(a.config?.["fan_in_fan_out"], true);
      for (const m of a.modules) assert.equal(m.rank, 4);
    } finally {
      await a.file.close();
    }
  });
});
