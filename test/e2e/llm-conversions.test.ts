// Conversions of LLM adapters (not diffusers pipelines) read back by lora with the ΔW they hold
// (docs/formats.md "kohya", "diffusers", "fan_in_fan_out"): every value lora reports is checked
// against ΔW = s·B·A computed here in float64 by numpy from the original PEFT files (an independent
// safetensors reader, scale lora_alpha / r from adapter_config.json).
//
// - distilbert-imdb (a modules_to_save classifier head, carried as passthrough) --to diffusers: read
//   back with the file's lora_adapter_metadata (scale alpha/r = 2, not 1) and diffed against the
//   original to ~1e-16.
// - gpt2-tigrinya (fan_in_fan_out, GPT-2 Conv1D) --to kohya: the file holds ΔWᵀ (the weight's layout),
//   and lora reads it back as the original's out×in ΔW, so inspect shows the same shapes and diff
//   pairs every module.
// - its kohya stems are `lora_transformer_h_…` (`transformer.` is GPT-2's own top module, not a
//   diffusers component), so the file converts back and pairs even without lora_module_names.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { runCli } from "../cli.js";
import { needsReal, realDir } from "../paths.js";
import { tempDir } from "../temp-dir.js";

const python = spawnSync("python3", ["-c", "import numpy"]).status === 0 ? "python3" : null;
const skipFor = (name: string) => needsReal(name) || (python ? false : "python3 with numpy not found (the reference is numpy)");

/**
 * The reference, stdlib + numpy only. `peft DIR`: per module (path after base_model.model.) the
 * shape, scale, ‖ΔW‖_F and singular values of ΔW = lora_alpha/r · B·A (out×in, from the r×r core of the
 * factors' QRs). `kohya FILE PEFT_DIR`:
 * per PEFT module its stem (from the file's lora_module_names) and the largest
 * |alpha/r·lora_up·lora_down − ΔWᵀ| relative to max|ΔW|. `strip IN OUT KEY`: IN without metadata KEY.
 */
const REFERENCE = `
import json, struct, sys
import numpy as np
DT = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); meta = h.pop("__metadata__", {})
    t = {k: np.frombuffer(b[8 + n + e["data_offsets"][0]: 8 + n + e["data_offsets"][1]], DT[e["dtype"]]).astype(np.float64).reshape(e["shape"]) for k, e in h.items()}
    return t, meta, b, n, h
def peft(d):
    t = load(d + "/adapter_model.safetensors")[0]
    cfg = json.load(open(d + "/adapter_config.json"))
    assert not cfg.get("rank_pattern") and not cfg.get("alpha_pattern") and not cfg.get("use_rslora")
    s = cfg["lora_alpha"] / cfg["r"]
    out = {}
    for k in t:
        if k.endswith(".lora_A.weight"):
            m = k[len("base_model.model."): -len(".lora_A.weight")]
            A, B = t[k], t[k.replace("lora_A", "lora_B")]
            # σ(s·B·A) = σ(s·R_B·R_Aᵀ) with B = Q_B·R_B, Aᵀ = Q_A·R_A (orthonormal Q): an r×r SVD
            core = s * (np.linalg.qr(B)[1] @ np.linalg.qr(A.T)[1].T)
            out[m] = {"shape": [B.shape[0], A.shape[1]], "scale": s, "norm": float(np.linalg.norm(core)), "sv": np.linalg.svd(core, compute_uv=False).tolist(), "A": A, "B": B}
    return out
cmd = sys.argv[1]
if cmd == "peft":
    print(json.dumps({m: {k: v for k, v in x.items() if k not in ("A", "B")} for m, x in peft(sys.argv[2]).items()}))
elif cmd == "kohya":
    t, meta = load(sys.argv[2])[:2]; ref = peft(sys.argv[3]); out = {}
    stem_of = {p: s for s, p in json.loads(meta["lora_module_names"]).items()}
    for m, x in ref.items():
        stem = stem_of[m]
        up, down, alpha = t[stem + ".lora_up.weight"], t[stem + ".lora_down.weight"], float(t[stem + ".alpha"])
        got = alpha / down.shape[0] * (up @ down)
        dw = x["scale"] * (x["B"] @ x["A"])
        out[m] = {"stem": stem, "err": float(np.abs(got - dw.T).max() / np.abs(dw).max())}
    print(json.dumps(out))
elif cmd == "strip":
    t, meta, b, n, h = load(sys.argv[2]); meta.pop(sys.argv[4])
    js = json.dumps(dict({"__metadata__": meta}, **h), separators=(",", ":")).encode(); js += b" " * (-len(js) % 8)
    open(sys.argv[3], "wb").write(struct.pack("<Q", len(js)) + js + b[8 + n:])
`;

