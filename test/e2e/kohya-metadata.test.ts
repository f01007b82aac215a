// kohya metadata end to end (docs/formats.md "kohya metadata"): a generated kohya file with
// sd-scripts' fields (and a ModelSpec hash, a long ss_tag_frequency, a field of another tool) goes
// through truncate, convert (kohya, PEFT, diffusers, standard output) and merge. Every field comes
// out, unchanged or brought up to date; what it should become is worked out here from the output's
// own tensors, read by an independent Python reader (stdlib only): ss_network_dim / alpha the
// uniform rank / alpha of the non-3×3 modules (else "Dynamic"), conv_dim / conv_alpha in
// ss_network_args those of the 3×3 conv modules, and sshs_model_hash / sshs_legacy_hash computed
// as sd-scripts' precalculate_safetensors_hashes does (hashlib over the re-serialised file with
// only its ss_* metadata). The generated file is large enough (~2 MB) that the legacy slice
// [1 MiB, 1 MiB + 64 KiB) lies in the tensor data; the small fixture covers the empty slice.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { encodeFloats, serializeSafetensors, type TensorSpec } from "../../formats/safetensors/index.js";
import { Rng } from "../../linalg/random.js";
import { runCli } from "../cli.js";
import { type LySpec, lycorisFile } from "../lycoris-files.js";
import { fixturesDir } from "../paths.js";

const seed = Number(process.env["LORA_SEED"] ?? Date.now() % 1e9);
const tmp = mkdtempSync(join(tmpdir(), "lora-kohya-meta-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const python = spawnSync("python3", ["-c", "import hashlib, json, struct"]).status === 0 ? "python3" : null;
const skipPy = python ? false : "python3 not found (the hash reference is Python's hashlib)";

/**
 * The independent reader: header, per-module rank (lora_down rows / lora_A rows) and kohya alpha
 * (the .alpha tensor, F32/F16/BF16 decoded here), whether A has a 3×3 kernel, and both hashes the
 * sd-scripts way: sha256 of the data region; sha256 of bytes [0x100000, 0x110000) of
 * len ‖ header-with-only-ss_*-metadata (compact JSON, tensors in file order, space-padded to 8) ‖ data.
 */
const REFERENCE = String.raw`
import hashlib, json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
meta = h.pop("__metadata__", {})
ss = {k: v for k, v in meta.items() if k.startswith("ss_")}
hdr = {"__metadata__": ss}; hdr.update(h)
js = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode()
js += b" " * (-len(js) % 8)
virtual = struct.pack("<Q", len(js)) + js + data
mods = {}
def val(t):
    raw = data[t["data_offsets"][0]:t["data_offsets"][1]]
    if t["dtype"] == "F32": return struct.unpack("<f", raw)[0]
    if t["dtype"] == "F16": return struct.unpack("<e", raw)[0]
    if t["dtype"] == "BF16": return struct.unpack("<f", b"\0\0" + raw)[0]
    raise SystemExit("alpha dtype " + t["dtype"])
for k, t in h.items():
    for suf, role in ((".lora_down.weight", "A"), (".lora_A.weight", "A"), (".alpha", "alpha")):
        if k.endswith(suf):
            m = mods.setdefault(k[: -len(suf)], {})
            if role == "A": m["rank"] = t["shape"][0]; m["kernel"] = len(t["shape"]) == 4 and t["shape"][2] * t["shape"][3] > 1
            else: m["alpha"] = val(t)
print(json.dumps({"meta": meta, "modules": mods, "model": hashlib.sha256(data).hexdigest(),
                  "legacy": hashlib.sha256(virtual[0x100000:0x110000]).hexdigest()[:8], "data_bytes": len(data), "ss_header_bytes": 8 + len(js)}))
`;
const refFile = join(tmp, "reference.py");
writeFileSync(refFile, REFERENCE);

interface Ref {
  meta: Record<string, string>;
  modules: Record<string, { rank: number; kernel: boolean; alpha?: number }>;
  model: string;
  legacy: string;
  data_bytes: number;
  ss_header_bytes: number;
}
function reference(file: string): Ref {
  const r = spawnSync(python!, [refFile, file], { encoding: "utf8", maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Ref;
}

const pyFloat = (a: number) => (Number.isInteger(a) ? a.toFixed(1) : String(a));
const uniformOr = (xs: string[]) => (new Set(xs).size === 1 ? xs[0]! : "Dynamic");

const LONG_TAGS = JSON.stringify({ "10_pikachu": Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`tag number ${i}`, i + 1])) });
const INPUT_META: Record<string, string> = {
  ss_network_module: "networks.lora",
  ss_network_dim: "32",
  ss_network_alpha: "16.0",
  ss_network_args: JSON.stringify({ conv_dim: "8", conv_alpha: "4.0" }),
  ss_base_model_version: "sd_v1",
  ss_training_comment: "trained for the test",
  ss_tag_frequency: LONG_TAGS,
  ss_num_epochs: "10",
  "modelspec.architecture": "stable-diffusion-v1/lora",
  "modelspec.title": "test title",
  "modelspec.hash_sha256": "0x" + "ab".repeat(32),
  sshs_model_hash: "stale".padEnd(64, "0"),
  sshs_legacy_hash: "stale000",
  some_other_tool: "kept as it is",
};
const ATTN = ["attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0", "attn2_to_q", "attn2_to_out_0"];

/** Six 1280×1280 rank-32 attention modules (alpha 16) and a 3×3 conv module of rank 8 (alpha 4), F32. */
async function kohyaInput(rng: Rng): Promise<string> {
  const specs: TensorSpec[] = [];
  const add = (stem: string, out: number, inn: number, r: number, alpha: number, kernel?: number[]) => {
    const K = kernel ? kernel[0]! * kernel[1]! : 1;
    specs.push({
      name: `${stem}.lora_down.weight`,
      dtype: "F32",
      shape: kernel ? [r, inn, ...kernel] : [r, inn],
      data: encodeFloats("F32", rng.normals(r * inn * K, 0.05)),
    });
    specs.push({
      name: `${stem}.lora_up.weight`,
      dtype: "F32",
      shape: kernel ? [out, r, 1, 1] : [out, r],
      data: encodeFloats("F32", rng.normals(out * r, 0.05)),
    });
    specs.push({ name: `${stem}.alpha`, dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(alpha)) });
  };
  for (const a of ATTN) add(`lora_unet_mid_block_attentions_0_transformer_blocks_0_${a}`, 1280, 1280, 32, 16);
  add("lora_unet_down_blocks_0_resnets_0_conv1", 320, 320, 8, 4, [3, 3]);
  const f = join(tmp, `in-${specs.length}-${rng.int(1e9)}.safetensors`);
  writeFileSync(f, await serializeSafetensors(specs, INPUT_META));
  return f;
}

