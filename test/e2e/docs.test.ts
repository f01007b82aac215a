// The documentation is true to the program (issue 15):
//  - every --json output of every command, run on the shipped fixtures, validates against its JSON
//    Schema in docs/schemas (and a schema rejects a document with a field removed or added, so the
//    check can fail);
//  - every flag a command's --help lists is named in that command's section of docs/cli.md;
//  - README.md, docs/ and the product's folders name no ../shared path;
//  - every `lora …` command of README.md runs as printed from the repository root (outputs go to
//    a fresh folder instead of /tmp/lora-demo), exits as the README shows, and, on a pseudo-
//    terminal, prints the lines the README shows (numbers masked, spacing collapsed).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { validate } from "../json-schema.js";
import { writeGeneratedModel, type PairSpec } from "../models.js";
import { fixturesDir, loraBin, repoRoot } from "../paths.js";
import { tempDir } from "../temp-dir.js";

const schemas = join(repoRoot, "docs", "schemas");
const F = fixturesDir;

function lora(args: string[], cwd = repoRoot) {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" };
  const r = spawnSync(process.execPath, [loraBin, ...args], { cwd, env, encoding: "utf8", maxBuffer: 1 << 26 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function schema(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(schemas, name), "utf8")) as Record<string, unknown>;
}

function check(doc: unknown, name: string, what: string): void {
  const errs = validate(doc, schema(name), schemas);
  assert.deepEqual(errs, [], `${what} against ${name}:\n${errs.slice(0, 10).join("\n")}`);
}

test("every --json output validates against its schema in docs/schemas", async () => {
  const d = tempDir("lora-docs-json-");
  const ok = (args: string[]) => {
    const r = lora([...args, "--json"]);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return JSON.parse(r.stdout) as unknown;
  };
  // inspect: plain, budget (every score), energy, kohya, diffusers, SoRA, DoRA, conv/embedding
  for (const args of [
    [join(F, "example")],
    [join(F, "example"), "--budget", "20"],
    [join(F, "distilbert-like-a"), "--budget", "30", "--score", "ratio"],
    [join(F, "example"), "--budget", "20", "--score", "params", "--min-rank", "1"],
    [join(F, "peft-rslora"), "--energy", "0.9"],
    [join(F, "kohya-sd.safetensors")],
    [join(F, "diffusers", "sd15-second.safetensors")],
    [join(F, "prune", "sora-checkpoint.safetensors")],
    [join(F, "peft-dora")],
    [join(F, "peft-f16-embed-conv")],
  ])
    check(ok(["inspect", ...args]), "inspect.schema.json", `inspect ${args.join(" ")}`);
  // truncate: every selection, both methods, --unit
  let n = 0;
  const out = (ext = "") => join(d, `o${n++}${ext}`);
  for (const args of [
    [join(F, "example"), "--rank", "4"],
    [join(F, "example"), "--energy", "0.9", "--split", "all-in-up"],
    [join(F, "distilbert-like-a"), "--budget", "30", "--score", "ratio"],
    [join(F, "kohya-sd.safetensors"), "--kohya-compat", "--dynamic", "sv_fro", "--dynamic-param", "0.9", "--rank", "3"],
    [join(F, "kohya-dylora.safetensors"), "--rank", "4", "--alpha-mode", "kohya-train"],
    [join(F, "peft-rslora"), "--rank", "2", "--to", "kohya", "--dtype", "BF16"],
  ])
    check(
      ok(["truncate", ...args, "-o", out(args.includes("kohya") || args[0]!.endsWith(".safetensors") ? ".safetensors" : "")]),
      "truncate.schema.json",
      `truncate ${args.join(" ")}`,
    );
  check(ok(["truncate", join(F, "kohya-dylora.safetensors"), "--unit", "2", "-o", out(".safetensors")]), "truncate-unit.schema.json", "truncate --unit");
  // prune: the three methods
  check(ok(["prune", join(F, "prune", "sora-checkpoint.safetensors"), "--method", "sora", "-o", out()]), "prune.schema.json", "prune sora");
  check(ok(["prune", join(F, "example"), "--method", "modules", "--match", "v_proj", "--min-norm", "0.5", "-o", out()]), "prune.schema.json", "prune modules");
  const lp = join(d, "lp");
  mkdirSync(lp);
  check(
    ok([
      "prune",
      join(F, "prune", "adapter-mha"),
      "--method",
      "loraprune",
      "--base",
      join(F, "prune", "llama-mha"),
      "--ratio",
      "0.5",
      "--base-out",
      join(lp, "base"),
      "-o",
      join(lp, "adapter"),
    ]),
    "prune.schema.json",
    "prune loraprune",
  );
  // merge: every method
  const ab = [join(F, "distilbert-like-a"), join(F, "distilbert-like-b"), "--passthrough", "drop"];
  for (const m of ["cat", "svd", "linear", "ties", "dare", "dare_ties", "magnitude_prune", "lego", "fair"]) {
    check(ok(["merge", ...ab, "--method", m, "--rank", "4", "-o", out()]), "merge.schema.json", `merge ${m}`);
  }
  check(ok(["merge", ...ab, "--method", "ffa", "--project", "-o", out()]), "merge.schema.json", "merge ffa --project");
  check(ok(["merge", join(F, "example"), join(F, "example"), "--method", "ffa", "-o", out()]), "merge.schema.json", "merge ffa (shared A)");
  // convert, backends
  for (const to of ["kohya", "peft", "diffusers"])
    check(ok(["convert", join(F, "example"), "--to", to, "-o", out(to === "peft" ? "" : ".safetensors")]), "convert.schema.json", `convert --to ${to}`);
  check(ok(["backends"]), "backends.schema.json", "backends");
  // diff, lint and the catalog modes
  // modules on one side only: the example against itself without its v_proj modules
  const qOnly = out();
  ok(["prune", join(F, "example"), "--method", "modules", "--match", "v_proj", "-o", qOnly]);
  check(ok(["diff", join(F, "example"), qOnly]), "diff.schema.json", "diff (modules only in A)");
  check(ok(["diff", join(F, "kohya-sd.safetensors"), join(F, "kohya-sd.safetensors"), "--signs"]), "diff.schema.json", "diff --signs");
  check(ok(["lint", join(F, "example"), join(F, "kohya-sd.safetensors")]), "lint.schema.json", "lint");
  check(ok(["inspect", join(F, "example"), join(F, "kohya-sd.safetensors")]), "inspect-catalog.schema.json", "inspect (catalog)");
  check(
    ok(["truncate", join(F, "example"), join(F, "peft-bf16.safetensors"), "--max-bytes", "20KB", "-o", out()]),
    "truncate-catalog.schema.json",
    "truncate --max-bytes",
  );
  check(
    ok(["truncate", join(F, "example"), join(F, "kohya-sd.safetensors"), "--rank", "2", "-o", out()]),
    "truncate-catalog.schema.json",
    "truncate (catalog) --rank",
  );
  // extract and apply on a small generated Llama-shaped pair
  const spec: PairSpec = { family: "llama", size: { layers: 1, hidden: 32, inter: 48, vocab: 16 }, dtype: "F32", rank: 3, noise: 1e-3, seed: 7 };
  const base = join(d, "base"),
    tuned = join(d, "tuned");
  await writeGeneratedModel(base, spec, false, 2);
  await writeGeneratedModel(tuned, spec, true, 2);
  const ad = out();
  check(ok(["extract", base, tuned, "--rank", "3", "-o", ad]), "extract.schema.json", "extract --rank");
  check(ok(["extract", base, tuned, "--energy", "0.9", "--exact", "-o", out()]), "extract.schema.json", "extract --energy --exact");
  check(ok(["apply", base, ad, "-o", out()]), "apply.schema.json", "apply");
  // errors: usage, invalid input, unavailable backend, run-time
  for (const args of [
    ["inspect", join(F, "example"), "--nope"],
    ["inspect", join(F, "bad-adapters", "nan-factor.safetensors")],
    ["inspect", join(F, "example"), "--backend", "cuda"],
    ["inspect", "/nonexistent"],
    ["merge", ...ab.slice(0, 2), "-o", out()],
  ]) {
    const r = lora([...args, "--json"]);
    assert.notEqual(r.code, 0);
    const doc = JSON.parse(r.stderr) as { error: { exit: number } };
    check(doc, "error.schema.json", args.join(" "));
    assert.equal(doc.error.exit, r.code);
  }
});

test("the schemas can fail: a missing required field, an unknown field and a wrong type are each reported", () => {
  const doc = JSON.parse(lora(["inspect", join(F, "example"), "--json"]).stdout) as Record<string, unknown> & { modules: Record<string, unknown>[] };
  const missing = structuredClone(doc);
  delete missing["totals"];
  assert.match(validate(missing, schema("inspect.schema.json"), schemas).join("\n"), /missing totals/);
  const extra = structuredClone(doc);
  extra.modules[0]!["surprise"] = 1;
  assert.match(validate(extra, schema("inspect.schema.json"), schemas).join("\n"), /unexpected property surprise/);
  const wrong = structuredClone(doc);
  wrong.modules[0]!["rank"] = "8";
  assert.match(validate(wrong, schema("inspect.schema.json"), schemas).join("\n"), /rank: string, expected integer/);
});

/** The section of docs/cli.md for one command: from its `## name` heading to the next `## `. */
function section(md: string, name: string): string {
  const start = md.indexOf(`\n## ${name}\n`);
  assert.ok(start >= 0, `docs/cli.md has a section ## ${name}`);
  const end = md.indexOf("\n## ", start + 4);
  return md.slice(start, end < 0 ? undefined : end);
}

test("docs/cli.md names every flag of every command (and the global options once)", () => {
  const md = readFileSync(join(repoRoot, "docs", "cli.md"), "utf8");
  const global = section(md, "Global options");
  for (const cmd of ["inspect", "truncate", "prune", "merge", "convert", "diff", "lint", "extract", "apply", "backends", "completion"]) {
    const help = lora([cmd, "--help"]).stdout;
    const [own, shared = ""] = help.split("\nGlobal options:\n");
    const flags = (s: string) => [...s.matchAll(/^ {2}(?:-\w, )?(--[\w-]+)/gm)].map((m) => m[1]!).filter((f) => f !== "--help");
    const sec = section(md, cmd);
    const names = (text: string, f: string) => new RegExp("`(-\\w, )?" + f + "[` ]").test(text);
    for (const f of flags(own!)) assert.ok(names(sec, f), `docs/cli.md ## ${cmd} names ${f}`);
    for (const f of flags(shared)) assert.ok(names(global, f), `docs/cli.md ## Global options names ${f}`);
  }
  for (const f of readdirSync(schemas)) assert.ok(md.includes(`schemas/${f}`), `docs/cli.md links ${f}`);
});

test("README.md, docs/ and the product's folders name no ../shared path", () => {
  const hits: string[] = [];
  const walk = (p: string): void => {
    const st = statSync(p);
    if (st.isDirectory()) {
      if (p.endsWith("build") || p.endsWith("node_modules")) return;
      for (const e of readdirSync(p)) walk(join(p, e));
    } else if (/\.(ts|tsx|js|mjs|md|json|cc|h|cu|gyp|py|sh|txt)$/.test(p) && readFileSync(p, "utf8").includes("shared/")) hits.push(p);
  };
  for (const p of ["README.md", "docs", "bin", "commands", "formats", "linalg", "native"]) walk(join(repoRoot, p));
  assert.deepEqual(hits, []);
});

// ---------------------------------------------------------------------------------------------
// README commands

interface Example {
  cmd: string;
  expect: string[];
  fails: boolean;
}

/** `lora …` command lines of README's sh and console blocks (continuations joined), with the output the README prints after each. */
function readmeExamples(): Example[] {
  const md = readFileSync(join(repoRoot, "README.md"), "utf8");
  const out: Example[] = [];
  for (const m of md.matchAll(/```(sh|console)\n([\s\S]*?)```/g)) {
    const lines = m[2]!.split("\n");
    let cur: Example | undefined;
    for (let i = 0; i < lines.length; i++) {
      let line = lines[i]!;
      const isConsole = m[1] === "console";
      if (isConsole && !line.startsWith("$ ")) {
        if (cur && line.trim()) cur.expect.push(line);
        continue;
      }
      if (isConsole) line = line.slice(2);
      while (line.endsWith("\\") && i + 1 < lines.length) line = line.slice(0, -1) + lines[++i]!.trim();
      const code = line.replace(/\s+#.*$/, "").trim();
      cur = undefined;
      if (!/^(lora |source <\(lora |mkdir )/.test(code)) continue;
      cur = { cmd: code, expect: [], fails: false };
      out.push(cur);
    }
  }
  for (const e of out) e.fails = e.expect.some((l) => l.startsWith("lora: error:"));
  return out;
}

const mask = (s: string) =>
  s
    .replace(/-?\d+(\.\d+)?(e[-+]?\d+)?/gi, "#")
    .replace(/\s+/g, " ")
    .trim();

test("every lora command of README.md runs as printed from the repository root", { timeout: 600_000 }, () => {
  const examples = readmeExamples();
  assert.ok(examples.length >= 25, `found ${examples.length} commands`);
  const d = tempDir("lora-readme-");
  const bin = join(d, "bin");
  mkdirSync(bin);
  writeFileSync(join(bin, "lora"), `#!/bin/sh\nexec '${process.execPath}' '${loraBin}' "$@"\n`);
  chmodSync(join(bin, "lora"), 0o755);
  const demo = join(d, "demo");
  const hasJq = spawnSync("jq", ["--version"]).status === 0;
  const hasScript = spawnSync("script", ["--version"]).status === 0;
  const hasZsh = spawnSync("zsh", ["--version"]).status === 0;
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env["PATH"]}`, NO_COLOR: "1", CI: "1", TERM: "xterm" };
  for (const e of examples) {
    if (e.cmd.includes("--tui")) continue; // interactive: covered by test/e2e/ux.test.ts on a pseudo-terminal
    if (!hasJq && e.cmd.includes("| jq")) {
      console.log(`skipped (no jq): ${e.cmd}`);
      continue;
    }
    // zsh lines run in zsh (when it is installed), with $fpath pointing into the scratch folder.
    const zsh = e.cmd.includes("completion zsh");
    if (zsh && !hasZsh) {
      console.log(`skipped (no zsh): ${e.cmd}`);
      continue;
    }
    const file = join(d, "cmd.sh");
    const prologue = zsh
      ? `autoload -Uz compinit && compinit -u -d ${join(d, "zcompdump")}\nfpath=(${join(d, "fpath")} $fpath); mkdir -p ${join(d, "fpath")}\n`
      : "";
    writeFileSync(file, `set -o pipefail\n${prologue}${e.cmd.replaceAll("/tmp/lora-demo", demo)}\n`);
    const shell = zsh ? "zsh" : "bash";
    // On a pseudo-terminal when possible (the README shows terminal tables), else plainly.
    const r =
      hasScript && e.expect.length
        ? spawnSync("script", ["-qec", `stty cols 200; ${shell} ${file}`, "/dev/null"], { cwd: repoRoot, env, encoding: "utf8", timeout: 120_000 })
        : spawnSync(shell, [file], { cwd: repoRoot, env, encoding: "utf8", timeout: 120_000 });
    const all = `${r.stdout}${r.stderr ?? ""}`.replace(/\r/g, "").replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, ""); // jq colours a terminal whatever NO_COLOR says
    if (e.fails) assert.notEqual(r.status, 0, `README shows an error: ${e.cmd}`);
    else assert.equal(r.status, 0, `${e.cmd}\n${all}`);
    if (!hasScript || e.cmd.startsWith("lora backends")) continue; // machine-dependent output
    const got = new Set(all.split("\n").map((l) => mask(l.replaceAll(demo, "/tmp/lora-demo"))));
    for (const line of e.expect) {
      if (line.includes("…")) continue;
      assert.ok(got.has(mask(line)), `${e.cmd}: README line not printed:\n  ${line}\n--- got:\n${all}`);
    }
  }
});
