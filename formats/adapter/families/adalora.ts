// AdaLoRA as PEFT saves it (docs/formats.md "Adapter families"; huggingface/peft tuners/adalora/layer.py
// SVDLinear.get_delta_weight, model.py resize_state_dict_by_rank_pattern): per module the
// ParameterDict keys `<m>.lora_A` [r_k, in], `<m>.lora_E` [r_k, 1], `<m>.lora_B` [out, r_k] (no
// `.weight`), r_k the triplets kept by the final budget (init_r when rank_pattern is null).
// ΔW = B·diag(E)·A · α/(ranknum + 1e-5), ranknum = init_r even after pruning (PEFT copies it back).
// The live rank is the count of non-zero E; pruned triplets are dropped from the exact factors.
import { InvalidInputError } from "../../../common/errors.js";
import { buildDerivedAdapterParts, type DerivedModuleSpec } from "../derived.js";
import { groupByRole } from "../module.js";
import type { DetectContext, Detected, Detector } from "../detector.js";
import { budgetByLayer, liveTriplets, loraBaseConfig, readF64, stripPeftPrefix, tripletModule } from "./shared.js";
import { claimsAdalora } from "./claims.js";

const ROLES = [".lora_A", ".lora_E", ".lora_B"] as const;

function num(cfg: Record<string, unknown>, key: string, label: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new InvalidInputError(`${label}: AdaLoRA config needs a numeric ${key} (found ${JSON.stringify(v)})`);
  return v;
}

async function parse(ctx: DetectContext): Promise<Detected> {
  const cfg = ctx.config;
  if (cfg?.["peft_type"] !== "ADALORA")
    throw new InvalidInputError(
      `${ctx.label}: AdaLoRA triplets (lora_A/lora_E/lora_B) but no AdaLoRA adapter_config (peft_type ${JSON.stringify(cfg?.["peft_type"] ?? null)}); init_r and lora_alpha set ΔW's scale`,
      { hint: "keep the adapter_config.json that PEFT saved beside adapter_model.safetensors" },
    );
  const initR = num(cfg, "init_r", ctx.label, 12);
  const alphaCfg = num(cfg, "lora_alpha", ctx.label, 8);
  const alpha = alphaCfg > 0 ? alphaCfg : initR;
  // ranknum is a float32 Parameter in PEFT: α/(ranknum + 1e-5) with the sum rounded to float32.
  const scale = alpha / Math.fround(initR + 1e-5);
  const { groups, rest } = groupByRole(
    ctx.file.header.tensors,
    ROLES.map((r) => [r, r] as const),
  );
  const specs: DerivedModuleSpec[] = [];
  const live: { path: string; live: number }[] = [];
  let stored = 0;
  for (const [base, g] of groups) {
    const missing = ROLES.filter((r) => !g[r]);
    if (missing.length) throw new InvalidInputError(`${ctx.label}: AdaLoRA module "${base}" lacks ${missing.map((m) => m.slice(1)).join(", ")}`);
    const A = g[".lora_A"]!,
      E = g[".lora_E"]!,
      B = g[".lora_B"]!;
    const rk = A.shape[0]!;
    if (A.shape.length !== 2 || B.shape.length !== 2 || B.shape[1] !== rk || E.shape[0] !== rk || E.shape.reduce((x, y) => x * y, 1) !== rk)
      throw new InvalidInputError(
        `${ctx.label}: AdaLoRA module "${base}": shapes A [${A.shape}], E [${E.shape}], B [${B.shape}] are not [r, in], [r, 1], [out, r]`,
      );
    if (rk > initR) throw new InvalidInputError(`${ctx.label}: AdaLoRA module "${base}" has ${rk} triplets, more than init_r ${initR}`);
    const path = stripPeftPrefix(base);
    const e = await readF64(ctx.file, E);
    const keep = liveTriplets(e);
    stored += rk;
    live.push({ path, live: keep.length });
    if (keep.length === 0) continue; // fully pruned: ΔW = 0
    const [out, inn] = [B.shape[0]!, A.shape[1]!];
    const family = {
      type: "adalora",
      detail: `AdaLoRA ${keep.length} of ${initR} live`,
      stored: [A, E, B],
      dtype: A.dtype,
      info: { live_rank: keep.length, stored_rank: rk, init_r: initR, lora_alpha: alpha, ranknum: initR },
    };
    specs.push(
      tripletModule({ path, out, inn, r: rk, e, scale, keep }, family, async () => {
        const [a, b] = await Promise.all([readF64(ctx.file, A), readF64(ctx.file, B)]);
        return { B: b, A: a };
      }),
    );
  }
  const total = live.reduce((s, m) => s + m.live, 0);
  const dead = live.filter((m) => m.live === 0).length;
  ctx.notes.push(
    `AdaLoRA (PEFT): ${total} of ${initR * live.length} triplets live (init_r ${initR} × ${live.length} modules${cfg["target_r"] !== undefined ? `, target_r ${String(cfg["target_r"])}` : ""}; ${stored} stored); scale = lora_alpha/(init_r + 1e-5) = ${scale.toPrecision(6)}`,
    `AdaLoRA live rank per layer: ${budgetByLayer(live)}`,
  );
  if (dead) ctx.notes.push(`${dead} AdaLoRA module(s) fully pruned (ΔW = 0): not listed, not written`);
  const parts = buildDerivedAdapterParts(ctx.file, specs, [], rest);
  return { format: "peft", ...parts, config: loraBaseConfig(cfg), configSource: `${ctx.configSource} (AdaLoRA init_r, lora_alpha)` };
}

export const adaloraDetector: Detector = {
  format: "peft",
  claims: claimsAdalora,
  parse,
};
