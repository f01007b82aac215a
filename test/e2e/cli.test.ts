// The CLI as users run it: exit codes (docs/cli.md "Exit codes"), stdout/stderr separation, --json, pipes with "-",
// EPIPE, binary refused on a terminal, malformed files rejected with their error name and no output.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { join } from "node:path";
import { fixturesDir, loraBin, needsReal, realDir } from "../paths.js";
import { tempDir } from "../temp-dir.js";

function lora(args: string[], opts: { input?: Buffer | string; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [loraBin, ...args], { input: opts.input, env: { ...process.env, ...opts.env }, maxBuffer: 1 << 28 });
  return { code: r.status, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8"), raw: r.stdout };
}

const ex = join(fixturesDir, "example");

test("inspect: TSV rows when piped, no ANSI, one JSON document with --json", () => {
  const t = lora(["inspect", ex]);
  assert.equal(t.code, 0, t.stderr);
  const rows = t.stdout.trim().split("\n");
  assert.equal(rows.length, 8);
  assert.equal(rows[0]!.split("\t").length, 9);
  assert.ok(!/\x1b\[/.test(t.stdout + t.stderr));
  const j = lora(["inspect", ex, "--json"]);
  const doc = JSON.parse(j.stdout);
  assert.equal(doc.modules.length, 8);
  assert.equal(j.stderr, "");
});

test("--header: every piped table starts with a row of column names as wide as its rows", () => {
  const d = tempDir("lora-header-");
  const two = [ex, join(fixturesDir, "peft-rslora")];
  const cases: [string, string[]][] = [
    ["inspect", ["inspect", ex]],
    ["inspect (catalog)", ["inspect", ...two]],
    ["diff", ["diff", ex, ex]],
    ["diff --signs", ["diff", ex, ex, "--signs"]],
    ["lint", ["lint", join(fixturesDir, "bad-adapters")]],
    ["truncate", ["truncate", ex, "--rank", "2", "-o", join(d, "t")]],
    ["truncate (catalog)", ["truncate", ...two, "--rank", "2", "-o", join(d, "c")]],
    ["backends", ["backends"]],
  ];
  for (const [label, args] of cases) {
    const clean = () => {
      for (const dir of ["t", "c"]) rmSync(join(d, dir), { recursive: true, force: true });
    };
    const plain = lora(args);
    clean();
    const headed = lora([...args, "--header"]);
    clean();
    assert.ok(plain.code === 0 || plain.code === 3, `${label}: ${plain.stderr}`);
    const rows = plain.stdout.trimEnd().split("\n");
    const hrows = headed.stdout.trimEnd().split("\n");
    assert.ok(rows.length > 0 && rows[0] !== "", `${label}: rows to head`);
    assert.equal(hrows.length, rows.length + 1, `${label}: one row more with --header`);
    assert.deepEqual(hrows.slice(1), rows, `${label}: the same rows after the header`);
    assert.equal(hrows[0]!.split("\t").length, rows[0]!.split("\t").length, `${label}: header as wide as a row: ${hrows[0]}`);
    assert.match(hrows[0]!, /^[a-z_]+(\t[a-z_]+)*$/, `${label}: column names`);
  }
});

test("lint over several inputs: a missing path is skipped and reported, the others are linted", () => {
  const bad = join(fixturesDir, "bad-adapters", "inf-factor.safetensors");
  const missing = join(fixturesDir, "no-such-adapter");
  const r = lora(["lint", bad, missing, ex]);
  assert.equal(r.code, 3, "the error-level finding of the linted input decides");
  assert.match(r.stdout, /inf-factor\.safetensors\terror\tnon-finite/);
  assert.match(r.stderr, new RegExp(`lora: ${missing}: skipped: .*no such file`));
  const j = lora(["lint", missing, ex, "--json"]);
  assert.equal(j.code, 1, "only the missing input failed: the exit of its failure");
  const doc = JSON.parse(j.stdout) as { adapters: { path: string; errors: number }[]; failed: { path: string; exit: number }[] };
  assert.deepEqual(
    doc.adapters.map((a) => [a.path, a.errors]),
    [[ex, 0]],
  );
  assert.deepEqual(
    doc.failed.map((f) => [f.path, f.exit]),
    [[missing, 1]],
  );
  // One input alone fails as before: its own message, nothing on stdout.
  const one = lora(["lint", missing]);
  assert.equal(one.code, 1);
  assert.equal(one.stdout, "");
  assert.match(one.stderr, /no such file or directory/);
});

test("a file's names and metadata never put control characters or bidi overrides on the terminal", async () => {
  const d = tempDir("lora-escapes-");
  const r = 2,
    n = 8;
  const stem = "lora_te_text_model_encoder_layers_0_self_attn_q_proj\x1b[2J";
  const specs: TensorSpec[] = [
    {
      name: `${stem}.lora_down.weight`,
      dtype: "F32",
      shape: [r, n],
      data: encodeFloats(
        "F32",
        Float64Array.from({ length: r * n }, (_, i) => 1 + (i % 3)),
      ),
    },
    {
      name: `${stem}.lora_up.weight`,
      dtype: "F32",
      shape: [n, r],
      data: encodeFloats(
        "F32",
        Float64Array.from({ length: n * r }, (_, i) => 1 - (i % 5) / 4),
      ),
    },
  ];
  const file = join(d, "escapes.safetensors");
  writeFileSync(file, await serializeSafetensors(specs, { "modelspec.title": "\u202eevil\x1b[31mred", ss_training_comment: "a\rb\bc" }));
  for (const args of [
    ["inspect", file],
    ["lint", file],
    ["inspect", file, "--header"],
  ]) {
    const out = lora(args);
    const all = out.stdout + out.stderr;
    assert.ok(!/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]/.test(all), `${args.join(" ")}: raw control characters in ${JSON.stringify(all)}`);
  }
  const shown = lora(["inspect", file]);
  assert.match(shown.stderr, /title "\\u\{202e\}evil\\u\{1b\}\[31mred"/, "the title, escaped visibly");
  // --json keeps the exact strings (JSON escapes them itself).
  const j = JSON.parse(lora(["inspect", file, "--json"]).stdout) as { kohya_metadata: { title: string } };
  assert.equal(j.kohya_metadata.title, "\u202eevil\x1b[31mred");
});

test("exit codes: 0 help/version, 2 usage, 3 invalid input, 4 unavailable backend, 1 missing file", () => {
  assert.equal(lora(["--help"]).code, 0);
  assert.equal(lora(["--version"]).code, 0);
  assert.equal(lora(["inspect", "--help"]).code, 0);
  assert.match(lora(["inspect", "--help"]).stdout, /Examples:/);
  assert.equal(lora(["frobnicate"]).code, 2);
  assert.equal(lora(["inspect", ex, "--no-such-flag"]).code, 2);
  assert.equal(lora(["inspect", ex, "--budget", "x"]).code, 2);
  assert.equal(lora(["inspect", ex, "--budget", "4", "--energy", "0.9"]).code, 2);
  assert.equal(lora(["convert", ex, "-o", "x"]).code, 2, "missing --to");
  const bad = lora(["inspect", join(fixturesDir, "bad-adapters", "nan-factor.safetensors"), "--json"]);
  assert.equal(bad.code, 3);
  assert.equal(bad.stdout, "");
  assert.equal(JSON.parse(bad.stderr).error.code, "INVALID_INPUT");
  // convert copies factors as stored but still refuses a NaN/Inf in them, writing nothing
  const outDir = tempDir("lora-nan-");
  for (const [name, to] of [
    ["nan-factor", "kohya"],
    ["inf-factor", "peft"],
  ]) {
    const target = join(outDir, `${name}.safetensors`);
    const c = lora(["convert", join(fixturesDir, "bad-adapters", `${name}.safetensors`), "--to", to!, "-o", target, "--json"]);
    assert.equal(c.code, 3, c.stderr);
    assert.match(JSON.parse(c.stderr).error.message, /holds (NaN|\+Inf) at element \d+; factors must be finite/);
    assert.deepEqual(readdirSync(outDir), [], `${name}: nothing written`);
  }
  rmSync(outDir, { recursive: true, force: true });
  assert.equal(lora(["inspect", ex, "--backend", "cuda"]).code, 4);
  assert.ok(!/at .*\.js:\d+/.test(bad.stderr), "no stack trace");
  assert.notEqual(lora(["inspect", "/nonexistent/adapter"]).code, 0);
});

test("every malformed safetensors file exits 3 with its own error name, and writes nothing", () => {
  const out = tempDir("lora-bad-");
  const files = readdirSync(join(fixturesDir, "bad")).filter((f) => f.endsWith(".safetensors"));
  assert.ok(files.length >= 11);
  for (const f of files) {
    const variant = f.split(".")[0]!;
    const code = "SAFETENSORS_" + variant.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
    const r = lora(["convert", join(fixturesDir, "bad", f), "--to", "peft", "-o", join(out, f + ".out"), "--json"]);
    assert.equal(r.code, 3, `${f}: ${r.stderr}`);
    assert.equal(JSON.parse(r.stderr).error.code, code, f);
  }
  assert.deepEqual(readdirSync(out), [], "no output, no temp file");
});

test("convert -o - | inspect - works as a pipeline; binary output refused on a terminal", () => {
  const c = lora(["convert", join(fixturesDir, "distilbert-like-a"), "--to", "kohya", "-o", "-"]);
  assert.equal(c.code, 0, c.stderr);
  const i = lora(["inspect", "-", "--json"], { input: c.raw });
  assert.equal(i.code, 0, i.stderr);
  const doc = JSON.parse(i.stdout);
  assert.equal(doc.format, "kohya");
  assert.equal(doc.modules.length, 12);
  assert.equal(doc.passthrough.length > 0, true);
  // A terminal on stdout: run under `script` when available.
  if (spawnSync("script", ["--version"]).status === 0) {
    const t = spawnSync("script", ["-qec", `${process.execPath} ${loraBin} convert ${ex} --to kohya -o -`, "/dev/null"], { encoding: "utf8" });
    assert.equal(t.status, 2, t.stdout);
    assert.match(t.stdout, /refusing to write binary/);
  }
});

test("a closed pipe ends quietly with status 0", { skip: needsReal("gpt2-tigrinya", "sd15-pokemon") }, () => {
  const r = spawnSync(
    "sh",
    ["-c", `${process.execPath} ${loraBin} inspect ${join(realDir, "gpt2-tigrinya")} --json | head -c 10 >/dev/null; echo "\${PIPESTATUS:-}"`],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0);
  const b = spawnSync(
    "bash",
    ["-c", `set -o pipefail; ${process.execPath} ${loraBin} inspect ${join(realDir, "gpt2-tigrinya")} --json --backend js | head -c 10 >/dev/null`],
    { encoding: "utf8" },
  );
  assert.equal(b.status, 0, b.stderr);
  assert.equal(b.stderr, "");
  // stderr into the same pipe (`2>&1 | head -1`): the notes on stderr meet the closed pipe too.
  for (let i = 0; i < 4; i++) {
    const c = spawnSync("bash", ["-c", `set -o pipefail; ${process.execPath} ${loraBin} inspect ${join(realDir, "sd15-pokemon")} 2>&1 | head -1 >/dev/null`], {
      encoding: "utf8",
    });
    assert.equal(c.status, 0, `2>&1 | head -1, run ${i}: ${c.stderr}`);
  }
});

test("stderr closed: the messages are dropped, the work and its exit status are not", async () => {
  const d = tempDir("lora-stderr-closed-");
  const run = (args: string[]) =>
    new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, [loraBin, ...args], { stdio: ["ignore", "ignore", "pipe"] });
      child.stderr.destroy(); // the reader of stderr is gone before the first message
      child.on("exit", (code) => resolve(code));
    });
  const out = join(d, "t");
  assert.equal(await run(["truncate", ex, "--rank", "2", "-o", out]), 0);
  assert.deepEqual(readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
  // an error's message cannot be shown, but its status still says it failed
  assert.equal(await run(["truncate", join(fixturesDir, "bad-adapters", "inf-factor.safetensors"), "--rank", "2", "-o", join(d, "u")]), 3);
  assert.equal(await run(["inspect", join(d, "no-such-file")]), 1);
  assert.deepEqual(readdirSync(d), ["t"]);
});

