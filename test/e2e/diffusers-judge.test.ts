// Judge check (issue 13): truncations of the real SD 1.5 LoRA (../shared/fixtures/real/sd15-pokemon,
// attention-processor keys, rank 4, scale 1) written by `lora truncate --rank R`, in diffusers
// layout (the input's own) and in kohya layout, are read by diffusers' own loading code
// (../shared/tools/diffusers-check, diffusers v0.40.0, offline) with the ΔW we meant: for every one
// of the 128 modules, diffusers' scaling·B·A (its `--out --factors`) against the rank-R Eckart–Young
// optimum of the published ΔW computed here by numpy (QR of both factors, SVD of the small core),
// relative Frobenius difference ≤ 1e-6 (the factors are stored F32). kohya `lora_unet_…` keys go
// through diffusers' kohya converter, which adds the `unet.` prefix, so they load (a file of
// `unet.`-less diffusers keys loads nothing since v0.33, which is why we never write one).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { runCli } from "../cli.js";
import { needsReal, realDir, sharedDir } from "../paths.js";

const PY = "/usr/bin/python3";
const TOOL = join(sharedDir, "tools", "diffusers-check", "diffusers_check.py");
const DIFFUSERS_SRC = process.env["DIFFUSERS_SRC"] ?? "/tmp/diffusers-src/src";