/** What the output's kohya fields must be, from its own tensors; and every input field is there. */
function checkOutput(file: string, input: Record<string, string>, what: string, opts: { changed?: string[]; kohyaAlpha?: boolean } = {}): Ref {
  const r = reference(file);
  const m = r.meta;
  for (const k of Object.keys(input)) assert.ok(m[k] !== undefined, `${what}: ${k} was dropped`);
  const updated = new Set([
    "ss_network_dim",
    "ss_network_alpha",
    "ss_network_args",
    "sshs_model_hash",
    "sshs_legacy_hash",
    "modelspec.hash_sha256",
    ...(opts.changed ?? []),
  ]);
  for (const [k, v] of Object.entries(input)) if (!updated.has(k)) assert.equal(m[k], v, `${what}: ${k} changed`);
  assert.equal(m["sshs_model_hash"], r.model, `${what}: sshs_model_hash`);
  assert.equal(m["sshs_legacy_hash"], r.legacy, `${what}: sshs_legacy_hash`);
  if (input["modelspec.hash_sha256"] !== undefined) assert.equal(m["modelspec.hash_sha256"], `0x${r.model}`, `${what}: modelspec.hash_sha256`);
  const mods = Object.values(r.modules);
  const lin = mods.filter((x) => !x.kernel);
  const conv = mods.filter((x) => x.kernel);
  assert.equal(m["ss_network_dim"], uniformOr(lin.map((x) => String(x.rank))), `${what}: ss_network_dim`);
  if (opts.kohyaAlpha !== false) {
    assert.equal(m["ss_network_alpha"], uniformOr(lin.map((x) => pyFloat(x.alpha ?? x.rank))), `${what}: ss_network_alpha`);
    if (conv.length && input["ss_network_args"]) {
      const args = JSON.parse(m["ss_network_args"]!) as Record<string, string>;
      assert.equal(args["conv_dim"], uniformOr(conv.map((x) => String(x.rank))), `${what}: conv_dim`);
      assert.equal(args["conv_alpha"], uniformOr(conv.map((x) => pyFloat(x.alpha ?? x.rank))), `${what}: conv_alpha`);
    }
  }
  return r;
}

