// Adapter families beyond B·A (issue 14; docs/formats.md "Adapter families"), on files in each
// family's own layout (test/families/files.ts) with dense float64 references formed from the
// family's formula: the exact factors read equal ΔW; inspect's spectrum is the dense SVD's (≤ 1e-6
// of σ₁); convert --to peft|kohya writes the same ΔW (≤ 1e-6) and PEFT loads it so (peft-check);
// truncate lands within 1e-5 of the dense optimum; merge takes them; the refusals exit 3.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { Rng } from "../../linalg/random.js";
import { runCli } from "../cli.js";
import { peftCheckUnavailable, peftDeltas } from "../peft-check.js";
import { numpy, relDiff } from "../reference.js";
import { validate } from "../json-schema.js";
import { repoRoot } from "../paths.js";
import { assertDeltas, deltas, refOptimum, refSpectrum } from "./check.js";
import { adaloraFile, increloraFile, meteoraFile, missFile, threeMatrixFile, type FamilyFile } from "./files.js";
import { tempDir } from "../temp-dir.js";

const seed = Number(process.env["LORA_SEED"] ?? Date.now() % 1e9);
const tmp = () => tempDir("lora-families-");

const schemas = join(repoRoot, "docs", "schemas");
/** inspect --json of a family file keeps docs/schemas/inspect.schema.json. */
function schemaOk(doc: unknown, what: string): void {
  const errs = validate(doc, JSON.parse(readFileSync(join(schemas, "inspect.schema.json"), "utf8")) as Record<string, unknown>, schemas);
  assert.deepEqual(errs, [], `${what}: inspect --json against its schema:\n${errs.slice(0, 10).join("\n")}`);
}

async function cli(args: string[], want = 0) {
  const r = await runCli([...args, "--backend", "js"]);
  assert.equal(r.code, want, `lora ${args.join(" ")} → ${r.code}\n${r.err}`);
  return r;
}

/** ΔW of PEFT's own loading of a PEFT directory we wrote (peft-check), by module name. */
function peftLoaded(dir: string, names: string[]): Map<string, Float64Array> | null {
  if (peftCheckUnavailable()) return null;
  const npz = peftDeltas(dir);
  const out = new Map<string, Float64Array>();
  const got = numpy<Record<string, number[]>>("d = np.load(inp['npz'])\nprint(json.dumps({k: d[k].ravel().tolist() for k in d.files}))", { npz });
  for (const n of names) if (got[n]) out.set(n, Float64Array.from(got[n]!));
  return out;
}

/** The whole round: factors, spectrum, convert (peft + kohya, PEFT loading), truncate, merge. */
async function roundTrip(f: FamilyFile, label: string, extra: string[] = []) {
  assertDeltas(await deltas(f.input), f.refs, 1e-12, `${label} exact factors`);
  const insp = JSON.parse((await cli(["inspect", f.input, "--json"])).out) as {
    modules: { name: string; singular_values: number[]; family?: { type: string } }[];
  };
  for (const [name, r] of f.refs) {
    const m = insp.modules.find((x) => x.name === name)!;
    assert.ok(m?.family, `${label}: inspect shows ${name} with its family`);
    const want = refSpectrum(r);
    const top = want[0]!;
    m.singular_values.forEach((s, i) => assert.ok(Math.abs(s - want[i]!) <= 1e-6 * top, `${label} ${name} σ${i + 1} ${s} vs ${want[i]}`));
    for (let i = m.singular_values.length; i < want.length; i++)
      assert.ok(want[i]! <= 1e-6 * top, `${label} ${name}: σ${i + 1} ${want[i]} beyond the stored rank`);
  }
  const dir = tmp();
  await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "peft"), ...extra]);
  assertDeltas(await deltas(join(dir, "peft")), f.refs, 1e-6, `${label} → peft`);
  const loaded = peftLoaded(join(dir, "peft"), [...f.refs.keys()]);
  if (loaded) assertDeltas(loaded, f.refs, 1e-6, `${label} → peft, loaded by PEFT`);
  await cli(["convert", f.input, "--to", "kohya", "-o", join(dir, "k.safetensors"), ...extra]);
  assertDeltas(await deltas(join(dir, "k.safetensors")), f.refs, 1e-6, `${label} → kohya`, (n) => `lora_${n.replace(/\./g, "_")}`);
  await cli(["truncate", f.input, "--rank", "2", "-o", join(dir, "t"), "--dtype", "F32", ...extra]);
  const tr = await deltas(join(dir, "t"));
  for (const [name, r] of f.refs) {
    const opt = refOptimum(r, 2);
    const e = relDiff(tr.get(name)!, opt);
    assert.ok(e <= 1e-5, `${label} truncate ${name}: ${e} from the dense optimum`);
  }
  await cli(["lint", f.input]);
  assert.match((await cli(["diff", f.input, join(dir, "peft"), "--json"])).out, /"modules"/);
  await cli(["merge", f.input, f.input, "--method", "cat", "-o", join(dir, "m"), ...extra]);
  assertDeltas(await deltas(join(dir, "m")), f.refs, 1e-6, `${label} merge cat (½ + ½)`);
}