test("outputs are atomic and never overwrite an input", () => {
  const d = tempDir("lora-atomic-");
  const r = lora(["convert", ex, "--to", "peft", "-o", ex]);
  assert.equal(r.code, 2, r.stderr);
  const f = lora(["convert", ex, "--to", "kohya", "-o", join(d, "a.safetensors"), "--json"]);
  assert.equal(f.code, 0);
  assert.equal(JSON.parse(f.stdout).totals.modules, 8);
  assert.equal(lora(["convert", ex, "--to", "kohya", "-o", join(d, "a.safetensors")]).code, 2);
  const fail = lora(["convert", ex, "--to", "kohya", "-o", join(d, "b.safetensors"), "--force"], {
    env: { LORA_TEST: "1", LORA_TEST_FAIL_WRITE_AFTER: "100" },
  });
  assert.equal(fail.code, 1, fail.stderr);
  assert.ok(!existsSync(join(d, "b.safetensors")));
  assert.deepEqual(readdirSync(d).sort(), ["a.safetensors"]);
});

test("backends --json lists js, cpu, cuda with availability", () => {
  const r = lora(["backends", "--json"]);
  assert.equal(r.code, 0);
  const doc = JSON.parse(r.stdout);
  const names = doc.backends.map((b: { name: string }) => b.name).sort();
  assert.deepEqual(names, ["cpu", "cuda", "js"]);
  for (const b of doc.backends) {
    assert.equal(typeof b.available, "boolean");
    assert.equal(typeof b.detail, "string");
    if (!b.available) assert.equal(typeof b.reason, "string");
  }
  assert.equal(doc.backends.find((b: { name: string }) => b.name === "js").available, true);
});
