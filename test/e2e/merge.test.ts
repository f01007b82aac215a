// `lora merge` end to end: spawns bin/lora.js. The two real DistilBERT adapters of
// ../shared/fixtures/real (imdb, emotion: same targets, different classifier heads) are merged
// with every method into PEFT directories that must reload (loadAdapter checks config ranks
// against tensor shapes), with a per-module error report that agrees with a dense float64
// recomputation (≤ 1e-6 absolute on the relative error). When its prerequisites are present
// (Debian python3 with torch, PEFT's src/ at $LORA_PEFT_SRC or /tmp/peft-src; test/peft-check.ts),
// ../shared/tools/peft-check loads each output with PEFT's own code and its ΔW must equal ours to
// 1e-6 relative.
// Also: exit codes and "nothing written" for refusals, PEFT + kohya inputs mixed, --to kohya,
// byte-identical output for the same seed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { fixturesDir, loraBin, realDir } from "../paths.js";
import { peftCheck, peftCheckUnavailable } from "../peft-check.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-merge-e2e-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function lora(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [loraBin, ...args], { encoding: "utf8", env: { ...process.env, LORA_TEST: "1", NO_COLOR: "1" }, maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const imdb = join(realDir, "distilbert-imdb"),
  emotion = join(realDir, "distilbert-emotion");
const haveReal = existsSync(join(imdb, "adapter_model.safetensors")) && existsSync(join(emotion, "adapter_model.safetensors"));

function dense(B: Float64Array, A: Float64Array, out: number, r: number, inn: number, s: number): Float64Array {
  const c = new Float64Array(out * inn);
  for (let i = 0; i < out; i++)
    for (let p = 0; p < r; p++) {
      const b = s * B[i * r + p]!;
      if (b !== 0) for (let j = 0; j < inn; j++) c[i * inn + j] += b * A[p * inn + j]!;
    }
  return c;
}

/** Dense ‖ΔW_out − Σ wᵢΔWᵢ‖/‖Σ wᵢΔWᵢ‖ for one module, from the files. */
async function denseRelError(inputs: string[], weights: number[], output: string, module: string): Promise<number> {
  let T: Float64Array | null = null;
  for (let i = 0; i < inputs.length; i++) {
    const a = await loadAdapter(inputs[i]!);
    try {
      const m = a.modules.find((x) => x.name === module)!;
      const f = await readFactors(a, m, "f64");
      const d = dense(f.B.data as Float64Array, f.A.data as Float64Array, m.out, m.rank, m.in, weights[i]! * m.scale);
      T ??= new Float64Array(d.length);
      for (let j = 0; j < d.length; j++) T[j] += d[j]!;
    } finally {
      await a.file.close();
    }
  }
  const o = await loadAdapter(output);
  try {
    const m = o.modules.find((x) => x.name === module)!;
    const f = await readFactors(o, m, "f64");
    const P = dense(f.B.data as Float64Array, f.A.data as Float64Array, m.out, m.rank, m.in, m.scale);
    let n = 0,
      d = 0;
    for (let j = 0; j < P.length; j++) {
      n += (P[j]! - T![j]!) ** 2;
      d += T![j]! ** 2;
    }
    return Math.sqrt(n / d);
  } finally {
    await o.file.close();
  }
}

// PEFT's own loader on our outputs (test/peft-check.ts; skipped where its prerequisites are missing).
const peftCheckWhyNot = peftCheckUnavailable();

const METHODS: [string, string[]][] = [
  ["cat", []],
  ["svd", []],
  ["lego", []],
  ["linear", []],
  ["ties", []],
  ["dare", []],
  ["dare_ties", []],
  ["magnitude_prune", []],
  ["fair", []],
  ["ffa", ["--project"]],
];

