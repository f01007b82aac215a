// How the CLI behaves at its edges (issue 15, docs/cli.md "Conduct"): no arguments, the one error
// format (commander's messages included) with its --help hint, --json errors as one document,
// notes on stderr when piped, the DoRA note, the version from package.json, the global options
// under their own help heading, --header on tab-separated output, the note when auto falls back
// to js, and colour only on a terminal.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixturesDir, loraBin, repoRoot } from "../paths.js";
import { tempDir } from "../temp-dir.js";

const ex = join(fixturesDir, "example");

function lora(args: string[], env: Record<string, string> = {}) {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of ["CI", "NO_COLOR", "FORCE_COLOR"]) if (!(k in env)) delete e[k];
  const r = spawnSync(process.execPath, [loraBin, ...args], { env: e, encoding: "utf8", maxBuffer: 1 << 26 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("no arguments: the usage on stderr, nothing on stdout, exit 2 (also with only global flags)", () => {
  for (const args of [[], ["--no-color"]]) {
    const r = lora(args);
    assert.equal(r.code, 2, args.join(" "));
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^Usage: lora \[options\] \[command\]/);
    assert.match(r.stderr, /inspect \[options\] \[adapter\.\.\.\]/);
  }
  for (const args of [["help"], ["help", "inspect"]]) {
    const h = lora(args);
    assert.equal(h.code, 0, `lora ${args.join(" ")} is a request for help`);
    assert.match(h.stdout, /^Usage: lora/);
  }
  const j = lora(["--json"]);
  assert.equal(j.code, 2);
  assert.equal(JSON.parse(j.stderr).error.exit, 2);
});

test("one error format: commander's messages and ours start with 'lora: error:' and end with the --help hint", () => {
  const cases: [string[], RegExp][] = [
    [["inspect", ex, "--no-such-flag"], /^lora: error: unknown option '--no-such-flag'\n  hint: run 'lora inspect --help' for usage\n$/],
    [["frobnicate"], /^lora: error: unknown command 'frobnicate'\n  hint: run 'lora --help' for usage\n$/],
    [
      ["truncate", ex, "--rank", "x", "-o", "/tmp/never"],
      /^lora: error: option '--rank <R>' argument 'x' is invalid\. --rank must be an integer, got "x"\n  hint: run 'lora truncate --help' for usage\n$/,
    ],
    [
      ["inspect", ex, "--budget", "4", "--energy", "0.5"],
      /^lora: error: --budget and --energy are mutually exclusive\n  hint: run 'lora inspect --help' for usage\n$/,
    ],
    [["inspect"], /^lora: error: missing required argument 'adapter'\n  hint: run 'lora inspect --help' for usage\n$/],
  ];
  for (const [args, re] of cases) {
    const r = lora(args);
    assert.equal(r.code, 2, args.join(" "));
    assert.equal(r.stdout, "");
    assert.match(r.stderr, re);
  }
  // a run-time error keeps its own hint or none, and its own exit code
  const missing = lora(["inspect", "/nonexistent/adapter"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^lora: error: .*nonexistent/);
  assert.ok(!missing.stderr.includes("--help"));
});

test("--json: every error is one JSON document on stderr with code, exit and message; stdout stays empty", () => {
  const cases: [string[], string, number][] = [
    [["inspect", ex, "--no-such-flag", "--json"], "USAGE", 2],
    [["inspect", "--json"], "USAGE", 2],
    [["inspect", join(fixturesDir, "bad-adapters", "nan-factor.safetensors"), "--json"], "INVALID_INPUT", 3],
    [["inspect", ex, "--backend", "cuda", "--json"], "BACKEND_UNAVAILABLE", 4],
    [["inspect", "/nonexistent/adapter", "--json"], "RUNTIME_ERROR", 1],
  ];
  for (const [args, code, exit] of cases) {
    const r = lora(args);
    assert.equal(r.code, exit, args.join(" "));
    assert.equal(r.stdout, "");
    const doc = JSON.parse(r.stderr); // throws unless stderr is exactly one document
    assert.equal(doc.error.code, code);
    assert.equal(doc.error.exit, exit);
    assert.equal(typeof doc.error.message, "string");
  }
});

test("piped inspect: the scale rule and the notes reach stderr (why scale is 2, or alpha/√r with rsLoRA)", () => {
  const a = lora(["inspect", ex]);
  assert.equal(a.code, 0);
  assert.match(a.stderr, /^lora: scale from adapter_config.json: scale = alpha \/ rank$/m);
  assert.equal(a.stdout.split("\n")[0]!.split("\t")[4], "2", "alpha 16 / rank 8");
  const rs = lora(["inspect", join(fixturesDir, "peft-rslora")]);
  assert.match(rs.stderr, /scale = alpha \/ √rank \(rsLoRA\)/);
  const k = lora(["inspect", join(fixturesDir, "kohya-sd.safetensors")]);
  assert.match(k.stderr, /^lora: scale from kohya \.alpha tensors: scale = alpha \/ rank$/m);
  assert.match(k.stderr, /^lora: note: 2 module\(s\) without alpha/m, "the adapter's own notes too");
});

test("DoRA: inspect notes the magnitude vector (JSON notes, piped stderr, terminal table)", () => {
  const dora = join(fixturesDir, "peft-dora");
  const j = JSON.parse(lora(["inspect", dora, "--json"]).stdout);
  assert.ok(
    j.notes.some((n: string) => /DoRA adapter: .*magnitude vector/.test(n)),
    JSON.stringify(j.notes),
  );
  assert.deepEqual(j.modules[0].extras, ["lora_magnitude_vector"]);
  assert.match(lora(["inspect", dora]).stderr, /lora: note: DoRA adapter/);
  const plain = JSON.parse(lora(["inspect", ex, "--json"]).stdout);
  assert.ok(!plain.notes.some((n: string) => /DoRA/.test(n)), "no DoRA note on a plain LoRA");
});

test("--version prints the version of package.json", () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string };
  const r = lora(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), pkg.version);
});

