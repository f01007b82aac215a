// The cpu addon's vectorised F16C paths (binary16 decode, encode, round-and-stack and the
// transposed encode of A', native/src/cpu/kernels.cc) against its portable loops: the same command
// run with LORA_KERNELS=portable must write the same bytes and print the same numbers. Shapes are
// drawn so that rows, columns and ranks are not multiples of the 8-lane vectors (the tails run too).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { resolveBackend } from "../../linalg/backend.js";
import { Rng } from "../../linalg/random.js";
import { loraBin } from "../paths.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-kernels-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function cpuSkip(): Promise<string | false> {
  try {
    await resolveBackend("cpu");
    return false;
  } catch (e) {
    return `cpu backend unavailable: ${(e as Error).message}`;
  }
}

function lora(args: string[], portable: boolean): { status: number; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, LORA_TEST: "1", NO_COLOR: "1" };
  if (portable) env["LORA_KERNELS"] = "portable";
  else delete env["LORA_KERNELS"];
  const r = spawnSync(process.execPath, [loraBin, ...args], { env, encoding: "utf8", maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A kohya file of `count` modules in `dtype`, shapes drawn from the seed. */
async function writeAdapter(path: string, dtype: "F16" | "BF16" | "F32", seed: number, count: number): Promise<void> {
  const rng = new Rng(seed);
  const specs: TensorSpec[] = [];
  for (let i = 0; i < count; i++) {
    const r = 9 + rng.int(20),
      out = 33 + rng.int(90),
      inn = 33 + rng.int(90);
    const stem = `lora_unet_blk_${i}_proj`;
    specs.push(
      { name: `${stem}.lora_down.weight`, dtype, shape: [r, inn], data: encodeFloats(dtype, Float64Array.from(rng.normals(r * inn, 0.5))) },
      { name: `${stem}.lora_up.weight`, dtype, shape: [out, r], data: encodeFloats(dtype, Float64Array.from(rng.normals(out * r, 0.02))) },
      { name: `${stem}.alpha`, dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(r / 2)) },
    );
  }
  writeFileSync(path, await serializeSafetensors(specs, null));
}

test("LORA_KERNELS=portable and the F16C paths write the same bytes (truncate, all splits, F16/BF16/F32 in)", async (t) => {
  const skip = await cpuSkip();
  if (skip) return t.skip(skip);
  const seed = Number(process.env["LORA_SEED"] ?? Date.now() % 1_000_000);
  t.diagnostic(`seed ${seed}`);
  for (const dtype of ["F16", "BF16", "F32"] as const) {
    const input = join(tmp, `in-${dtype}.safetensors`);
    await writeAdapter(input, dtype, seed, 6);
    for (const [flags, tag] of [
      [["--rank", "7"], "r7"],
      [["--rank", "16", "--split", "all-in-up"], "r16"],
      [["--energy", "0.9"], "e09"],
    ] as const) {
      const outs: Buffer[] = [];
      const reports: unknown[] = [];
      for (const portable of [false, true]) {
        const out = join(tmp, `${dtype}-${tag}-${portable ? "portable" : "native"}.safetensors`);
        const r = lora(["truncate", input, ...flags, "-o", out, "--backend", "cpu", "--json"], portable);
        assert.equal(r.status, 0, r.stderr);
        outs.push(readFileSync(out));
        const rep = JSON.parse(r.stdout) as { output: string };
        rep.output = "";
        reports.push(rep);
      }
      assert.ok(outs[0]!.equals(outs[1]!), `${dtype} ${tag}: the two routes wrote different bytes (seed ${seed})`);
      assert.deepEqual(reports[0], reports[1], `${dtype} ${tag}: reports differ (seed ${seed})`);
    }
    const a = lora(["inspect", input, "--backend", "cpu", "--json"], false);
    const b = lora(["inspect", input, "--backend", "cpu", "--json"], true);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(a.stdout, b.stdout, `${dtype}: inspect differs between the routes (seed ${seed})`);
  }
});