describe("real DistilBERT adapters (imdb + emotion)", { skip: haveReal ? false : `no real adapters at ${realDir}` }, () => {
  for (const [method, extra] of METHODS) {
    test(`--method ${method}: a PEFT adapter that reloads, with a per-module error report`, async () => {
      const out = join(tmp, `real-${method}`);
      const r = lora(["merge", imdb, emotion, "--method", method, ...extra, "--passthrough", "first", "-o", out, "--json"]);
      assert.equal(r.status, 0, r.stderr);
      const rep = JSON.parse(r.stdout) as {
        method: string;
        modules: { name: string; rank: number; relative_error: number; rank_in: number[] }[];
        totals: { modules: number; relative_error: number };
        notes: string[];
      };
      assert.equal(rep.method, method);
      assert.equal(rep.modules.length, 12);
      assert.equal(rep.totals.modules, 12);
      for (const m of rep.modules) {
        assert.ok(Number.isFinite(m.relative_error) && m.relative_error >= 0);
        assert.deepEqual(m.rank_in, [8, 8]);
      }
      if (method === "cat") assert.ok(rep.totals.relative_error < 1e-6);
      const a = await loadAdapter(out); // refuses a config whose ranks contradict the tensors
      try {
        assert.equal(a.format, "peft");
        assert.equal(a.config?.["use_rslora"], false);
        for (const m of a.modules) {
          assert.equal(m.scale, 1, "scale folded: alpha = rank");
          assert.equal(m.rank, rep.modules.find((x) => x.name === m.name)!.rank);
        }
        assert.equal(a.passthrough.length, 4, "classifier heads of the first input");
      } finally {
        await a.file.close();
      }
      const name = rep.modules[5]!.name;
      const dre = await denseRelError([imdb, emotion], [0.5, 0.5], out, name);
      assert.ok(Math.abs(dre - rep.modules[5]!.relative_error) <= 1e-6, `${name}: reported ${rep.modules[5]!.relative_error}, dense ${dre}`);
    });
  }

  test("PEFT's own loader reads every output as intended (peft-check)", { skip: peftCheckWhyNot }, () => {
    for (const [method] of METHODS) {
      const dir = join(tmp, `real-${method}`);
      assert.ok(existsSync(dir), `run the method tests first (${dir})`);
      const c = peftCheck(dir);
      assert.equal(c.modules, 12, method);
      assert.ok(c.max_rel <= 1e-6, `${method}: PEFT's ΔW differs from ours by ${c.max_rel}`);
      assert.deepEqual(c.peft_extra, [], `${method}: PEFT created LoRA layers we did not write`);
    }
  });

  test("same seed ⇒ byte-identical file (lego, dare), whatever the output path", () => {
    for (const method of ["lego", "dare"]) {
      const o1 = join(tmp, `seed1-${method}.safetensors`),
        o2 = join(tmp, `seed2-${method}.safetensors`);
      for (const o of [o1, o2])
        assert.equal(lora(["merge", imdb, emotion, "--method", method, "--seed", "3", "--passthrough", "drop", "-o", o, "-q"]).status, 0);
      assert.ok(readFileSync(o1).equals(readFileSync(o2)), method);
    }
  });

  test("refusals exit 3 and write nothing: differing heads, ffa without a shared A, k > units", () => {
    const out = join(tmp, "refused");
    const r1 = lora(["merge", imdb, emotion, "--method", "cat", "-o", out, "--json"]);
    assert.equal(r1.status, 3);
    assert.equal(r1.stdout, "");
    assert.equal((JSON.parse(r1.stderr) as { error: { code: string } }).error.code, "INVALID_INPUT");
    const r2 = lora(["merge", imdb, emotion, "--method", "ffa", "--passthrough", "drop", "-o", out]);
    assert.equal(r2.status, 3);
    assert.match(r2.stderr, /share A/);
    const r3 = lora(["merge", imdb, emotion, "--method", "lego", "--rank", "17", "--passthrough", "drop", "-o", out]);
    assert.equal(r3.status, 3);
    assert.ok(!existsSync(out));
  });
});