function skipReason(): string | false {
  const real = needsReal("sd15-pokemon");
  if (real) return real;
  if (!existsSync(TOOL)) return `diffusers-check not found at ${TOOL}`;
  if (!existsSync(PY) || spawnSync(PY, ["-c", "import torch, numpy"]).status !== 0) return `${PY} with torch and numpy not found (Debian python3-torch)`;
  if (!existsSync(join(DIFFUSERS_SRC, "diffusers"))) return `no diffusers source at ${DIFFUSERS_SRC} (set DIFFUSERS_SRC; see the tool's README)`;
  return false;
}
const skip = skipReason();
const tmp = mkdtempSync(join(tmpdir(), "lora-diffusers-judge-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * Compares diffusers' per-module factors with the rank-R optimum of the published file's ΔW; the
 * published keys are `<module>.processor.<to_q|to_k|to_v|to_out>_lora.<down|up>.weight` with scale 1.
 * Prints {modules, worst, missing, extra}.
 */
const COMPARE = `
import json, struct, sys
import numpy as np
src, npz, R = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = open(src, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
def t(k):
    e = h[k]; assert e["dtype"] == "F32"
    return np.frombuffer(b[8 + n + e["data_offsets"][0]: 8 + n + e["data_offsets"][1]], "<f4").astype(np.float64).reshape(e["shape"])
z = np.load(npz)
got = {k[:-3] for k in z.files if k.endswith("::A")}
want = {}
for k in h:
    if k.endswith("_lora.down.weight"):
        mod, proj = k[: -len("_lora.down.weight")].split(".processor.")
        want["unet." + mod + "." + (proj + ".0" if proj == "to_out" else proj)] = k[: -len("down.weight")]
worst = 0.0
for name, stem in want.items():
    if name not in got: continue
    up, down = t(stem + "up.weight"), t(stem + "down.weight")
    q1, r1 = np.linalg.qr(up); q2, r2 = np.linalg.qr(down.T)
    u, s, vt = np.linalg.svd(r1 @ r2.T)
    opt = (q1 @ u[:, :R] * s[:R]) @ (vt[:R] @ q2.T)
    d = z[name + "::B"] @ z[name + "::A"]
    worst = max(worst, np.linalg.norm(d - opt) / np.linalg.norm(opt))
print(json.dumps({"modules": len(got & set(want)), "worst": worst, "missing": sorted(set(want) - got)[:3], "extra": sorted(got - set(want))[:3]}))
`;

for (const to of ["diffusers", "kohya"] as const) {
  test(`truncate --rank 1/2/3 of the real SD 1.5 LoRA, ${to} layout: diffusers loads all 128 modules with the optimal rank-R ΔW (≤ 1e-6)`, {
    skip,
  }, async () => {
    const src = join(realDir, "sd15-pokemon", "pytorch_lora_weights.safetensors");
    for (const R of [1, 2, 3]) {
      const out = join(tmp, `r${R}-${to}.safetensors`);
      const c = await runCli(["truncate", join(realDir, "sd15-pokemon"), "--rank", String(R), ...(to === "kohya" ? ["--to", "kohya"] : []), "-o", out]);
      assert.equal(c.code, 0, c.err);
      const npz = join(tmp, `r${R}-${to}.npz`);
      const d = spawnSync(PY, [TOOL, out, "--model", "sd15", "--json", "--out", npz, "--factors", "--diffusers-src", DIFFUSERS_SRC], {
        encoding: "utf8",
        maxBuffer: 1 << 28,
      });
      assert.equal(d.status, 0, `diffusers-check exit ${d.status}: ${d.stdout.slice(0, 2000)}${d.stderr.slice(-2000)}`);
      const rep = JSON.parse(d.stdout) as { modules: number; problems: Record<string, unknown> };
      assert.equal(rep.modules, 128, `rank ${R}: modules diffusers built`);
      assert.deepEqual(rep.problems, {}, `rank ${R}: diffusers-check problems`);
      const cmp = spawnSync(PY, ["-c", COMPARE, src, npz, String(R)], { encoding: "utf8", maxBuffer: 1 << 26 });
      assert.equal(cmp.status, 0, cmp.stderr);
      const r = JSON.parse(cmp.stdout) as { modules: number; worst: number; missing: string[]; extra: string[] };
      console.log(`${to} rank ${R}: ${r.modules} modules, worst relative ΔW difference ${r.worst.toExponential(2)}`);
      assert.deepEqual([r.missing, r.extra], [[], []], `rank ${R}: module names`);
      assert.equal(r.modules, 128);
      assert.ok(r.worst <= 1e-6, `rank ${R}: worst ${r.worst}`);
    }
  });
}

test("truncate --energy 0.9 of the real SD 1.5 LoRA: the kohya output's warning names exactly the modules diffusers mis-scales; the diffusers output loads them all as written", {
  skip,
}, async () => {
  const judge = (file: string) => {
    const d = spawnSync(PY, [TOOL, file, "--model", "sd15", "--json", "--diffusers-src", DIFFUSERS_SRC], { encoding: "utf8", maxBuffer: 1 << 28 });
    assert.ok(d.status === 0 || d.status === 3, `diffusers-check exit ${d.status}: ${d.stderr.slice(-2000)}`);
    return JSON.parse(d.stdout) as { modules: number; problems: { scale_mismatch?: string[] } & Record<string, unknown> };
  };
  const run = async (to: "kohya" | "diffusers") => {
    const out = join(tmp, `e90-${to}.safetensors`);
    const c = await runCli(["truncate", join(realDir, "sd15-pokemon"), "--energy", "0.9", "--to", to, "-o", out, "--json"]);
    assert.equal(c.code, 0, c.err);
    const warnings = (JSON.parse(c.out) as { warnings: string[] }).warnings;
    for (const w of warnings) assert.ok(c.err.includes(`lora: warning: ${w}`), "each warning is also on stderr");
    return { out, warnings };
  };
  const k = await run("kohya");
  const mis = judge(k.out).problems.scale_mismatch ?? [];
  const stems = mis.map((x) => x.slice(0, x.indexOf(":")));
  const alphaWarning = k.warnings.find((w) => /^diffusers applies alpha /.test(w));
  assert.ok(alphaWarning, `a warning about differing alphas: ${JSON.stringify(k.warnings)}`);
  const count = Number(/ to (\d+) lora_unet_ attention module/.exec(alphaWarning)![1]);
  console.log(`kohya output: ${count} modules warned, ${stems.length} mis-scaled by diffusers`);
  assert.ok(count > 0);
  assert.equal(count, stems.length, "the warning counts the modules diffusers mis-scales");
  for (const named of /with another alpha \(([^)]*)\)/
    .exec(alphaWarning)![1]!
    .replace(/ and \d+ more$/, "")
    .split(", "))
    assert.ok(stems.includes(named), named);
  const d = await run("diffusers");
  assert.deepEqual(d.warnings, []);
  const rep = judge(d.out);
  assert.equal(rep.modules, 128);
  assert.deepEqual(rep.problems, {});
});
