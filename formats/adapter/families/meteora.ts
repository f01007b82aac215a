// MeteoRA checkpoints (docs/formats.md "Adapter families"; NJUDeepEngine/meteora MoELoRA/layer.py
// MoELoraLayer.update_layer / MoELinear.forward, peft_model.py merge_lora_weights): N LoRA experts
// packed per module, `<m>.lora_A.weight` [N·r, in] (expert i = rows i·r…), `<m>.lora_B.weight`
// [out, N·r] (columns i·r…) and the router `<m>.moe_gate.weight` [N, in]. The mixture is chosen per
// token, so there is no single ΔW: each expert is read as its own module `<m>.experts.<i>` with
// ΔW_i = s·B_i·A_i, s = lora_alpha/r (or /√r with use_rslora) from the experts' adapter_config.json,
// which the checkpoint does not carry. The file is the whole model: every other tensor is left out.
import { InvalidInputError } from "../../../common/errors.js";
import { buildDerivedAdapterParts, type DerivedModuleSpec } from "../derived.js";
import type { DetectContext, Detected, Detector } from "../detector.js";
import { scaleFor } from "../peft-config.js";
import { foldDiagonal, loraBaseConfig, readF64, stripPeftPrefix, linearModule } from "./shared.js";

const GATE = ".moe_gate.weight";

export function hasMeteoraKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(GATE));
}

/** The module path and expert index of a MeteoRA expert module (`<m>.experts.<i>`), or null. */
export function meteoraExpert(m: { family?: { type: string; info?: Record<string, unknown> } }): { module: string; expert: number; experts: number } | null {
  if (m.family?.type !== "meteora") return null;
  const i = m.family.info!;
  return { module: String(i["module"]), expert: Number(i["expert"]), experts: Number(i["experts"]) };
}

async function parse(ctx: DetectContext): Promise<Detected> {
  const cfg = ctx.config;
  const alpha = cfg?.["lora_alpha"],
    r = cfg?.["r"];
  if (typeof alpha !== "number" || typeof r !== "number")
    throw new InvalidInputError(`${ctx.label}: MeteoRA checkpoint (moe_gate + packed lora_A/lora_B) without the experts' lora_alpha and r`, {
      hint: "MeteoRA keeps them in the per-task adapter_config.json files: put one (they share lora_alpha and r) beside the checkpoint as adapter_config.json",
    });
  const byName = ctx.file.header.byName;
  const specs: DerivedModuleSpec[] = [];
  let other = 0;
  const used = new Set<string>();
  for (const t of ctx.file.header.tensors) {
    if (!t.name.endsWith(GATE)) continue;
    const base = t.name.slice(0, -GATE.length);
    const A = byName.get(`${base}.lora_A.weight`),
      B = byName.get(`${base}.lora_B.weight`);
    if (!A || !B) throw new InvalidInputError(`${ctx.label}: MeteoRA module "${base}" has a moe_gate but no ${!A ? "lora_A" : "lora_B"}.weight`);
    for (const x of [t, A, B]) used.add(x.name);
    const n = t.shape[0]!;
    const [out, inn] = [B.shape[0]!, A.shape[1]!];
    if (
      t.shape.length !== 2 ||
      A.shape.length !== 2 ||
      B.shape.length !== 2 ||
      A.shape[0] !== B.shape[1] ||
      t.shape[1] !== inn ||
      n < 1 ||
      A.shape[0]! % n !== 0
    )
      throw new InvalidInputError(
        `${ctx.label}: MeteoRA module "${base}": gate [${t.shape}], lora_A [${A.shape}], lora_B [${B.shape}] are not [N, in], [N·r, in], [out, N·r]`,
      );
    const rr = A.shape[0]! / n;
    if (rr !== r) throw new InvalidInputError(`${ctx.label}: MeteoRA module "${base}" packs ${n} experts of rank ${rr}; the config says r ${r}`);
    const s = scaleFor(alpha, rr, cfg?.["use_rslora"] === true);
    const path = stripPeftPrefix(base);
    for (let i = 0; i < n; i++) {
      const name = `${path}.experts.${i}`;
      const keep = Array.from({ length: rr }, (_, k) => i * rr + k);
      specs.push(
        linearModule(
          name,
          out,
          inn,
          rr,
          {
            type: "meteora",
            detail: `MeteoRA expert ${i} of ${n}`,
            stored: [A, B, t],
            dtype: A.dtype,
            info: { module: path, expert: i, experts: n, lora_alpha: alpha, scale: s },
          },
          async () => {
            const [a, b] = await Promise.all([readF64(ctx.file, A), readF64(ctx.file, B)]);
            return foldDiagonal(b, new Array<number>(n * rr).fill(s), a, out, n * rr, inn, keep);
          },
        ),
      );
    }
  }
  for (const t of ctx.file.header.tensors) if (!used.has(t.name)) other++;
  const experts = specs.length ? Number(specs[0]!.family.info!["experts"]) : 0;
  ctx.notes.push(
    `MeteoRA: ${experts} LoRA experts per module behind a top-k gate chosen per token; each expert is listed as <module>.experts.<i> (ΔW_i = s·B_i·A_i); \`convert --expert I\` writes one as a standard LoRA`,
  );
  if (other) ctx.notes.push(`${other} other tensor(s) (the base model saved with the experts) left out`);
  const parts = buildDerivedAdapterParts(ctx.file, specs, [], []);
  const base = loraBaseConfig(cfg);
  return { format: "peft", ...parts, config: base, configSource: `${ctx.configSource} (MeteoRA experts' lora_alpha, r)` };
}

export const meteoraDetector: Detector = { format: "peft", claims: (names) => hasMeteoraKeys(names), parse };

/** Exit 3 for a write command other than convert on a MeteoRA adapter: its experts share module paths. */
export function refuseExperts(a: { source: string; modules: { family?: { type: string; info?: Record<string, unknown> } }[] }, what: string): void {
  const e = a.modules.map(meteoraExpert).find((x) => x);
  if (!e) return;
  throw new InvalidInputError(
    `${a.source}: MeteoRA checkpoint (${e.experts} experts per module behind a per-token gate); ${what} works on one LoRA at a time`,
    {
      hint: "write the experts as standard LoRAs first: lora convert --to peft --expert I (or --expert all -o DIR)",
    },
  );
}