test("--help: a command's own options first, the global options under their own heading", () => {
  for (const cmd of ["inspect", "truncate", "prune", "merge", "convert", "backends"]) {
    const h = lora([cmd, "--help"]).stdout;
    const globalAt = h.indexOf("\nGlobal options:\n");
    assert.ok(globalAt > 0, `${cmd}: no Global options heading`);
    for (const flag of ["--backend <name>", "--json", "--quiet", "--seed <n>", "--force", "--threads <n>", "--header"]) {
      assert.ok(h.indexOf(flag) > globalAt, `${cmd}: ${flag} under Global options`);
    }
    if (cmd !== "backends") assert.ok(h.indexOf("\nOptions:\n") < globalAt, `${cmd}: own options first`);
  }
});

test("--header: a header row on tab-separated output (inspect, backends, write reports); none without it", () => {
  const i = lora(["inspect", ex, "--header", "--budget", "16"]).stdout.split("\n");
  assert.deepEqual(i[0]!.split("\t"), ["module", "shape", "rank", "alpha", "scale", "dtype", "norm", "effective_rank", "singular_values", "allocated_rank"]);
  assert.equal(i[1]!.split("\t").length, 10);
  assert.ok(!lora(["inspect", ex]).stdout.startsWith("module\t"));
  assert.equal(lora(["backends", "--header"]).stdout.split("\n")[0], "backend\tavailable\tdetail_or_reason");
  const d = tempDir("lora-header-");
  const t = lora(["truncate", ex, "--rank", "4", "-o", join(d, "out"), "--header"]).stdout.split("\n");
  assert.deepEqual(t[0]!.split("\t"), ["module", "rank_in", "rank", "relative_error", "retained_energy"]);
  assert.equal(t.filter((l) => l !== "").length, 9);
});

test("auto falling back to js because the addon is missing: one note on stderr (none with -q, --backend js or --json stdout)", () => {
  const env = { LORA_NATIVE_DIR: join(tmpdir(), "lora-no-addon-here") };
  const r = lora(["inspect", ex, "--json"], env);
  assert.equal(r.code, 0, r.stderr);
  JSON.parse(r.stdout);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^lora: note: using the js backend .*cpu backend is unavailable \(LORA_NATIVE_DIR=.*lora-no-addon-here does not exist/);
  assert.equal(lora(["inspect", ex, "--json", "-q"], env).stderr, "");
  assert.equal(lora(["inspect", ex, "--json", "--backend", "js"], env).stderr, "");
});

test("LORA_NATIVE_DIR without the addons: backends names the folder (missing, or without lora_cpu.node), not the install script", () => {
  const missing = join(tmpdir(), "lora-no-addon-here");
  const empty = tempDir("lora-empty-native-");
  for (const [dir, why] of [
    [missing, "does not exist"],
    [empty, "holds no lora_cpu.node"],
  ] as const) {
    const r = lora(["backends"], { LORA_NATIVE_DIR: dir });
    assert.equal(r.code, 0, r.stderr);
    const cpu = r.stdout.split("\n").find((l) => l.startsWith("cpu\t"))!;
    assert.ok(cpu.includes(`LORA_NATIVE_DIR=${dir} ${why}`), cpu);
    assert.doesNotMatch(cpu, /npm install|was not built/);
  }
});

test("lora_alpha: 1e400 in adapter_config.json (Infinity to JSON.parse) is reported as what it is, not as null", () => {
  const d = tempDir("lora-alpha-1e400-");
  cpSync(ex, d, { recursive: true });
  const cfg = join(d, "adapter_config.json");
  writeFileSync(cfg, readFileSync(cfg, "utf8").replace(/"lora_alpha":\s*[^,}]+/, '"lora_alpha": 1e400'));
  assert.match(readFileSync(cfg, "utf8"), /"lora_alpha": 1e400/);
  const r = lora(["inspect", d]);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /lora_alpha must be a finite number, found Infinity \(a number beyond the float64 range, such as 1e400\)/);
});

const hasScript = spawnSync("script", ["--version"]).status === 0;

test("colour (chalk) on a terminal only: a red 'error:' and a bold table header; none under NO_COLOR, --no-color or CI", {
  skip: !hasScript && "util-linux `script` not available (no pseudo-terminal)",
}, () => {
  const run = (args: string, env: Record<string, string> = {}) => {
    const e: NodeJS.ProcessEnv = { ...process.env, TERM: "xterm-256color", ...env };
    for (const k of ["CI", "NO_COLOR", "FORCE_COLOR"]) if (!(k in env)) delete e[k];
    return spawnSync("script", ["-qec", `stty cols 200; ${process.execPath} ${loraBin} ${args}`, "/dev/null"], { env: e, encoding: "utf8" }).stdout;
  };
  assert.match(run("inspect /nonexistent/adapter"), /lora: \x1b\[31m\x1b\[1merror:/);
  assert.match(run(`inspect ${ex}`), /\x1b\[1mmodule +shape/);
  for (const [args, env] of [
    ["inspect /nonexistent/adapter", { NO_COLOR: "1" }],
    ["inspect /nonexistent/adapter --no-color", {}],
    [`inspect ${ex}`, { CI: "1" }],
  ] as const) {
    assert.ok(!/\x1b\[(31|1)m/.test(run(args, env)), `${args} ${JSON.stringify(env)}`);
  }
});