describe("fixtures", () => {
  const example = join(fixturesDir, "example");
  const dora = join(fixturesDir, "peft-dora");
  const f16 = join(fixturesDir, "peft-f16-embed-conv");

  const cpu = (JSON.parse(lora(["backends", "--json"]).stdout) as { backends: { name: string; available: boolean }[] }).backends.find((x) => x.name === "cpu");
  test("modules merged ahead on two lanes write what one lane writes (cat, linear, svd; cpu backend)", {
    skip: cpu?.available ? false : "no cpu backend",
  }, () => {
    const a = join(fixturesDir, "distilbert-like-a"),
      b = join(fixturesDir, "distilbert-like-b");
    for (const [method, extra] of [
      ["cat", []],
      ["linear", []],
      ["svd", ["--rank", "6"]],
    ] as const) {
      const run = (threads: string) => {
        const out = join(tmp, `lanes-${method}-${threads}`);
        const r = lora(["merge", a, b, "--method", method, ...extra, "--passthrough", "drop", "--backend", "cpu", "--threads", threads, "-o", out, "--json"]);
        assert.equal(r.status, 0, r.stderr);
        const rep = JSON.parse(r.stdout) as { output: string };
        rep.output = "";
        return { rep, bytes: readFileSync(join(out, "adapter_model.safetensors")) };
      };
      const one = run("1"),
        two = run("2");
      assert.deepEqual(two.rep, one.rep, method);
      assert.ok(two.bytes.equals(one.bytes), `${method}: the same bytes`);
    }
  });

  test("factors that overflow the output dtype: exit 3 naming the module, nothing written (cat, svd, linear)", {
    skip: existsSync(f16) ? false : "no F16 fixture",
  }, () => {
    for (const method of ["cat", "svd", "linear"]) {
      const out = join(tmp, `overflow-${method}`);
      const r = lora(["merge", f16, f16, "--method", method, "--weights", "1e12,1e12", "-o", out]);
      assert.equal(r.status, 3, `${method}: ${r.stderr}`);
      assert.match(r.stderr, /module \S+: the merged factors do not fit in F16/, method);
      assert.ok(!existsSync(out), method);
    }
  });

  test("DoRA input: exit 3, nothing written", { skip: existsSync(dora) ? false : "no DoRA fixture" }, () => {
    const out = join(tmp, "dora");
    const r = lora(["merge", dora, dora, "--method", "cat", "-o", out]);
    assert.equal(r.status, 3);
    assert.match(r.stderr, /DoRA/);
    assert.ok(!existsSync(out));
  });

  test("PEFT and kohya inputs pair by module; --to kohya writes a kohya file", { skip: existsSync(example) ? false : "no example fixture" }, async () => {
    const kohya = join(tmp, "example-kohya.safetensors");
    assert.equal(lora(["convert", example, "--to", "kohya", "-o", kohya, "-q"]).status, 0);
    const out = join(tmp, "mixed");
    const r = lora(["merge", example, kohya, "--method", "cat", "-o", out, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as { modules: { name: string; rank_in: number[]; relative_error: number }[] };
    assert.equal(rep.modules.length, 8);
    for (const m of rep.modules) {
      assert.deepEqual(m.rank_in, [8, 8]);
      assert.ok(m.relative_error < 1e-6);
    }
    // ½·ΔW + ½·ΔW of the same adapter is that adapter's ΔW
    const name = rep.modules[0]!.name;
    const e = await denseRelError([example], [1], out, name);
    assert.ok(e < 1e-6, String(e));
    const ko = join(tmp, "mixed-kohya.safetensors");
    const r2 = lora(["merge", kohya, example, "--method", "svd", "--to", "kohya", "-o", ko, "-q"]);
    assert.equal(r2.status, 0, r2.stderr);
    const a = await loadAdapter(ko);
    try {
      assert.equal(a.format, "kohya");
      assert.equal(a.modules.length, 8);
      for (const m of a.modules) assert.equal(m.scale, 1);
    } finally {
      await a.file.close();
    }
  });

  test("usage errors exit 2: no -o, unknown method, wrong --weights count", { skip: existsSync(example) ? false : "no example fixture" }, () => {
    assert.equal(lora(["merge", example, example, "--method", "cat"]).status, 2);
    assert.equal(lora(["merge", example, example, "--method", "nope", "-o", join(tmp, "x")]).status, 2);
    const r = lora(["merge", example, example, "--weights", "1,2,3", "-o", join(tmp, "x")]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /one weight per input/);
  });
});