test(`AdaLoRA (PEFT layout): exact factors, spectra, convert, truncate, merge (seed ${seed})`, async () => {
  const f = await adaloraFile(join(tmp(), "ada"), new Rng(seed));
  await roundTrip(f, "adalora");
  const insp = JSON.parse((await cli(["inspect", f.input, "--json"])).out) as {
    modules: { name: string; rank: number; family: { info: Record<string, number> } }[];
    notes: string[];
  };
  const v = insp.modules.find((m) => m.name.endsWith("v_proj"))!;
  assert.equal(v.rank, 4, "zero E entries are not live");
  assert.equal(v.family.info["init_r"], 6);
  assert.ok(
    insp.notes.some((n) => /live rank per layer: 0:8 1:2/.test(n)),
    insp.notes.join("\n"),
  );
  const dir = tmp();
  await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "p")]);
  const cfg = JSON.parse(await import("node:fs").then((fs) => fs.readFileSync(join(dir, "p", "adapter_config.json"), "utf8"))) as Record<string, unknown>;
  assert.equal(cfg["peft_type"], "LORA");
  assert.ok(cfg["rank_pattern"] && Object.keys(cfg["rank_pattern"] as object).length > 0, "pruned ranks give a rank_pattern");
  assert.equal(cfg["init_r"], undefined, "AdaLoRA's own keys are not carried into a LoRA config");
});

test(`IncreLoRA whole-model checkpoint: chunks, ranknum, lora_alpha from config.json (seed ${seed})`, async () => {
  const f = await increloraFile(join(tmp(), "inc"), new Rng(seed + 1));
  await roundTrip(f, "increlora");
});

for (const [kind, rs] of [
  ["xs", false],
  ["xs", true],
  ["nlora", false],
] as const)
  test(`${kind === "xs" ? "LoRA-XS/SB" : "NLoRA"} B·R·A${rs ? " (rsLoRA)" : ""}: exact, convert splits √Σ of R (seed ${seed})`, async () => {
    const f = await threeMatrixFile(join(tmp(), kind), new Rng(seed + 2), kind, rs);
    await roundTrip(f, kind);
  });

test(`MeteoRA: one module per expert; convert --expert I and all; truncate refuses (seed ${seed})`, async () => {
  const f = await meteoraFile(join(tmp(), "met"), new Rng(seed + 3));
  assertDeltas(await deltas(f.input), f.refs, 1e-12, "meteora exact factors");
  const dir = tmp();
  await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "e1"), "--expert", "1"]);
  const one = new Map([...f.refs].filter(([n]) => n.endsWith(".experts.1")));
  assertDeltas(await deltas(join(dir, "e1")), one, 1e-6, "meteora --expert 1", (n) => n.replace(/\.experts\.1$/, ""));
  const loaded = peftLoaded(
    join(dir, "e1"),
    [...one.keys()].map((n) => n.replace(/\.experts\.1$/, "")),
  );
  if (loaded) assertDeltas(loaded, one, 1e-6, "meteora expert 1 loaded by PEFT", (n) => n.replace(/\.experts\.1$/, ""));
  await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "all"), "--expert", "all"]);
  for (let i = 0; i < f.experts; i++) {
    const mine = new Map([...f.refs].filter(([n]) => n.endsWith(`.experts.${i}`)));
    assertDeltas(await deltas(join(dir, "all", `expert-${i}`)), mine, 1e-6, `meteora expert-${i}`, (n) => n.replace(/\.experts\.\d+$/, ""));
  }
  assert.match((await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "x")], 2)).err, /--expert/);
  assert.match((await cli(["truncate", f.input, "--rank", "1", "-o", join(dir, "y")], 3)).err, /MeteoRA/);
});

test(`MiSS default, mini, bat and Bone: base-dependent without --base (inspect lists, convert exits 3); exact with --base (seed ${seed})`, async () => {
  for (const [variant, bone] of [
    ["default", false],
    ["mini", false],
    ["bat", false],
    ["default", true],
  ] as const) {
    const f = await missFile(join(tmp(), `miss-${variant}`), new Rng(seed + 4), variant, bone);
    const insp = JSON.parse((await cli(["inspect", f.input, "--json"])).out) as { modules: unknown[]; base_dependent: { name: string }[] };
    schemaOk(insp, `miss ${variant}`);
    assert.equal(insp.modules.length, 0);
    assert.deepEqual(insp.base_dependent.map((d) => d.name).sort(), [...f.refs.keys()].sort());
    const dir = tmp();
    assert.match((await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "p")], 3)).err, /base model's weights/);
    assert.match((await cli(["truncate", f.input, "--rank", "1", "-o", join(dir, "t")], 3)).err, /base model's weights/);
    await cli(["convert", f.input, "--to", "peft", "-o", join(dir, "p"), "--base", f.base]);
    assertDeltas(await deltas(join(dir, "p")), f.refs, 1e-6, `miss ${variant} → peft with --base`);
    const loaded = peftLoaded(join(dir, "p"), [...f.refs.keys()]);
    if (loaded) assertDeltas(loaded, f.refs, 1e-6, `miss ${variant} loaded by PEFT`);
  }
});

test("recognised files with a missing piece exit 3 with a message naming it", async () => {
  const rng = new Rng(seed + 5);
  const fs = await import("node:fs");
  const a = await adaloraFile(join(tmp(), "a"), rng);
  fs.unlinkSync(join(a.input, "adapter_config.json"));
  assert.match((await cli(["inspect", a.input], 3)).err, /AdaLoRA.*init_r/);
  const i = await increloraFile(join(tmp(), "i"), rng);
  fs.unlinkSync(join(i.input, "..", "config.json"));
  assert.match((await cli(["inspect", i.input], 3)).err, /IncreLoRA.*lora_alpha/);
  const m = await meteoraFile(join(tmp(), "m"), rng);
  fs.unlinkSync(join(m.input, "..", "adapter_config.json"));
  assert.match((await cli(["inspect", m.input], 3)).err, /MeteoRA.*lora_alpha/);
});