test("truncate --rank / --energy of a kohya file: every field kept, dim/alpha/conv args/hashes made true for the output", { skip: skipPy }, async () => {
  console.log(`seed ${seed}`);
  const input = await kohyaInput(new Rng(seed));
  const r24 = join(tmp, "r24.safetensors");
  const c = await runCli(["truncate", input, "--rank", "24", "-o", r24]);
  assert.equal(c.code, 0, c.err);
  const ref = checkOutput(r24, INPUT_META, "truncate --rank 24", { changed: ["ss_training_comment"] });
  assert.ok(ref.ss_header_bytes + ref.data_bytes > 0x110000, "the legacy slice lies in the data");
  assert.match(ref.meta["ss_training_comment"]!, /^dimension is resized from 32 to 24; trained for the test$/);
  assert.equal(ref.meta["ss_network_dim"], "24");
  // lint reads the fields as sd-scripts means them (3×3 conv modules by conv_dim/conv_alpha): no finding
  const l = await runCli(["lint", r24, "--json"]);
  assert.deepEqual(
    (JSON.parse(l.out) as { findings: { rule: string }[] }).findings.filter((x) => x.rule.startsWith("kohya-metadata")),
    [],
    "lint on the output",
  );
  const en = join(tmp, "energy.safetensors");
  assert.equal((await runCli(["truncate", input, "--energy", "0.5", "-o", en])).code, 0);
  const e = checkOutput(en, INPUT_META, "truncate --energy 0.5", { changed: ["ss_training_comment"] });
  assert.notEqual(e.model, ref.model);
  // the small fixture: the legacy slice is past the end, sha256 of nothing
  const small = join(tmp, "small.safetensors");
  assert.equal((await runCli(["truncate", join(fixturesDir, "kohya-sd.safetensors"), "--rank", "2", "-o", small])).code, 0);
  const s = reference(small);
  assert.equal(s.meta["sshs_legacy_hash"], s.legacy);
  assert.equal(s.legacy, "e3b0c442");
  assert.equal(s.meta["sshs_model_hash"], s.model);
});

test("convert to kohya (file and standard output), PEFT and diffusers, and merge: the kohya fields kept and made true", { skip: skipPy }, async () => {
  console.log(`seed ${seed + 1}`);
  const input = await kohyaInput(new Rng(seed + 1));
  const k = join(tmp, "conv-k.safetensors");
  assert.equal((await runCli(["convert", input, "--to", "kohya", "-o", k])).code, 0);
  const rk = checkOutput(k, INPUT_META, "convert --to kohya");
  // the same bytes when written to standard output (the data is held until the hashes are known)
  const { main } = await import("../../commands/index.js");
  const chunks: Buffer[] = [];
  const sink = {
    // a stream's write calls back once the chunk is taken (stdoutSink waits for it)
    write: (s: string | Uint8Array, cb?: () => void) => {
      chunks.push(Buffer.from(s));
      cb?.();
      return true;
    },
    isTTY: false,
    on() {},
    once() {},
    removeListener() {},
  };
  const code = await main(["convert", input, "--to", "kohya", "-o", "-"], {
    stdout: sink,
    stderr: { write: () => true, isTTY: false },
    stdin: process.stdin,
    env: {},
    color: false,
  } as never);
  assert.equal(code, 0);
  assert.ok(Buffer.concat(chunks).equals(readFileSync(k)), "stdout output equals the file output");
  for (const to of ["peft", "diffusers"]) {
    const o = join(tmp, `conv-${to}.safetensors`);
    assert.equal((await runCli(["convert", input, "--to", to, "-o", o])).code, 0);
    const r = checkOutput(o, INPUT_META, `convert --to ${to}`, { kohyaAlpha: false });
    // same tensor values, other names: the data region's hash differs, each matches its own file
    assert.notEqual(r.model, rk.model);
    assert.equal(r.meta["ss_network_alpha"], "16.0", `convert --to ${to}: ss_network_alpha`);
  }
  const other = await kohyaInput(new Rng(seed + 2));
  const mg = join(tmp, "merge.safetensors");
  const c = await runCli(["merge", input, other, "--method", "cat", "-o", mg]);
  assert.equal(c.code, 0, c.err);
  const rm = checkOutput(mg, INPUT_META, "merge --method cat");
  assert.equal(rm.meta["ss_network_dim"], "64");
});

