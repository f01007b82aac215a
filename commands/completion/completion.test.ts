// lora completion bash|zsh: the scripts are derived from the commander program (every command and
// flag, the choices of --backend/--method/--to …), source cleanly, and complete what they should.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { buildProgram, main } from "../index.js";
import type { Ctx } from "../support/context.js";
import { bashScript, describeProgram, zshScript } from "./index.js";
import { tempDir } from "../../test/temp-dir.js";

function fakeCtx(): Ctx & { out: () => string; err: () => string } {
  const stdout = new PassThrough(),
    stderr = new PassThrough();
  const o: Buffer[] = [],
    e: Buffer[] = [];
  stdout.on("data", (c: Buffer) => o.push(c));
  stderr.on("data", (c: Buffer) => e.push(c));
  return {
    stdin: new PassThrough(),
    stdout,
    stderr,
    env: {},
    color: false,
    out: () => Buffer.concat(o).toString("utf8"),
    err: () => Buffer.concat(e).toString("utf8"),
  };
}

const program = await buildProgram(fakeCtx());
const model = describeProgram(program);
const dir = tempDir("lora-completion-");
const has = (shell: string) => spawnSync(shell, ["-c", "exit 0"]).status === 0;

/** Run bash's completion function for a command line (the last word is the one being completed). */
function bashComplete(script: string, words: string[]): string[] {
  const file = join(dir, "lora.bash");
  writeFileSync(file, script);
  const arr = words.map((w) => `'${w}'`).join(" ");
  const r = spawnSync(
    "bash",
    [
      "--norc",
      "--noprofile",
      "-c",
      `source ${file} && COMP_WORDS=(${arr}) && COMP_CWORD=${words.length - 1} && _lora_completion && printf '%s\\n' "\${COMPREPLY[@]}"`,
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean);
}

test("the model is the program: every registered command with all its options", () => {
  assert.deepEqual(
    model.commands.map((c) => c.name),
    program.commands.map((c) => c.name()),
  );
  for (const name of ["inspect", "truncate", "prune", "merge", "convert", "backends", "completion"])
    assert.ok(
      model.commands.some((c) => c.name === name),
      name,
    );
  for (const c of program.commands) {
    const spec = model.commands.find((x) => x.name === c.name())!;
    for (const o of c.options)
      assert.ok(
        spec.options.some((s) => s.flags.includes(o.long!)),
        `${c.name()} ${o.long}`,
      );
    assert.ok(spec.options.some((s) => s.flags.includes("--help")));
  }
  const inspect = model.commands.find((c) => c.name === "inspect")!;
  assert.deepEqual(inspect.options.find((o) => o.flags.includes("--score"))!.choices, ["energy", "ratio", "params"]);
  assert.ok(inspect.options.find((o) => o.flags.includes("--plot"))!.file, "--plot <file> completes file names");
});

test("bash: sources without error, registers `complete -F`, lists the commands", { skip: !has("bash") && "no bash" }, () => {
  const script = bashScript(program);
  const file = join(dir, "check.bash");
  writeFileSync(file, script);
  const r = spawnSync("bash", ["--norc", "--noprofile", "-c", `set -e; source ${file}; complete -p lora`], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, "");
  assert.match(r.stdout, /complete .*-F _lora_completion lora/);
  assert.deepEqual(bashComplete(script, ["lora", ""]).sort(), program.commands.map((c) => c.name()).sort());
  assert.deepEqual(bashComplete(script, ["lora", "tr"]), ["truncate"]);
});

test("bash: flags per command, the values of choice flags, the shells of `completion`", { skip: !has("bash") && "no bash" }, () => {
  const script = bashScript(program);
  assert.deepEqual(bashComplete(script, ["lora", "inspect", "x", "--sc"]), ["--score"]);
  assert.ok(bashComplete(script, ["lora", "inspect", "--"]).includes("--plot"));
  assert.ok(bashComplete(script, ["lora", "inspect", "--"]).includes("--tui"));
  assert.deepEqual(bashComplete(script, ["lora", "convert", "a", "--to", ""]), ["peft", "kohya", "diffusers"]);
  assert.deepEqual(bashComplete(script, ["lora", "--no-color", "merge", "a", "b", "--method", "t"]), ["ties"]);
  assert.deepEqual(bashComplete(script, ["lora", "truncate", "a", "--backend", ""]), ["auto", "cpu", "cuda", "js"]);
  assert.deepEqual(bashComplete(script, ["lora", "completion", ""]), ["bash", "zsh"]);
  assert.deepEqual(bashComplete(script, ["lora", "inspect", "--plot", ""]), [], "file names: left to readline (-o default)");
  assert.deepEqual(bashComplete(script, ["lora", "--v"]), ["--version"]);
});

test("zsh: sources without error after compinit and registers _lora", { skip: !has("zsh") && "no zsh" }, () => {
  const file = join(dir, "_lora");
  writeFileSync(file, zshScript(program));
  const r = spawnSync("zsh", ["-f", "-c", `autoload -U compinit && compinit -u -D && source ${file} && print -r -- "\${_comps[lora]}" && whence -w _lora`], {
    encoding: "utf8",
    env: { ...process.env, HOME: dir },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, "");
  assert.match(r.stdout, /^_lora\n_lora: function/);
});

test("zsh script: every command described, choices and file values in the _arguments specs", () => {
  const z = zshScript(program);
  assert.match(z, /^#compdef lora\n/);
  for (const c of model.commands) assert.ok(z.includes(`    '${c.name}:`), c.name);
  assert.ok(z.includes("'--score[how --budget ranks components]:score:(energy ratio params)'"));
  assert.ok(z.includes("'--plot[") && /--plot\[[^\]]*\]:file:_files'/.test(z));
  assert.ok(z.includes("'(-o --output)'{-o,--output}'["));
  assert.ok(z.includes("'1:completion argument:(bash zsh)'"));
  // descriptions cannot break out of their quotes or brackets
  for (const line of z.split("\n").filter((l) => l.trim().startsWith("'--"))) assert.equal((line.match(/'/g) ?? []).length % 2, 0, line);
});

test("lora completion bash|zsh prints the script on stdout; another shell is a usage error (2)", async () => {
  const b = fakeCtx();
  assert.equal(await main(["completion", "bash"], b), 0);
  assert.equal(b.out(), bashScript(await buildProgram(fakeCtx())));
  const z = fakeCtx();
  assert.equal(await main(["completion", "zsh"], z), 0);
  assert.match(z.out(), /^#compdef lora/);
  const f = fakeCtx();
  assert.equal(await main(["completion", "fish"], f), 2);
  assert.match(f.err(), /Allowed choices are bash, zsh/);
  assert.equal(f.out(), "");
});
