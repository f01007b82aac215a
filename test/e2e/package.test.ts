// The npm package as a user gets it (issue 15): the working tree copied to an empty folder (as a
// fresh clone: no dist/, no native/build), packed there (prepack builds dist/), the tarball's
// contents checked (dist without tests, native sources, docs, the example; no tests, benches,
// bad fixtures or the CUDA harness), then installed with `npm install -g --prefix` into an empty
// prefix (dependencies from the registry; the addon builds in the install script) and run from
// there: `lora --version`, `lora inspect` on the shipped example, `lora backends --json`.
// Skips with one line when git or the registry is unreachable; LORA_SKIP_PACK=1 skips it too.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { repoRoot } from "../paths.js";
import { tempDir } from "../temp-dir.js";

const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { name: string; version: string };

function skipReason(): string | false {
  if (process.env["LORA_SKIP_PACK"] === "1") return "LORA_SKIP_PACK=1";
  if (spawnSync("git", ["-C", repoRoot, "rev-parse", "--git-dir"], { encoding: "utf8" }).status !== 0)
    return "not a git checkout (the test packs the tracked files)";
  const ping = spawnSync("npm", ["ping"], { encoding: "utf8", timeout: 30_000 });
  if (ping.status !== 0) return "the npm registry is unreachable (npm ping failed); installing needs it for the dependencies";
  return false;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env, timeout = 600_000) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: "utf8", timeout, maxBuffer: 1 << 26 });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "", error: r.error };
}

