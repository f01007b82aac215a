// `lora prune` end to end: spawn bin/lora.js on the fixtures and check exit codes, the --json
// document, the files written (and, on errors, that nothing is left behind).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixturesDir, loraBin, repoRoot } from "../paths.js";
import { peftCheck, peftCheckUnavailable } from "../peft-check.js";

const FX = join(fixturesDir, "prune");

function lora(args: string[], opts: { input?: Buffer } = {}): { code: number; stdout: string; stderr: string; raw: Buffer } {
  const r = spawnSync(process.execPath, [loraBin, ...args], {
    cwd: repoRoot,
    input: opts.input,
    env: { ...process.env, NO_COLOR: "1", LORA_TEST: "1" },
    maxBuffer: 64 << 20,
  });
  return { code: r.status ?? -1, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8"), raw: r.stdout };
}

function scratch(): { dir: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "lora-e2e-prune-"));
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test("sora --json: one JSON document with per-module kept/total ranks; the output inspects", () => {
  const { dir, done } = scratch();
  try {
    const out = join(dir, "sora");
    const r = lora(["prune", join(FX, "sora-checkpoint.safetensors"), "--method", "sora", "-o", out, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.command, "prune");
    assert.equal(doc.method, "sora");
    assert.equal(doc.modules.length, 4);
    for (const m of doc.modules) {
      assert.equal(m.rank_in, 8);
      assert.equal(m.gates_total, 8);
      assert.ok(m.relative_error <= 1e-6);
    }
    assert.equal(doc.dropped.length, 1);
    const ins = lora(["inspect", out, "--json"]);
    assert.equal(ins.code, 0, ins.stderr);
    const info = JSON.parse(ins.stdout);
    assert.equal(info.format, "peft");
    assert.deepEqual(
      info.modules.map((m: { rank: number }) => m.rank),
      doc.modules.filter((m: { rank: number }) => m.rank > 0).map((m: { rank: number }) => m.rank),
    );
  } finally {
    done();
  }
});

test("inspect on a SoRA checkpoint shows the gate sparsity", () => {
  const r = lora(["inspect", join(FX, "sora-checkpoint.safetensors")]);
  assert.equal(r.code, 0, r.stderr);
  const j = lora(["inspect", join(FX, "sora-checkpoint.safetensors"), "--json"]);
  const doc = JSON.parse(j.stdout);
  assert.equal(doc.format, "sora");
  assert.ok(doc.modules.every((m: { gate?: { total: number } }) => m.gate && m.gate.total === 8));
});

test("sora -o - | inspect -: the stream carries the pruned adapter", () => {
  const r = lora(["prune", join(FX, "sora-checkpoint.safetensors"), "--method", "sora", "-o", "-"]);
  assert.equal(r.code, 0, r.stderr);
  const ins = lora(["inspect", "-", "--json"], { input: r.raw });
  assert.equal(ins.code, 0, ins.stderr);
  assert.equal(JSON.parse(ins.stdout).modules.length, 3);
});

test("loraprune on the GQA fixture writes the pruned model (shards, index, config), the adapter and pruning_plan.json", () => {
  const { dir, done } = scratch();
  try {
    const r = lora([
      "prune",
      join(FX, "adapter-gqa"),
      "--method",
      "loraprune",
      "--base",
      join(FX, "llama-gqa"),
      "--ratio",
      "0.5",
      "--base-out",
      join(dir, "model"),
      "-o",
      join(dir, "adapter"),
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.method, "loraprune");
    assert.equal(doc.criterion, "magnitude");
    assert.deepEqual(doc.skip_layers, [3]);
    assert.deepEqual(readdirSync(join(dir, "model")).sort(), [
      "config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
    ]);
    const plan = JSON.parse(readFileSync(join(dir, "pruning_plan.json"), "utf8"));
    assert.equal(plan.layers.length, 4);
    assert.equal(plan.layers[0].num_key_value_heads, 1);
    const cfg = JSON.parse(readFileSync(join(dir, "model", "config.json"), "utf8"));
    assert.deepEqual(cfg.layer_num_key_value_heads, [1, 1, 1, 2]);
    assert.equal(cfg.num_key_value_heads, 2, "standard fields kept when layers differ");
    const ins = lora(["inspect", join(dir, "adapter"), "--json"]);
    assert.equal(ins.code, 0, ins.stderr);
    const q0 = JSON.parse(ins.stdout).modules.find((m: { name: string }) => m.name === "model.layers.0.self_attn.q_proj");
    assert.deepEqual(q0.shape, [16, 32]);
  } finally {
    done();
  }
});

test("loraprune with --grads uses the LoRA-guided criterion", () => {
  const { dir, done } = scratch();
  try {
    const r = lora([
      "prune",
      join(FX, "adapter-gqa"),
      "--method",
      "loraprune",
      "--base",
      join(FX, "llama-gqa"),
      "--ratio",
      "0.5",
      "--grads",
      join(FX, "grads-gqa.safetensors"),
      "-o",
      join(dir, "a.safetensors"),
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).criterion, "lora-guided");
    assert.ok(existsSync(join(dir, "config.json")), "config.json beside the adapter without --base-out");
  } finally {
    done();
  }
});

test("modules --match, kohya fixture: exit 0 and a loadable adapter", () => {
  const { dir, done } = scratch();
  try {
    const out = join(dir, "k.safetensors");
    const r = lora(["prune", join(fixturesDir, "kohya-sd.safetensors"), "--method", "modules", "--match", "conv", "-o", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(lora(["inspect", out]).code, 0);
  } finally {
    done();
  }
});

test("exit 3 with nothing written: DoRA, unknown architecture, NaN factor, not a SoRA file", () => {
  const { dir, done } = scratch();
  try {
    const out = join(dir, "out");
    const cases: string[][] = [
      ["prune", join(fixturesDir, "peft-dora"), "--method", "sora", "-o", out],
      ["prune", join(fixturesDir, "peft-dora"), "--method", "loraprune", "--base", join(FX, "llama-mha"), "--ratio", "0.5", "-o", out],
      ["prune", join(FX, "adapter-mha"), "--method", "loraprune", "--base", join(FX, "sora-checkpoint.safetensors"), "--ratio", "0.5", "-o", out],
      ["prune", join(fixturesDir, "bad-adapters", "nan-factor.safetensors"), "--method", "modules", "--match", "x", "-o", out],
      ["prune", join(fixturesDir, "example"), "--method", "sora", "-o", out],
    ];
    for (const c of cases) {
      const r = lora([...c, "--json"]);
      assert.equal(r.code, 3, `${c.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "");
      const err = JSON.parse(r.stderr.trim().split("\n").pop()!);
      assert.ok(err.error.message.length > 0);
      assert.deepEqual(readdirSync(dir), [], `nothing written for ${c.join(" ")}`);
    }
  } finally {
    done();
  }
});

test("usage errors (exit 2): missing --method, flags of another method, missing --base, --ratio ≥ 1, existing output", () => {
  const { dir, done } = scratch();
  try {
    const out = join(dir, "out");
    const cases: string[][] = [
      ["prune", join(FX, "adapter-mha"), "-o", out],
      ["prune", join(FX, "adapter-mha"), "--method", "loraprune", "--threshold", "0.1", "--base", join(FX, "llama-mha"), "--ratio", "0.5", "-o", out],
      ["prune", join(FX, "adapter-mha"), "--method", "loraprune", "--ratio", "0.5", "-o", out],
      ["prune", join(FX, "adapter-mha"), "--method", "loraprune", "--base", join(FX, "llama-mha"), "--ratio", "1", "-o", out],
      ["prune", join(FX, "adapter-mha"), "--method", "modules", "-o", out],
      ["prune", join(FX, "adapter-mha"), "--method", "bogus", "-o", out],
    ];
    for (const c of cases) {
      const r = lora(c);
      assert.equal(r.code, 2, `${c.join(" ")}: ${r.stderr}`);
    }
    assert.deepEqual(readdirSync(dir), []);
    const r = lora(["prune", join(FX, "adapter-mha"), "--method", "modules", "--match", "q_proj", "-o", dir]);
    assert.equal(r.code, 2, "an existing output needs --force");
    assert.equal(lora(["prune", join(FX, "adapter-mha"), "--method", "modules", "--match", "q_proj", "-o", dir, "--force"]).code, 0);
  } finally {
    done();
  }
});

test("a failing write (disk full) exits 1 and leaves nothing: no pruned model, adapter, plan or temp file", () => {
  const { dir, done } = scratch();
  try {
    const r = spawnSync(
      process.execPath,
      [
        loraBin,
        "prune",
        join(FX, "adapter-mha"),
        "--method",
        "loraprune",
        "--base",
        join(FX, "llama-mha"),
        "--ratio",
        "0.5",
        "--base-out",
        join(dir, "model"),
        "-o",
        join(dir, "adapter"),
      ],
      {
        cwd: repoRoot,
        env: { ...process.env, LORA_TEST: "1", LORA_TEST_FAIL_WRITE_AFTER: "100000" },
        encoding: "utf8",
      },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    done();
  }
});

const noPeft = peftCheckUnavailable();

test("PEFT's own loader reads every prune output as intended (sora with rank/alpha patterns, loraprune, modules on rsLoRA)", { skip: noPeft || false }, () => {
  const { dir, done } = scratch();
  try {
    const runs: [string, string[]][] = [
      ["sora", ["prune", join(FX, "sora-checkpoint.safetensors"), "--method", "sora", "-o", join(dir, "sora")]],
      ["sora-peft", ["prune", join(FX, "sora-peft"), "--method", "sora", "--fold", "balanced", "--threshold", "0.5", "-o", join(dir, "sora-peft")]],
      ["lp", ["prune", join(FX, "adapter-gqa"), "--method", "loraprune", "--base", join(FX, "llama-gqa"), "--ratio", "0.5", "-o", join(dir, "lp", "adapter")]],
      [
        "modules",
        ["prune", join(fixturesDir, "peft-rslora"), "--method", "modules", "--match", "layers\\.0\\.self_attn\\.q_proj|k_proj", "-o", join(dir, "modules")],
      ],
    ];
    const { mkdirSync } = fs;
    mkdirSync(join(dir, "lp"));
    for (const [name, args] of runs) {
      const r = lora(args);
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      const out = args[args.length - 1]!;
      const c = peftCheck(out);
      assert.ok(c.modules > 0, name);
      assert.ok(c.max_rel <= 1e-6, `${name}: PEFT's ΔW differs from ours by ${c.max_rel}`);
      assert.deepEqual(c.peft_extra, [], `${name}: PEFT adapted modules we did not write`);
    }
  } finally {
    done();
  }
});