test("a header over 1 MiB (a huge ss_tag_frequency): the legacy slice starts inside the ss_*-only header and is hashed from it", { skip: skipPy }, async () => {
  console.log(`seed ${seed + 5}`);
  const big = await kohyaInput(new Rng(seed + 5));
  const huge = JSON.stringify({ "5_set": Object.fromEntries(Array.from({ length: 60000 }, (_, i) => [`a rather long tag name ${i}`, i])) });
  assert.ok(huge.length > 0x110000);
  const withHuge = join(tmp, "huge-meta.safetensors");
  assert.equal((await runCli(["convert", big, "--to", "kohya", "-o", withHuge])).code, 0);
  // re-write the input with the huge field, then convert it: the output's header holds it too
  const src = readFileSync(withHuge);
  const n = Number(src.readBigUInt64LE(0));
  const header = JSON.parse(src.subarray(8, 8 + n).toString("utf8")) as Record<string, unknown> & { __metadata__: Record<string, string> };
  header.__metadata__ = { ...INPUT_META, ss_tag_frequency: huge };
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const input = join(tmp, "huge-in.safetensors");
  writeFileSync(input, Buffer.concat([len, json, src.subarray(8 + n)]));
  const out = join(tmp, "huge-out.safetensors");
  const c = await runCli(["truncate", input, "--rank", "16", "-o", out]);
  assert.equal(c.code, 0, c.err);
  const r = checkOutput(out, { ...INPUT_META, ss_tag_frequency: huge }, "huge header", { changed: ["ss_training_comment"] });
  assert.ok(r.ss_header_bytes > 0x100000, "the legacy slice starts in the header");
});

test("a LoHa file written as plain LoRA: ss_network_module becomes networks.lora, algo leaves ss_network_args, the comment says so", {
  skip: skipPy,
}, async () => {
  console.log(`seed ${seed + 3}`);
  const meta = {
    ss_network_module: "lycoris.kohya",
    ss_network_dim: "8",
    ss_network_alpha: "4.0",
    ss_network_args: JSON.stringify({ algo: "loha", conv_dim: "4", conv_alpha: "2" }),
    ss_training_comment: "loha run",
  };
  const specs: LySpec[] = [
    { kind: "loha", stem: "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q", out: 64, in: 64, r1: 4, r2: 4, alpha: 4 },
    { kind: "loha", stem: "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_k", out: 64, in: 64, r1: 4, r2: 4, alpha: 4 },
  ];
  const { bytes } = await lycorisFile(new Rng(seed + 3), specs, "F32", meta, { dense: false });
  const f = join(tmp, "loha.safetensors");
  writeFileSync(f, bytes);
  const o = join(tmp, "loha-as-lora.safetensors");
  const c = await runCli(["convert", f, "--to", "kohya", "-o", o]);
  assert.equal(c.code, 0, c.err);
  const r = checkOutput(o, meta, "LoHa → kohya", { changed: ["ss_network_module", "ss_training_comment"] });
  assert.equal(r.meta["ss_network_module"], "networks.lora");
  assert.deepEqual(JSON.parse(r.meta["ss_network_args"]!), { conv_dim: "4", conv_alpha: "2" });
  assert.equal(r.meta["ss_training_comment"], "written as plain LoRA by lora from lycoris.kohya (algo loha); loha run");
  assert.equal(r.meta["ss_network_dim"], "16", "LoHa r1·r2 = 16 exact factors");
});

test("inspect shows the kohya metadata: known fields parsed in --json, long fields summarised in the header lines", async () => {
  const input = await kohyaInput(new Rng(seed + 4));
  const j = await runCli(["inspect", input, "--json"]);
  assert.equal(j.code, 0, j.err);
  const k = (JSON.parse(j.out) as { kohya_metadata: Record<string, unknown> }).kohya_metadata;
  assert.equal(k["base_model_version"], "sd_v1");
  assert.equal(k["network_module"], "networks.lora");
  assert.equal(k["network_dim"], 32);
  assert.equal(k["network_alpha"], 16);
  assert.deepEqual(k["network_args"], { conv_dim: "8", conv_alpha: "4.0" });
  assert.equal(k["training_comment"], "trained for the test");
  assert.equal(k["architecture"], "stable-diffusion-v1/lora");
  assert.equal(k["title"], "test title");
  assert.equal(k["model_hash"], INPUT_META["sshs_model_hash"]);
  assert.deepEqual(k["fields"], {
    "modelspec.hash_sha256": INPUT_META["modelspec.hash_sha256"],
    ss_num_epochs: "10",
    ss_tag_frequency: LONG_TAGS,
  });
  const t = await runCli(["inspect", input]);
  assert.equal(t.code, 0, t.err);
  assert.match(t.err, /kohya metadata: base sd_v1, architecture stable-diffusion-v1\/lora, networks\.lora dim 32 alpha 16, args conv_dim=8 conv_alpha=4\.0/);
  assert.match(t.err, /kohya comment: trained for the test/);
  assert.match(t.err, /ss_tag_frequency 1 dataset\(s\), 300 tags/);
  assert.ok(!t.err.includes("tag number 299"), "the long field is summarised");
  // a file without kohya fields has no kohya_metadata
  const p = await runCli(["inspect", join(fixturesDir, "example"), "--json"]);
  assert.equal((JSON.parse(p.out) as Record<string, unknown>)["kohya_metadata"], undefined);
});