test("npm pack → npm install -g --prefix <empty> → lora --version and lora inspect on the shipped example", { skip: skipReason(), timeout: 1_200_000 }, () => {
  const d = tempDir("lora-pack-");
  const src = join(d, "src"),
    prefix = join(d, "prefix");
  mkdirSync(src);
  // 1. A clone's files (tracked + new, not ignored): no dist/, no native/build.
  // (node_modules and native/build may be symlinks, which the ignore rules written for folders miss.)
  const files = run("git", ["ls-files", "-co", "--exclude-standard", "-z"], repoRoot);
  assert.equal(files.code, 0, files.stderr);
  const list = files.stdout.split("\0").filter((f) => f && !/^(node_modules|dist|native\/build)(\/|$)/.test(f));
  writeFileSync(join(d, "files.lst"), list.join("\0"));
  const tar = spawnSync("sh", ["-c", `tar --null -cf - -T '${join(d, "files.lst")}' | tar -xf - -C '${src}'`], { cwd: repoRoot, encoding: "utf8" });
  assert.equal(tar.status, 0, tar.stderr);
  assert.ok(!existsSync(join(src, "dist")), "the copy has no dist/");
  // The dev dependencies (typescript) prepack needs: this checkout's node_modules.
  symlinkSync(join(repoRoot, "node_modules"), join(src, "node_modules"));
  // 2. Pack (prepack: clean + build).
  const p = run("npm", ["pack", "--json", "--pack-destination", d], src);
  assert.equal(p.code, 0, p.stderr);
  const info = JSON.parse(p.stdout.slice(p.stdout.indexOf("["))) as { filename: string; files: { path: string }[] }[];
  const paths = info[0]!.files.map((f) => f.path);
  for (const must of [
    "bin/lora.js",
    "dist/bin/main.js",
    "dist/commands/index.js",
    "dist/linalg/js/index.js",
    "native/binding.gyp",
    "native/build.js",
    "native/src/cpu/addon.cc",
    "docs/cli.md",
    "docs/algorithms.md",
    "docs/formats.md",
    "fixtures/example/adapter_model.safetensors",
    "fixtures/example/adapter_config.json",
    "README.md",
    "LICENSE",
    "package.json",
  ]) {
    assert.ok(paths.includes(must), `the package has ${must}`);
  }
  const bad = paths.filter((f) =>
    /\.test\.js$|^test\/|^bench\/|^dist\/(test|bench|fixtures)\/|^fixtures\/(bad|bad-adapters|prune|diffusers)\/|cuda-harness|\.ts$|tsbuildinfo/.test(f),
  );
  assert.deepEqual(bad, [], "no tests, benches, bad fixtures, TypeScript sources or the CUDA harness");
  // 3. Install into an empty prefix (the registry provides the dependencies; the install script builds the addon).
  const tgz = join(d, info[0]!.filename);
  const env = { ...process.env, LORA_CUDA: "0" };
  const i = run("npm", ["install", "-g", "--prefix", prefix, "--foreground-scripts", "--no-audit", "--no-fund", tgz], d, env);
  assert.equal(i.code, 0, i.stderr);
  assert.match(i.stderr, /^lora native: /m, "the install script says what it built, on stderr");
  // 4. Run it from there, with a PATH that has only node (no checkout on it).
  const lora = join(prefix, "bin", "lora");
  const runEnv = { PATH: `${join(prefix, "bin")}:${process.execPath.replace(/\/node$/, "")}:/usr/bin:/bin`, HOME: d };
  const v = run(lora, ["--version"], d, runEnv);
  assert.equal(v.code, 0, v.stderr);
  assert.equal(v.stdout.trim(), pkg.version);
  const example = join(prefix, "lib", "node_modules", ...pkg.name.split("/"), "fixtures", "example");
  const j = run(lora, ["inspect", example, "--json"], d, runEnv);
  assert.equal(j.code, 0, j.stderr);
  const doc = JSON.parse(j.stdout) as { format: string; modules: { rank: number; scale: number }[] };
  assert.equal(doc.format, "peft");
  assert.equal(doc.modules.length, 8);
  assert.ok(doc.modules.every((m) => m.rank === 8 && m.scale === 2));
  const t = run(lora, ["inspect", example], d, runEnv);
  assert.equal(t.code, 0, t.stderr);
  assert.equal(t.stdout.trim().split("\n").length, 8);
  // 5. The addon built on install where the checkout's own build has a working cpu backend.
  const here = JSON.parse(run(process.execPath, [join(repoRoot, "bin", "lora.js"), "backends", "--json"], repoRoot).stdout) as {
    backends: { name: string; available: boolean }[];
  };
  const there = JSON.parse(run(lora, ["backends", "--json"], d, runEnv).stdout) as { backends: { name: string; available: boolean; reason?: string }[] };
  const cpuHere = here.backends.find((b) => b.name === "cpu")!.available,
    cpuThere = there.backends.find((b) => b.name === "cpu")!;
  if (cpuHere) assert.ok(cpuThere.available, `cpu backend in the installed package: ${cpuThere.reason}`);
});

test("the install script without a working compiler: exit 0, one line on stderr saying why, the reason in status.json", () => {
  // A copy of native/ (the script cleans and rebuilds native/build, which must stay untouched here).
  const d = tempDir("lora-nocc-");
  const tar = spawnSync("sh", ["-c", `tar -cf - --exclude=build native package.json | tar -xf - -C '${d}'`], { cwd: repoRoot, encoding: "utf8" });
  assert.equal(tar.status, 0, tar.stderr);
  symlinkSync(join(repoRoot, "node_modules"), join(d, "node_modules"));
  const r = run(process.execPath, [join(d, "native", "build.js")], d, { ...process.env, CXX: "/bin/false", CC: "/bin/false", LORA_CUDA: "0" }, 300_000);
  assert.equal(r.code, 0, "the install never fails");
  assert.equal(r.stdout, "");
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^lora native: cpu addon NOT built \(build failed: .*\); the js backend will be used/);
  const status = JSON.parse(readFileSync(join(d, "native", "build", "status.json"), "utf8")) as { cpu: { built: boolean; reason: string } };
  assert.equal(status.cpu.built, false);
  assert.match(status.cpu.reason, /^build failed/);
});
