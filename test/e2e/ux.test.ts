// The experience of the CLI as users run it (issue 7): charts (--plot), the interactive browser
// (--tui) on a real pseudo-terminal, shell completion, examples in every --help, and no animation
// when piped, under CI or with --json (a terminal faked with `script`). Also: vega, resvg, ink and
// React are never loaded unless --plot/--tui asks for them (inspect's start-up time).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixturesDir, loraBin } from "../paths.js";

const ex = join(fixturesDir, "example");
const node = process.execPath;

/** Environment without CI markers (the test may itself run under CI). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TERM: "xterm-256color", ...extra };
  for (const k of ["CI", "CONTINUOUS_INTEGRATION", "NO_COLOR", "FORCE_COLOR"]) if (!(k in extra)) delete env[k];
  return env;
}

function lora(args: string[], opts: { env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {}) {
  const r = spawnSync(node, [...(opts.nodeArgs ?? []), loraBin, ...args], { env: opts.env ?? cleanEnv(), maxBuffer: 1 << 28 });
  return { code: r.status, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8"), raw: r.stdout };
}

const hasScript = spawnSync("script", ["--version"]).status === 0;
const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Run a shell command line on a pseudo-terminal of 100×30 (util-linux `script`); returns the transcript. */
function onTerminal(cmdline: string, env: NodeJS.ProcessEnv) {
  const r = spawnSync("script", ["-qec", `stty cols 100 rows 30; ${cmdline}`, "/dev/null"], { env, encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout };
}

// ora's frames: hide-cursor, and the braille dots of its default spinner.
const SPINNER = /\x1b\[\?25l|[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/;

// ---------------------------------------------------------------------------------------------
// --plot

test("inspect --plot writes an SVG or a PNG chart atomically, next to the normal output", () => {
  const d = tempDir("lora-ux-plot-");
  const svg = join(d, "chart.svg");
  const r = lora(["inspect", ex, "--budget", "16", "--plot", svg]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split("\n").length, 8, "the TSV rows still on stdout");
  assert.equal(r.stdout.trim().split("\n")[0]!.split("\t").length, 10);
  assert.match(r.stderr, /wrote chart .*chart\.svg/);
  const text = readFileSync(svg, "utf8");
  assert.match(text, /^<svg /);
  assert.ok(text.includes("Redistribution (--budget 16 by energy)"));
  const png = join(d, "chart.png");
  const j = lora(["inspect", ex, "--json", "--plot", png]);
  assert.equal(j.code, 0, j.stderr);
  assert.equal(JSON.parse(j.stdout).modules.length, 8, "--json: stdout is still exactly one document");
  assert.equal(j.stderr, "");
  assert.deepEqual([...readFileSync(png).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  // existing output: refused without --force (exit 2), replaced with it
  const again = lora(["inspect", ex, "--plot", svg]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /exists/);
  assert.equal(lora(["inspect", ex, "--plot", svg, "--force"]).code, 0);
  assert.deepEqual(readdirSync(d).sort(), ["chart.png", "chart.svg"], "no temp files");
});

test("inspect --plot: a bad extension is a usage error before any work; an input is never overwritten", () => {
  const d = tempDir("lora-ux-plot-");
  const bad = lora(["inspect", ex, "--plot", join(d, "chart.pdf")]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /\.svg or \.png/);
  assert.equal(bad.stdout, "");
  // an adapter file that happens to end in .svg (the format comes from the keys, not the name)
  const input = join(d, "adapter.svg");
  copyFileSync(join(fixturesDir, "peft-bf16.safetensors"), input);
  const before = readFileSync(input);
  const r = lora(["inspect", input, "--plot", input]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /refusing to overwrite input/);
  assert.deepEqual(readFileSync(input), before);
  assert.deepEqual(readdirSync(d), ["adapter.svg"]);
});

// ---------------------------------------------------------------------------------------------
// Lazy imports: a resolve hook that fails on the heavy packages.

const HOOK = `export async function resolve(s, c, next) {
  if (/^(vega|@resvg\\/resvg-js|ink|react)(\\/|$)/.test(s)) throw new Error("eagerly imported: " + s);
  return next(s, c);
}`;
const REGISTER = `import { register } from "node:module"; register("data:text/javascript," + encodeURIComponent(${JSON.stringify(HOOK)}));`;
const guard = ["--import", "data:text/javascript," + encodeURIComponent(REGISTER)];

test("vega, resvg, ink and React load only with --plot / --tui", () => {
  for (const args of [["inspect", ex], ["inspect", ex, "--json", "--budget", "8"], ["--help"], ["completion", "bash"], ["backends", "--json"]]) {
    const r = lora(args, { nodeArgs: guard });
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  }
  // the guard works: --plot does import vega
  const d = tempDir("lora-ux-lazy-");
  const p = lora(["inspect", ex, "--plot", join(d, "c.svg")], { nodeArgs: guard });
  assert.notEqual(p.code, 0);
  assert.match(p.stderr, /eagerly imported: vega|vega/);
  assert.deepEqual(readdirSync(d), []);
});

// ---------------------------------------------------------------------------------------------
// --tui

test("inspect --tui refuses without a terminal, with --json, and under CI (exit 2)", () => {
  const piped = lora(["inspect", ex, "--tui"]);
  assert.equal(piped.code, 2);
  assert.match(piped.stderr, /--tui needs a terminal/);
  assert.equal(piped.stdout, "");
  assert.equal(lora(["inspect", ex, "--tui", "--json"]).code, 2);
  if (hasScript) {
    const ci = onTerminal(`${node} ${sh(loraBin)} inspect ${sh(ex)} --tui`, cleanEnv({ CI: "1" }));
    assert.equal(ci.code, 2, ci.out);
    assert.match(ci.out, /not available under CI/);
  }
});

const hasPython = spawnSync("python3", ["-c", "import pty, termios, fcntl"]).status === 0;

// Drives the real program on a pseudo-terminal (120×30): waits for the first frame, presses keys,
// waits for what each should show, quits with q. Prints one JSON line: the steps seen and the status.
const DRIVER = String.raw`
import fcntl, json, os, pty, re, select, struct, sys, termios, time
node, lora, adapter = sys.argv[1:4]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    os.execv(node, [node, lora, "inspect", adapter, "--tui"])
buf = b""
def wait(pattern, timeout=20):
    global buf
    end = time.time() + timeout
    while time.time() < end:
        if re.search(pattern.encode(), buf): return True
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: data = os.read(fd, 65536)
            except OSError: return False
            if not data: return False
            buf += data
    return False
seen = {}
seen["first"] = wait("q quit")
mark = len(buf)
os.write(fd, b"n"); seen["sort"] = wait("sorted by \u2016\u0394W\u2016 \u2193")
os.write(fd, b"+"); seen["budget"] = wait("budget K=33")
os.write(fd, b"j"); seen["moved"] = wait("\u203a model.layers.1.self_attn.v_proj")
os.write(fd, b"q")
status = None
end = time.time() + 20
while time.time() < end:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        status = os.waitstatus_to_exitcode(st); break
    try:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r: buf += os.read(fd, 65536)
    except OSError: pass
if status is None: os.kill(pid, 9)
print(json.dumps({"seen": seen, "status": status, "tail": buf[-400:].decode("utf-8", "replace")}))
`;
import { tempDir } from "../temp-dir.js";

test("inspect --tui on a pseudo-terminal: first frame, n sorts, + raises the budget, q quits with 0", {
  skip: !hasPython && "python3 with pty not available",
  timeout: 120_000,
}, () => {
  const r = spawnSync("python3", ["-c", DRIVER, node, loraBin, ex], { env: cleanEnv(), encoding: "utf8", timeout: 100_000 });
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.deepEqual(res.seen, { first: true, sort: true, budget: true, moved: true }, res.tail);
  assert.equal(res.status, 0, res.tail);
});

// ---------------------------------------------------------------------------------------------
// No animation when piped, under CI, or with --json

test("piped: no spinner and no escape sequences; stderr holds only the lora: lines of the scale rule and notes", () => {
  const r = lora(["inspect", ex]);
  assert.equal(r.code, 0);
  assert.ok(!/\x1b/.test(r.stdout + r.stderr));
  assert.deepEqual(r.stderr.trim().split("\n"), ["lora: scale from adapter_config.json: scale = alpha / rank"]);
  assert.equal(lora(["inspect", ex, "-q"]).stderr, "", "--quiet: nothing on stderr");
});

test("a terminal with CI=1: no spinner (inspect and truncate), the table still drawn", { skip: !hasScript && "no script(1)" }, () => {
  const t = onTerminal(`${node} ${sh(loraBin)} inspect ${sh(ex)}`, cleanEnv({ CI: "1" }));
  assert.equal(t.code, 0, t.out);
  assert.match(t.out, /module\s+shape\s+rank/, "the terminal table");
  assert.ok(!SPINNER.test(t.out), JSON.stringify(t.out.slice(0, 300)));
  const d = tempDir("lora-ux-ci-");
  const w = onTerminal(`${node} ${sh(loraBin)} truncate ${sh(ex)} --rank 2 -o ${sh(join(d, "out"))}`, cleanEnv({ CI: "1" }));
  assert.equal(w.code, 0, w.out);
  assert.ok(!SPINNER.test(w.out), JSON.stringify(w.out.slice(0, 300)));
  assert.ok(existsSync(join(d, "out")));
});

test("a terminal without CI: the spinner is drawn on stderr only; stdout stays clean", { skip: !hasScript && "no script(1)" }, () => {
  const d = tempDir("lora-ux-spin-");
  const out = join(d, "stdout.txt");
  // stdout to a file, stderr on the terminal
  const t = onTerminal(`${node} ${sh(loraBin)} inspect ${sh(ex)} > ${sh(out)}`, cleanEnv());
  assert.equal(t.code, 0, t.out);
  assert.ok(SPINNER.test(t.out), `spinner on the terminal (stderr): ${JSON.stringify(t.out.slice(0, 300))}`);
  assert.match(t.out, /\x1b\[\?25h/, "the cursor is shown again");
  const text = readFileSync(out, "utf8");
  assert.ok(!/\x1b/.test(text), "no escape sequences in stdout");
  assert.equal(text.trim().split("\n")[0]!.split("\t").length, 9, "stdout is the TSV");
  // stderr to a file, stdout on the terminal: no spinner anywhere
  const err = join(d, "stderr.txt");
  const u = onTerminal(`${node} ${sh(loraBin)} inspect ${sh(ex)} 2> ${sh(err)}`, cleanEnv());
  assert.equal(u.code, 0, u.out);
  assert.ok(!SPINNER.test(u.out));
  assert.equal(readFileSync(err, "utf8"), "");
  assert.ok(statSync(err).size === 0);
});

test("a terminal with --json (or --quiet): no spinner, and the JSON document parses", { skip: !hasScript && "no script(1)" }, () => {
  const t = onTerminal(`${node} ${sh(loraBin)} inspect ${sh(ex)} --json`, cleanEnv());
  assert.equal(t.code, 0, t.out);
  assert.ok(!SPINNER.test(t.out), JSON.stringify(t.out.slice(0, 200)));
  assert.equal(JSON.parse(t.out.replace(/\r/g, "")).modules.length, 8);
  const q = onTerminal(`${node} ${sh(loraBin)} inspect ${sh(ex)} -q`, cleanEnv());
  assert.equal(q.code, 0);
  assert.ok(!SPINNER.test(q.out));
});

// ---------------------------------------------------------------------------------------------
// Help and completion

test("every command's --help shows an example", () => {
  const top = lora(["--help"]);
  assert.equal(top.code, 0);
  const commands = [...top.stdout.matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]!).filter((c) => c !== "help");
  for (const c of ["inspect", "truncate", "prune", "merge", "convert", "backends", "completion"]) assert.ok(commands.includes(c), c);
  for (const c of commands) {
    const h = lora([c, "--help"]);
    assert.equal(h.code, 0, c);
    assert.match(h.stdout, /\nExamples:\n {2}(lora|source) /, `${c} --help has examples`);
  }
  assert.match(lora(["inspect", "--help"]).stdout, /--plot <file>[\s\S]*--tui/);
});

test("completion: `source <(lora completion bash)` works in bash and completes commands", {
  skip: spawnSync("bash", ["-c", "exit 0"]).status !== 0 && "no bash",
}, () => {
  const d = tempDir("lora-ux-comp-");
  const file = join(d, "run.sh");
  writeFileSync(
    file,
    `set -e
source <(${sh(node)} ${sh(loraBin)} completion bash)
COMP_WORDS=(lora in); COMP_CWORD=1; _lora_completion; echo "\${COMPREPLY[*]}"
COMP_WORDS=(lora inspect x --plot); COMP_CWORD=3; _lora_completion; echo "\${COMPREPLY[*]}"
`,
  );
  const r = spawnSync("bash", ["--norc", "--noprofile", file], { encoding: "utf8", env: cleanEnv() });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, "");
  assert.deepEqual(r.stdout.trim().split("\n"), ["inspect", "--plot"]);
});