interface RefModule {
  shape: number[];
  scale: number;
  norm: number;
  sv: number[];
}
interface InspectModule {
  name: string;
  shape: number[];
  scale: number;
  norm: number;
  singular_values: number[];
}
interface DiffReport {
  modules: { name: string; shape: number[]; relative_difference: number }[];
  only_in_a: string[];
  only_in_b: string[];
  summary: { compared: number };
}

function py(dir: string, ...args: string[]): string {
  const f = join(dir, "reference.py");
  writeFileSync(f, REFERENCE);
  const r = spawnSync(python!, [f, ...args], { encoding: "utf8", maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

async function lora(...argv: string[]): Promise<{ out: string; err: string }> {
  const r = await runCli(argv);
  assert.equal(r.code, 0, `lora ${argv.join(" ")}: exit ${r.code}: ${r.err}`);
  return r;
}

/** inspect --json of `file` against the numpy reference, module by module (`name` maps a reference path to lora's name). */
async function assertInspectMatches(file: string, ref: Record<string, RefModule>, name: (path: string) => string): Promise<void> {
  const got = new Map((JSON.parse((await lora("inspect", file, "--json")).out) as { modules: InspectModule[] }).modules.map((m) => [m.name, m]));
  assert.equal(got.size, Object.keys(ref).length);
  for (const [path, r] of Object.entries(ref)) {
    const m = got.get(name(path));
    assert.ok(m, `${name(path)} listed`);
    assert.deepEqual(m.shape, r.shape, `${path}: ΔW shape out×in`);
    assert.equal(m.scale, r.scale, `${path}: scale`);
    assert.ok(Math.abs(m.norm - r.norm) <= 1e-12 * r.norm, `${path}: ‖ΔW‖ ${m.norm} vs numpy ${r.norm}`);
    r.sv.forEach((s, i) => assert.ok(Math.abs(m.singular_values[i]! - s) <= 1e-12 * r.sv[0]!, `${path}: σ${i} ${m.singular_values[i]} vs numpy ${s}`));
  }
}

/** diff --json of a and b: every module paired, ΔW the same to float64 rounding. */
async function assertSameDeltas(a: string, b: string, n: number): Promise<void> {
  const d = JSON.parse((await lora("diff", a, b, "--json")).out) as DiffReport;
  assert.deepEqual([d.only_in_a, d.only_in_b], [[], []], "every module paired");
  assert.equal(d.summary.compared, n);
  for (const m of d.modules) assert.ok(m.relative_difference <= 1e-12, `${m.name}: relative difference ${m.relative_difference}`);
}

test("distilbert-imdb (modules_to_save passthrough) --to diffusers reads back with its lora_adapter_metadata: scale alpha/r, ΔW as numpy's", {
  skip: skipFor("distilbert-imdb"),
}, async () => {
  const d = tempDir("lora-llm-");
  const src = join(realDir, "distilbert-imdb");
  const ref = JSON.parse(py(d, "peft", src)) as Record<string, RefModule>;
  const out = join(d, "imdb.safetensors");
  const c = await lora("convert", src, "--to", "diffusers", "-o", out, "--json");
  // diffusers itself cannot load it (no component prefix; keys without "lora"): said, not silent.
  const warnings = (JSON.parse(c.out) as { warnings: string[] }).warnings;
  assert.ok(
    warnings.some((w) => /^diffusers refuses the file: 4 passthrough tensor\(s\)/.test(w)),
    JSON.stringify(warnings),
  );
  assert.ok(
    warnings.some((w) => /^no diffusers pipeline loads the 12 module\(s\) without a component prefix/.test(w)),
    JSON.stringify(warnings),
  );
  const j = JSON.parse((await lora("inspect", out, "--json")).out) as { format: string; passthrough: unknown[] };
  assert.equal(j.format, "diffusers");
  assert.equal(j.passthrough.length, 4, "the classifier head carried");
  assert.ok(Object.values(ref).every((r) => r.scale === 2));
  await assertInspectMatches(out, ref, (p) => p);
  await assertSameDeltas(src, out, 12);
  // and back to PEFT: the same ΔW again, and the head still in modules_to_save
  await lora("convert", out, "--to", "peft", "-o", join(d, "back"));
  await assertInspectMatches(join(d, "back"), ref, (p) => p);
  const cfg = (dir: string) => JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as { modules_to_save: unknown };
  assert.deepEqual(cfg(join(d, "back")).modules_to_save, cfg(src).modules_to_save);
});

test("gpt2-tigrinya --to diffusers and back to PEFT keeps fan_in_fan_out (PEFT would load Conv1D modules transposed without it)", {
  skip: skipFor("gpt2-tigrinya"),
}, async () => {
  const d = tempDir("lora-llm-");
  const src = join(realDir, "gpt2-tigrinya");
  const ref = JSON.parse(py(d, "peft", src)) as Record<string, RefModule>;
  const out = join(d, "g.safetensors");
  await lora("convert", src, "--to", "diffusers", "-o", out);
  await lora("convert", out, "--to", "peft", "-o", join(d, "back"));
  const cfg = JSON.parse(readFileSync(join(d, "back", "adapter_config.json"), "utf8")) as { fan_in_fan_out: unknown };
  assert.equal(cfg.fan_in_fan_out, true);
  await assertInspectMatches(join(d, "back"), ref, (p) => p);
});

test("gpt2-tigrinya (fan_in_fan_out) --to kohya: the file holds ΔWᵀ, lora reads it back as the original out×in ΔW and diff pairs it", {
  skip: skipFor("gpt2-tigrinya"),
}, async () => {
  const d = tempDir("lora-llm-");
  const src = join(realDir, "gpt2-tigrinya");
  const ref = JSON.parse(py(d, "peft", src)) as Record<string, RefModule>;
  assert.ok(
    Object.values(ref).some((r) => r.shape[0] !== r.shape[1]),
    "c_attn is 2304×768",
  );
  const k = join(d, "gpt2.safetensors");
  await lora("convert", src, "--to", "kohya", "-o", k);
  // On disk: alpha/r·lora_up·lora_down = ΔWᵀ, the Conv1D weight's layout (what kohya adds to it).
  const onDisk = JSON.parse(py(d, "kohya", k, src)) as Record<string, { stem: string; err: number }>;
  for (const [path, { err }] of Object.entries(onDisk)) assert.ok(err <= 1e-7, `${path}: ${err}`);
  await assertInspectMatches(k, ref, (p) => onDisk[p]!.stem);
  await assertSameDeltas(src, k, 36);
  // back to PEFT: the original ΔW, fan_in_fan_out kept
  const back = join(d, "back");
  await lora("convert", k, "--to", "peft", "-o", back);
  await assertInspectMatches(back, ref, (p) => p);
  assert.equal((JSON.parse((await lora("inspect", back, "--json")).out) as { config: { fan_in_fan_out: boolean } }).config.fan_in_fan_out, true);
});

test("gpt2-tigrinya --to kohya: stems are lora_ + the module path (transformer. is GPT-2's, not a diffusers component); without lora_module_names it still converts back and pairs", {
  skip: skipFor("gpt2-tigrinya"),
}, async () => {
  const d = tempDir("lora-llm-");
  const src = join(realDir, "gpt2-tigrinya");
  const ref = JSON.parse(py(d, "peft", src)) as Record<string, RefModule>;
  const k = join(d, "gpt2.safetensors");
  await lora("convert", src, "--to", "kohya", "-o", k);
  const stems = (JSON.parse((await lora("inspect", k, "--json")).out) as { modules: InspectModule[] }).modules.map((m) => m.name).sort();
  assert.deepEqual(
    stems,
    Object.keys(ref)
      .map((p) => `lora_${p.replace(/\./g, "_")}`)
      .sort(),
  );
  assert.ok(stems.every((s) => s.startsWith("lora_transformer_h_")));
  // As another tool rewriting the file might leave it: no name map.
  const bare = join(d, "bare.safetensors");
  py(d, "strip", k, bare, "lora_module_names");
  await assertInspectMatches(bare, ref, (p) => `lora_${p.replace(/\./g, "_")}`);
  await assertSameDeltas(src, bare, 36);
  const back = join(d, "back");
  await lora("convert", bare, "--to", "peft", "-o", back);
  await assertSameDeltas(src, back, 36);
});
