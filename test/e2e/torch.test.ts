// PyTorch checkpoints through the real CLI: a PEFT directory holding only adapter_model.bin gives
// the same inspect report and the same converted tensors (bit for bit) as the safetensors
// directory with the same tensors; hostile pickles exit 3 naming the global and run nothing
// (each payload would create a marker file); an output named .bin is refused.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { serializeSafetensors, type DType, SafetensorsFile } from "../../formats/safetensors/index.js";
import { loraBin } from "../paths.js";
import { torchCheckpoints, torchUnavailable } from "../torch-save.js";
import { tempDir } from "../temp-dir.js";

const skip = torchUnavailable();
const CONFIG = { peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], base_model_name_or_path: "x" };

function lora(args: string[], input?: Buffer) {
  return spawnSync(process.execPath, [loraBin, ...args, "--backend", "js"], { encoding: "utf8", ...(input ? { input } : {}), maxBuffer: 1 << 26 });
}

/** adapter_model.bin and, beside it, the same tensors as adapter_model.safetensors (from torch's bytes), each with the config. */
async function dirs(): Promise<{ bin: string; st: string }> {
  const { dir, manifest } = torchCheckpoints();
  const root = tempDir("lora-torch-e2e-");
  const bin = join(root, "bin");
  const st = join(root, "st");
  for (const d of [bin, st]) {
    mkdirSync(d);
    writeFileSync(join(d, "adapter_config.json"), JSON.stringify(CONFIG));
  }
  copyFileSync(join(dir, "adapter_model.bin"), join(bin, "adapter_model.bin"));
  const specs = Object.entries(manifest["adapter_model.bin"]!).map(([name, t]) => ({
    name,
    dtype: t.dtype as DType,
    shape: t.shape,
    data: Buffer.from(t.hex, "hex"),
  }));
  writeFileSync(join(st, "adapter_model.safetensors"), await serializeSafetensors(specs, null));
  return { bin, st };
}

function report(json: string): unknown {
  const r = JSON.parse(json) as Record<string, unknown>;
  delete r["path"];
  delete r["notes"];
  return r;
}

test("inspect: adapter_model.bin reports exactly what the safetensors directory does (and through stdin)", { skip }, async () => {
  const { bin, st } = await dirs();
  const a = lora(["inspect", bin, "--json"]);
  const b = lora(["inspect", st, "--json"]);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  assert.deepEqual(report(a.stdout), report(b.stdout));
  assert.match(JSON.stringify(JSON.parse(a.stdout).notes), /PyTorch checkpoint \(torch\.save zip format\): 4 tensors/);
  const c = lora(["inspect", "-", "--json"], readFileSync(join(bin, "adapter_model.bin")));
  assert.equal(c.status, 0, c.stderr);
  const plain = lora(["inspect", "-", "--json"], readFileSync(join(st, "adapter_model.safetensors")));
  assert.deepEqual(report(c.stdout), report(plain.stdout));
});

test("convert --to kohya and --to peft: the same tensors, bit for bit, from .bin as from .safetensors", { skip }, async () => {
  const { bin, st } = await dirs();
  const out = tempDir("lora-torch-out-");
  for (const to of ["kohya", "peft"]) {
    const files: SafetensorsFile[] = [];
    for (const [tag, src] of [
      ["bin", bin],
      ["st", st],
    ] as const) {
      const o = join(out, `${tag}-${to}.safetensors`);
      const r = lora(["convert", src, "--to", to, "-o", o]);
      assert.equal(r.status, 0, r.stderr);
      files.push(await SafetensorsFile.open(o));
    }
    const [x, y] = files as [SafetensorsFile, SafetensorsFile];
    assert.deepEqual(
      x.tensors.map((t) => [t.name, t.dtype, t.shape]),
      y.tensors.map((t) => [t.name, t.dtype, t.shape]),
    );
    for (const t of x.tensors) assert.ok(Buffer.from(await x.readRaw(t)).equals(Buffer.from(await y.readRaw(t.name))), `${to}: ${t.name}`);
    assert.deepEqual(x.metadata, y.metadata);
    await x.close();
    await y.close();
  }
});

test("an output named .bin (or .pt) is refused with exit 2 and nothing is written", { skip }, async () => {
  const { bin } = await dirs();
  const out = tempDir("lora-torch-out-");
  for (const name of ["out.bin", "out.pt"]) {
    const r = lora(["convert", bin, "--to", "peft", "-o", join(out, name)]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /lora writes safetensors only/);
  }
  assert.deepEqual(readdirSync(out), []);
});

test("hostile checkpoints: exit 3 naming the global, and no payload ever runs", { skip }, async () => {
  const { dir } = torchCheckpoints();
  const cases: [string, string][] = [
    ["system.pt", "posix.system"],
    ["system-legacy.pt", "posix.system"],
    ["stack-global.pt", "posix.system"],
    ["eval.pt", "__builtin__.eval"],
    ["builtins-eval.pt", "builtins.eval"],
    ["inst.pt", "os.system"],
    ["obj.pt", "os.system"],
    ["other.pt", "collections.Counter"],
  ];
  for (const [name, global] of cases) {
    for (const cmd of [["inspect"], ["convert", "--to", "kohya", "-o", join(dir, `${name}.out.safetensors`)]]) {
      const r = lora([cmd[0]!, join(dir, name), ...cmd.slice(1)]);
      assert.equal(r.status, 3, `${name}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`${global}, which lora refuses`), r.stderr);
      assert.ok(!existsSync(join(dir, `${name}.out.safetensors`)));
    }
  }
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith("EXECUTED")),
    [],
  );
});
