// lora lint: every rule has a file that breaks it (the finding appears, with its severity and
// loader) and a file that passes (no finding at all); the PEFT files lint passes load under PEFT's
// own rules (peft-check, where available) with the ΔW we meant; exit codes 0 and 3 from the CLI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeFloats, serializeSafetensors, type DType, type TensorSpec } from "../../formats/safetensors/index.js";
import { Rng } from "../../linalg/random.js";
import { fixturesDir } from "../../test/paths.js";
import { peftCheck, peftCheckUnavailable, peftDeltas } from "../../test/peft-check.js";
import { spawnSync } from "node:child_process";
import { lintAdapter } from "./lint.js";
import { RULES } from "./rules.js";
import { runCli as cli } from "../../test/cli.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`lint.test seed=${seed}`);
const work = mkdtempSync(join(tmpdir(), "lora-lint-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(work, `${n++}-${name}`);

interface Mod {
  path: string;
  out: number;
  inn: number;
  r: number;
  dtype?: DType;
  A?: Float64Array;
  B?: Float64Array;
}
const MODS: Mod[] = [
  { path: "model.layers.0.self_attn.q_proj", out: 16, inn: 12, r: 4 },
  { path: "model.layers.0.self_attn.v_proj", out: 16, inn: 12, r: 4 },
  { path: "model.layers.1.self_attn.q_proj", out: 16, inn: 12, r: 2 },
];
const CONFIG = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj"], rank_pattern: { "model.layers.1.self_attn.q_proj": 2 } };

function factorSpecs(rng: Rng, m: Mod, names: [string, string]): TensorSpec[] {
  const dt = m.dtype ?? "F32";
  return [
    { name: names[0], dtype: dt, shape: [m.r, m.inn], data: encodeFloats(dt, m.A ?? rng.normals(m.r * m.inn)) },
    { name: names[1], dtype: dt, shape: [m.out, m.r], data: encodeFloats(dt, m.B ?? rng.normals(m.out * m.r)) },
  ];
}

/** A PEFT directory; `edit` may change the tensor list before it is written. */
async function peft(o: { mods?: Mod[]; config?: Record<string, unknown> | null; edit?: (specs: TensorSpec[]) => TensorSpec[] } = {}): Promise<string> {
  const rng = new Rng(seed + n),
    dir = fresh("peft");
  mkdirSync(dir);
  let specs = (o.mods ?? MODS).flatMap((m) => factorSpecs(rng, m, [`base_model.model.${m.path}.lora_A.weight`, `base_model.model.${m.path}.lora_B.weight`]));
  if (o.edit) specs = o.edit(specs);
  writeFileSync(join(dir, "adapter_model.safetensors"), await serializeSafetensors(specs, { format: "pt" }));
  const config = o.config === undefined ? CONFIG : o.config;
  if (config) writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(config));
  return dir;
}

async function kohya(o: { alpha?: boolean; meta?: Record<string, string> } = {}): Promise<string> {
  const rng = new Rng(seed + n),
    file = fresh("kohya.safetensors");
  const specs = MODS.flatMap((m) => {
    const stem = "lora_unet_" + m.path.replace(/\./g, "_");
    return [
      ...factorSpecs(rng, m, [`${stem}.lora_down.weight`, `${stem}.lora_up.weight`]),
      ...(o.alpha === false ? [] : [{ name: `${stem}.alpha`, dtype: "F32" as DType, shape: [], data: encodeFloats("F32", Float64Array.of(2)) }]),
    ];
  });
  writeFileSync(file, await serializeSafetensors(specs, o.meta ?? { ss_network_dim: "4", ss_network_alpha: "2" }));
  return file;
}

const f32 = (name: string, shape: number[], v: number[]): TensorSpec => ({ name, dtype: "F32", shape, data: encodeFloats("F32", Float64Array.from(v)) });
const Q = "base_model.model.model.layers.0.self_attn.q_proj";

/** rule → [a file that breaks it, and only it where possible]. */
const failing: [keyof typeof RULES, () => Promise<string>][] = [
  [
    "safetensors",
    async () => {
      const p = fresh("junk.safetensors");
      writeFileSync(p, Buffer.from("not a safetensors file at all"));
      return p;
    },
  ],
  [
    "notLora",
    async () => {
      const p = fresh("model.safetensors");
      writeFileSync(p, await serializeSafetensors([f32("model.embed.weight", [2, 2], [1, 2, 3, 4])], null));
      return p;
    },
  ],
  ["unreadable", async () => join(fixturesDir, "diffusers", "bad-duplicate-module.safetensors")],
  ["unpaired", () => peft({ edit: (s) => s.filter((t) => t.name !== `${Q}.lora_B.weight`) })],
  ["rankMismatch", () => peft({ edit: (s) => s.map((t) => (t.name === `${Q}.lora_B.weight` ? f32(t.name, [16, 3], new Array(48).fill(0.5)) : t)) })],
  [
    "factorDtype",
    () =>
      peft({ edit: (s) => s.map((t) => (t.name === `${Q}.lora_A.weight` ? { name: t.name, dtype: "I32", shape: [4, 12], data: new Uint8Array(4 * 48) } : t)) }),
  ],
  [
    "nonFinite",
    () =>
      peft({
        edit: (s) =>
          s.map((t) =>
            t.name === `${Q}.lora_B.weight`
              ? f32(
                  t.name,
                  [16, 4],
                  Array.from({ length: 64 }, (_, i) => (i === 7 ? NaN : 1)),
                )
              : t,
          ),
      }),
  ],
  ["zeroModule", () => peft({ edit: (s) => s.map((t) => (t.name === `${Q}.lora_B.weight` ? f32(t.name, [16, 4], new Array(64).fill(0)) : t)) })],
  ["mixedDtypes", () => peft({ mods: MODS.map((m, i) => (i === 0 ? { ...m, dtype: "F16" as DType } : m)) })],
  ["peftNoConfig", () => peft({ config: null })],
  ["peftNoTargets", () => peft({ config: { ...CONFIG, target_modules: undefined } })],
  ["peftRank", () => peft({ config: { ...CONFIG, rank_pattern: {} } })],
  ["peftTarget", () => peft({ config: { ...CONFIG, target_modules: ["q_proj"] } })],
  ["peftTarget", () => peft({ config: { ...CONFIG, layers_to_transform: [0] } })],
  ["peftPattern", () => peft({ config: { ...CONFIG, alpha_pattern: { k_proj: 4 } } })],
  ["peftBias", () => peft({ edit: (s) => [...s, f32(`${Q}.lora_B.bias`, [16], new Array(16).fill(0.1))] })],
  ["peftDora", () => peft({ edit: (s) => [...s, f32(`${Q}.lora_magnitude_vector`, [16], new Array(16).fill(1))] })],
  [
    "doraShape",
    () =>
      peft({
        config: { ...CONFIG, use_dora: true },
        edit: (s) => [
          ...s,
          ...MODS.map((m, i) => f32(`base_model.model.${m.path}.lora_magnitude_vector`, [i === 0 ? 12 : 16], new Array(i === 0 ? 12 : 16).fill(1))),
        ],
      }),
  ],
  ["diffusersPrefix", async () => join(fixturesDir, "diffusers", "attn-processor-alphas.safetensors")],
  [
    "kohyaCollision",
    () =>
      peft({
        mods: [
          { path: "model.a_b.c", out: 8, inn: 8, r: 2 },
          { path: "model.a.b_c", out: 8, inn: 8, r: 2 },
        ],
        config: { ...CONFIG, r: 2, target_modules: ["c", "b_c"], rank_pattern: {} },
      }),
  ],
  ["kohyaDim", () => kohya({ meta: { ss_network_dim: "16", ss_network_alpha: "2" } })],
  ["kohyaAlpha", () => kohya({ meta: { ss_network_dim: "4", ss_network_alpha: "8" } })],
  ["kohyaNoAlpha", () => kohya({ alpha: false, meta: {} })],
];

test("lint: a clean PEFT directory and a clean kohya file have no findings", async () => {
  for (const p of [
    await peft(),
    await kohya(),
    await peft({
      config: { ...CONFIG, use_dora: true },
      edit: (s) => [...s, ...MODS.map((m) => f32(`base_model.model.${m.path}.lora_magnitude_vector`, [16], new Array(16).fill(1)))],
    }),
    await peft({ config: { ...CONFIG, lora_bias: true }, edit: (s) => [...s, f32(`${Q}.lora_B.bias`, [16], new Array(16).fill(0.1))] }),
    await peft({ config: { ...CONFIG, layers_to_transform: [0, 1], layers_pattern: "layers" } }),
  ]) {
    const r = await lintAdapter(p);
    assert.deepEqual(r.findings, [], `${p}: ${JSON.stringify(r.findings)}`);
    assert.equal(r.errors, 0);
  }
});

for (const [key, make] of failing) {
  const rule = RULES[key];
  test(`lint rule ${rule.id}: a file that breaks it is reported (${rule.severity}, loader ${rule.loader})`, async () => {
    const r = await lintAdapter(await make());
    const hit = r.findings.filter((f) => f.rule === rule.id);
    assert.ok(hit.length > 0, `${rule.id} not reported; findings: ${JSON.stringify(r.findings)}`);
    for (const h of hit) {
      assert.equal(h.severity, rule.severity);
      assert.equal(h.loader, rule.loader);
      assert.ok(h.message.length > 0);
      assert.ok(!h.module?.startsWith("base_model.model."), `${rule.id} names the module by its path in the model: ${h.module}`);
    }
    assert.equal(
      r.errors > 0,
      r.findings.some((f) => f.severity === "error"),
    );
  });
}

test("every rule in the catalogue has a failing case here", () => {
  assert.deepEqual(new Set(failing.map(([k]) => k)), new Set(Object.keys(RULES)));
});

test("the PEFT files lint passes load under PEFT's own rules with the ΔW we meant (peft-check)", { skip: peftCheckUnavailable() }, async () => {
  for (const dir of [
    await peft(),
    await peft({ config: { ...CONFIG, target_modules: "model\\.layers\\.\\d+\\.self_attn\\.(q|v)_proj" } }),
    await peft({ config: { ...CONFIG, layers_to_transform: [1, 0] } }),
  ]) {
    assert.deepEqual((await lintAdapter(dir)).findings, []);
    const r = peftCheck(dir);
    assert.equal(r.modules, MODS.length);
    assert.ok(r.max_rel < 1e-6, `PEFT's ΔW differs: ${r.max_rel}`);
  }
  // layers_to_transform [0]: lint names the layer-1 module, and PEFT indeed creates no layer for it.
  const dir = await peft({ config: { ...CONFIG, layers_to_transform: [0] } });
  const named = (await lintAdapter(dir)).findings.filter((f) => f.rule === RULES.peftTarget.id).map((f) => f.module);
  assert.deepEqual(named, ["model.layers.1.self_attn.q_proj"]);
  const loaded = spawnSync("/usr/bin/python3", ["-c", "import numpy as np, sys; print(' '.join(sorted(np.load(sys.argv[1]).files)))", peftDeltas(dir)], {
    encoding: "utf8",
  });
  assert.deepEqual(loaded.stdout.trim().split(" "), ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"], loaded.stderr);
});

test("lora lint: exit 0 when clean or only warnings, 3 with an error; --json findings document over several inputs", async () => {
  const good = await peft(),
    warn = await kohya({ alpha: false, meta: {} }),
    bad = await peft({ config: null });
  assert.equal((await cli(["lint", good])).code, 0);
  const w = await cli(["lint", warn]);
  assert.equal(w.code, 0);
  assert.match(w.out, /kohya-missing-alpha/);
  const j = await cli(["lint", good, warn, bad, "--json"]);
  assert.equal(j.code, 3);
  const doc = JSON.parse(j.out);
  assert.equal(doc.adapters.length, 3);
  assert.ok(doc.findings.length >= 4);
  for (const f of doc.findings) for (const k of ["rule", "severity", "module", "loader", "message", "path"]) assert.ok(k in f, k);
  assert.ok(doc.findings.some((f: { rule: string; path: string }) => f.rule === "peft-no-config" && f.path === bad));
  assert.match(j.err, /peft-no-config/);
});
