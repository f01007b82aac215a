// diffusers LoRA files end to end (issue 8): spawns bin/lora.js (build first: `npx tsc -p .`).
// The real SD 1.5 adapter (../shared/fixtures/real/sd15-pokemon, attention-processor keys, 128
// modules of rank 4, no alpha) through inspect, convert (diffusers → PEFT → kohya → diffusers, and
// `-o -` pipes), truncate, merge (every method, with the generated second SD LoRA of
// fixtures/diffusers) and prune --method modules; malformed and half-converted files exit 3 naming
// the key. ΔW is checked in-process from the written files, against float64 targets.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test, type TestContext } from "node:test";
import { loadAdapter, readFactors, type Adapter, type LoraModule } from "../../formats/adapter/index.js";
import { SafetensorsFile, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { jsBackend } from "../../linalg/js/index.js";
import { lowRankSingularValues, lowRankSvd, relativeError, type LowRankTerm } from "../../linalg/lowrank.js";
import { fixturesDir, loraBin, realDir } from "../paths.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-diffusers-e2e-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const REAL = join(realDir, "sd15-pokemon", "pytorch_lora_weights.safetensors");
const SECOND = join(fixturesDir, "diffusers", "sd15-second.safetensors");
const skipReal = existsSync(REAL) ? false : `real adapter not found at ${REAL}`;
const fx = (n: string) => join(fixturesDir, "diffusers", n);

function lora(args: string[], input?: Buffer): { status: number; stdout: string; stderr: string; raw: Buffer } {
  const r = spawnSync(process.execPath, [loraBin, ...args], {
    env: { ...process.env, LORA_TEST: "1", NO_COLOR: "1" },
    maxBuffer: 256 << 20,
    ...(input ? { input } : {}),
  });
  return { status: r.status ?? -1, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8"), raw: r.stdout };
}

/** A command exists (not the placeholder that says "not implemented"). */
function implemented(cmd: string): boolean {
  const r = lora([cmd, "--help"]);
  return r.status === 0 && !/not implemented/.test(r.stdout);
}

interface ModuleJson {
  name: string;
  shape: [number, number];
  rank: number;
  alpha: number;
  scale: number;
  singular_values: number[];
  norm: number;
}
interface InspectJson {
  format: string;
  config_source: string;
  notes: string[];
  modules: ModuleJson[];
  totals: { modules: number; rank: number };
}
interface WriteJson {
  format: string;
  output: string;
  notes: string[];
  modules: { name: string; rank: number; relative_error: number }[];
  dropped: string[];
  totals: { modules: number; rank: number; relative_error: number };
}

function inspect(path: string): InspectJson {
  const r = lora(["inspect", path, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as InspectJson;
}

async function withAdapter<T>(path: string, f: (a: Adapter) => Promise<T>): Promise<T> {
  const a = await loadAdapter(path);
  try {
    return await f(a);
  } finally {
    await a.file.close();
  }
}

async function term(a: Adapter, m: LoraModule, w = 1): Promise<LowRankTerm> {
  const f = await readFactors(a, m, "f64");
  return { B: f.B, A: f.A, scale: w * m.scale };
}

/** Every module's terms, keyed by matchKey (the key that pairs modules across formats). */
async function termsOf(path: string, w = 1): Promise<Map<string, { m: LoraModule; t: LowRankTerm }>> {
  return withAdapter(path, async (a) => {
    const out = new Map<string, { m: LoraModule; t: LowRankTerm }>();
    for (const m of a.modules) out.set(m.matchKey, { m, t: await term(a, m, w) });
    return out;
  });
}

/** The output format: diffusers input should give diffusers output (docs/cli.md "Adapters in and out": the input's format). */
function expectDiffusers(t: TestContext, got: string, cmd: string): void {
  assert.equal(got, "diffusers", `lora ${cmd} wrote a diffusers input as ${got}; it should keep the input's format`);
  void t;
}

// ---- inspect and convert -----------------------------------------------------------------------

test("inspect --json: format diffusers, 128 modules of rank 4, the scale rule named", { skip: skipReal }, () => {
  const r = inspect(REAL);
  assert.equal(r.format, "diffusers");
  assert.equal(r.totals.modules, 128);
  assert.equal(r.totals.rank, 512);
  assert.match(r.config_source, /no network alpha: scale 1/);
  assert.ok(
    r.notes.some((n) => /attention-processor/.test(n)),
    r.notes.join("; "),
  );
  for (const m of r.modules) {
    assert.deepEqual([m.rank, m.alpha, m.scale, m.singular_values.length], [4, 4, 1, 4], m.name);
    assert.match(m.name, /^(down_blocks|mid_block|up_blocks)\..*\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/);
  }
  const human = lora(["inspect", REAL]);
  assert.equal(human.status, 0, human.stderr);
});

test("inspect: each scale rule is named (metadata, network alphas, alpha = rank)", () => {
  assert.equal(inspect(fx("peft-style-metadata.safetensors")).config_source, "__metadata__.lora_adapter_metadata");
  assert.match(inspect(fx("attn-processor-alphas.safetensors")).config_source, /network alphas/);
  assert.match(inspect(fx("peft-style-no-config.safetensors")).config_source, /alpha = rank \(diffusers' default/);
  const te = inspect(fx("text-encoder-attn-processor.safetensors"));
  assert.equal(te.format, "diffusers");
  assert.ok(te.modules.every((m) => m.name.startsWith("text_encoder.text_model.encoder.layers.") && /_proj$/.test(m.name)));
});

test("convert diffusers → peft → kohya → diffusers through the CLI: the same spectra, kohya stems, diffusers keys", { skip: skipReal }, () => {
  const p = join(tmp, "rt-peft"),
    k = join(tmp, "rt.safetensors"),
    d = join(tmp, "rt-diffusers.safetensors");
  for (const [i, o, to] of [
    [REAL, p, "peft"],
    [p, k, "kohya"],
    [k, d, "diffusers"],
  ] as const) {
    const r = lora(["convert", i, "--to", to, "-o", o, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { to: string }).to, to);
  }
  const src = inspect(REAL),
    pj = inspect(p),
    kj = inspect(k),
    dj = inspect(d);
  assert.deepEqual([pj.format, kj.format, dj.format], ["peft", "kohya", "diffusers"]);
  const sv = (j: InspectJson, name: (n: string) => string) => new Map(j.modules.map((m) => [name(m.name), m.singular_values]));
  const stem = (n: string) => "lora_unet_" + n.replace(/\./g, "_");
  const want = sv(src, (n) => n);
  const got = [sv(pj, (n) => n.replace(/^unet\./, "")), sv(dj, (n) => n.replace(/^unet\./, ""))];
  const kohya = sv(kj, (n) => n);
  for (const [n, s] of want) {
    for (const g of got) assert.deepEqual(g.get(n), s, n);
    assert.deepEqual(kohya.get(stem(n)), s, stem(n));
  }
});

test("convert --to diffusers -o - | inspect -, and a directory output holding pytorch_lora_weights.safetensors", () => {
  const src = fx("peft-style-metadata.safetensors");
  const c = lora(["convert", src, "--to", "diffusers", "-o", "-"]);
  assert.equal(c.status, 0, c.stderr);
  const i = lora(["inspect", "-", "--json"], c.raw);
  assert.equal(i.status, 0, i.stderr);
  const piped = JSON.parse(i.stdout) as InspectJson;
  assert.equal(piped.format, "diffusers");
  assert.deepEqual(
    piped.modules.map((m) => [m.name, m.rank, m.scale]),
    inspect(src).modules.map((m) => [m.name, m.rank, m.scale]),
  );
  const dir = join(tmp, "as-dir");
  assert.equal(lora(["convert", fx("attn-processor-alphas.safetensors"), "--to", "diffusers", "-o", dir]).status, 0);
  assert.deepEqual(readdirSync(dir), ["pytorch_lora_weights.safetensors"]);
  assert.equal(inspect(dir).format, "diffusers");
});

test("malformed and half-converted diffusers files exit 3 naming the key, and leave no output", () => {
  const b = "down_blocks.0.attentions.0.transformer_blocks.0.attn1";
  const cases: [string, string[]][] = [
    ["bad-up-without-down.safetensors", [`${b}.processor.to_k_lora.up.weight`, `${b}.processor.to_k_lora.down.weight`]],
    ["bad-rank-mismatch.safetensors", [`${b}.processor.to_v_lora.down.weight`, `${b}.processor.to_v_lora.up.weight`]],
    ["bad-half-converted.safetensors", [`${b}.processor.to_k_lora.up.weight`, `unet.${b}.to_k.lora_A.weight`]],
    ["bad-duplicate-module.safetensors", [`${b}.processor.to_q_lora.down.weight`, `unet.${b}.to_q.lora_A.weight`]],
    ["bad-metadata-rank.safetensors", [`unet.${b}.to_q.lora_A.weight`]],
  ];
  for (const [file, keys] of cases) {
    const r = lora(["inspect", fx(file), "--json"]);
    assert.equal(r.status, 3, `${file}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    const err = (JSON.parse(r.stderr) as { error: { code: string; message: string } }).error;
    assert.equal(err.code, "INVALID_INPUT");
    for (const k of keys) assert.ok(err.message.includes(k), `${file}: the message should name ${k}: ${err.message}`);
    const out = join(tmp, `bad-${file}`);
    const c = lora(["convert", fx(file), "--to", "peft", "-o", out]);
    assert.equal(c.status, 3, c.stderr);
    assert.match(c.stderr, /^lora: error: /);
    for (const k of keys) assert.ok(c.stderr.includes(k), `${file}: ${c.stderr}`);
    assert.ok(!existsSync(out));
  }
});

// ---- truncate, merge, prune --------------------------------------------------------------------

test("truncate --rank 2: the optimal rank-2 ΔW of every module", { skip: skipReal }, async (t) => {
  if (!implemented("truncate")) {
    t.skip("lora truncate is not implemented yet");
    return;
  }
  const out = join(tmp, "trunc-r2.safetensors");
  const r = lora(["truncate", REAL, "--rank", "2", "-o", out, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as WriteJson;
  assert.equal(rep.modules.length, 128);
  const src = await termsOf(REAL),
    got = await termsOf(out);
  const reported = new Map(rep.modules.map((m) => [m.name, m.relative_error]));
  for (const [k, { m, t: s }] of src) {
    const g = got.get(k);
    assert.ok(g, `${m.name} missing from the output`);
    assert.equal(g.m.rank, 2);
    const full = await lowRankSingularValues(jsBackend, s);
    const kept = await lowRankSingularValues(jsBackend, g.t);
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(kept[i]! - full[i]!) <= 1e-6 * full[0]!, `${m.name} σ${i + 1}: ${kept[i]} vs ${full[i]}`);
    const opt = Math.hypot(full[2]!, full[3]!) / Math.hypot(...full);
    const err = await relativeError(jsBackend, [s], [g.t]);
    assert.ok(Math.abs(err - opt) <= 1e-6 * opt, `${m.name}: ‖ΔW−ΔW₂‖/‖ΔW‖ = ${err}, optimal ${opt}`);
    assert.ok(Math.abs(reported.get(m.name)! - opt) <= 1e-6 * opt, `${m.name}: reported ${reported.get(m.name)} vs ${opt}`);
  }
  const piped = lora(["truncate", REAL, "--rank", "2", "-o", "-"]);
  assert.equal(piped.status, 0, piped.stderr);
  const i = lora(["inspect", "-", "--json"], piped.raw);
  assert.equal(i.status, 0, i.stderr);
  assert.equal((JSON.parse(i.stdout) as InspectJson).totals.rank, 256);
  expectDiffusers(t, rep.format, "truncate");
});

/**
 * A copy (in the temporary folder) of a file's 320-channel blocks only (down_blocks.0, up_blocks.3:
 * 40 of the 128 modules), keys, bytes and metadata unchanged: the dense merge methods (ties, dare,
 * magnitude_prune) run on these to keep the suite quick.
 */
async function subset(path: string, name: string): Promise<string> {
  const out = join(tmp, name);
  if (existsSync(out)) return out;
  const f = await SafetensorsFile.open(path);
  try {
    const specs: TensorSpec[] = [];
    for (const t of f.header.tensors) {
      if (!/^(unet\.)?(down_blocks\.0|up_blocks\.3)\./.test(t.name)) continue;
      specs.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await f.readRaw(t) });
    }
    writeFileSync(out, await serializeSafetensors(specs, f.header.metadata ?? null));
  } finally {
    await f.close();
  }
  return out;
}

/** Σ ½ΔW over the real adapter and the second SD LoRA, per matchKey. */
async function mergeTarget(real: string, second: string, n: number): Promise<Map<string, { name: string; terms: LowRankTerm[] }>> {
  const a = await termsOf(real, 0.5),
    b = await termsOf(second, 0.5);
  assert.equal(a.size, n);
  assert.equal(b.size, n);
  const out = new Map<string, { name: string; terms: LowRankTerm[] }>();
  for (const [k, x] of a) {
    const y = b.get(k);
    assert.ok(y, `the second SD LoRA lacks ${x.m.name}`);
    out.set(k, { name: x.m.name, terms: [x.t, y.t] });
  }
  return out;
}

/** [method, extra flags, on the 320-channel subset]. */
const MERGES: [string, string[], boolean][] = [
  ["cat", [], false],
  ["svd", [], false],
  ["svd", ["--rank", "8"], false],
  ["linear", [], false],
  ["ties", [], true],
  ["dare", [], true],
  ["dare_ties", [], true],
  ["magnitude_prune", [], true],
  ["ffa", ["--project"], false],
  ["fair", [], false],
  ["lego", [], false],
];

for (const [method, extra, small] of MERGES) {
  const what = small ? "the real SD 1.5 LoRA's 320-channel blocks with the second one's" : "the real SD 1.5 LoRA with the generated second one";
  test(`merge --method ${[method, ...extra].join(" ")}: ${what}`, { skip: skipReal }, async (t) => {
    if (!implemented("merge")) {
      t.skip("lora merge is not implemented yet");
      return;
    }
    const [real, second, n] = small ? [await subset(REAL, "real-320.safetensors"), await subset(SECOND, "second-320.safetensors"), 40] : [REAL, SECOND, 128];
    const out = join(tmp, `merge-${method}${extra.join("")}.safetensors`);
    const r = lora(["merge", real, second, "--method", method, ...extra, "-o", out, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as WriteJson;
    assert.equal(rep.modules.length, n);
    const target = await mergeTarget(real, second, n);
    const got = await termsOf(out);
    assert.equal(got.size, n);
    const reported = new Map(rep.modules.map((m) => [m.name, m.relative_error]));
    for (const [k, { name, terms }] of target) {
      const g = got.get(k);
      assert.ok(g, `${name} missing from the output`);
      const err = await relativeError(jsBackend, terms, [g.t]);
      assert.ok(Number.isFinite(err), `${name}: error ${err}`);
      if (method === "cat" || (method === "svd" && extra.length)) {
        assert.ok(err < 1e-6, `${method} ${name}: relative error ${err} (exact merge)`);
      } else if (method === "svd") {
        // Eckart–Young: the best rank-4 approximation of the rank-8 target.
        const s = (await lowRankSvd(jsBackend, terms)).S;
        const opt = Math.hypot(...s.slice(4)) / Math.hypot(...s);
        assert.equal(g.m.rank, 4);
        assert.ok(Math.abs(err - opt) <= 1e-5 * opt, `svd ${name}: ${err} vs optimal ${opt}`);
      }
      if (method !== "lego") {
        const rep1 = reported.get(name) ?? reported.get(g.m.name);
        assert.ok(rep1 !== undefined, `no report row for ${name}`);
        assert.ok(Math.abs(rep1 - err) <= 1e-4 * Math.max(err, 1e-3), `${method} ${name}: reported ${rep1}, measured from the file ${err}`);
      }
    }
    expectDiffusers(t, rep.format, "merge");
  });
}

test("merge --method ffa: two inputs sharing A (the real adapter twice) merge exactly", { skip: skipReal }, async (t) => {
  if (!implemented("merge")) {
    t.skip("lora merge is not implemented yet");
    return;
  }
  const out = join(tmp, "merge-ffa-self.safetensors");
  const r = lora(["merge", REAL, REAL, "--method", "ffa", "-o", out, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const src = await termsOf(REAL),
    got = await termsOf(out);
  for (const [k, { m, t: s }] of src) assert.ok((await relativeError(jsBackend, [s], [got.get(k)!.t])) < 1e-6, m.name);
  expectDiffusers(t, (JSON.parse(r.stdout) as WriteJson).format, "merge");
});

test("prune --method modules --match attn2: the cross-attention modules go, the rest is untouched", { skip: skipReal }, async (t) => {
  if (!implemented("prune")) {
    t.skip("lora prune is not implemented yet");
    return;
  }
  const out = join(tmp, "prune-attn2.safetensors");
  const r = lora(["prune", REAL, "--method", "modules", "--match", "attn2", "-o", out, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as WriteJson;
  assert.equal(rep.dropped.length, 64);
  const src = await termsOf(REAL),
    got = await termsOf(out);
  assert.equal(got.size, 64);
  for (const [k, { m, t: s }] of src) {
    const g = got.get(k);
    if (/\.attn2\./.test(m.name)) {
      assert.equal(g, undefined, m.name);
      continue;
    }
    assert.ok(g, `${m.name} missing`);
    assert.deepEqual([g.t.A.data, g.t.B.data, g.t.scale], [s.A.data, s.B.data, s.scale], m.name);
  }
  expectDiffusers(t, rep.format, "prune");
});
