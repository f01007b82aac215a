// Three-matrix adapters ΔW = s·B·R·A with a small trained r×r core (docs/formats.md "Adapter
// families"): LoRA-XS and LoRA-SB (MohammadrezaBanaei/LoRA-XS, RaghavSinghal10/lora-sb
// utils/latent_utils.py get_delta_weight: B @ latent @ A · scaling; the PEFT save glues the core's
// key to the module: `<m>_lora_latent_mapping.weight`; PEFT ≥ 0.14 keeps `<m>.default_lora_latent_mapping.weight`) and SLoRA/NLoRA/IntTune (TracyGuo2001/NLoRA
// peft/src/peft/tuners/lora/layer.py get_delta_weight: B @ lora_N @ A · scaling; `<m>.lora_N.weight`).
// A and B are the stock PEFT keys, the scale is PEFT's (lora_alpha/r, or /√r with use_rslora).
// The exact factors split R's SVD √Σ into both halves: B' = B·U·√(sΣ), A' = √(sΣ)·Vᵀ·A.
import { InvalidInputError } from "../../../common/errors.js";
import type { TensorInfo } from "../../safetensors/index.js";
import { buildDerivedAdapterParts, type DerivedModuleSpec } from "../derived.js";
import type { DetectContext, Detected, Detector } from "../detector.js";
import { groupPeftKeys } from "../parse-peft.js";
import { peftModuleScale } from "../peft-config.js";
import { foldCore, loraBaseConfig, readF64, stripPeftPrefix, linearModule } from "./shared.js";

const XS = "_lora_latent_mapping.weight";
const N = ".lora_N.weight";

export function hasThreeMatrixKeys(names: string[]): boolean {
  return names.some((n) => n.endsWith(XS) || n.endsWith(N));
}

async function parse(ctx: DetectContext): Promise<Detected> {
  const cores = new Map<string, TensorInfo>();
  const rest0: TensorInfo[] = [];
  let type = "";
  for (const t of ctx.file.header.tensors) {
    const suffix = t.name.endsWith(XS) ? XS : t.name.endsWith(N) ? N : null;
    if (!suffix) {
      rest0.push(t);
      continue;
    }
    type ||= suffix === XS ? "lora-xs" : "nlora";
    cores.set(t.name.slice(0, -suffix.length), t);
  }
  const cfg = ctx.config;
  if (cfg && cfg["peft_type"] !== undefined && cfg["peft_type"] !== "LORA")
    throw new InvalidInputError(
      `${ctx.label}: ${type === "nlora" ? "lora_N" : "lora_latent_mapping"} cores with peft_type ${JSON.stringify(cfg["peft_type"])}; these adapters are PEFT LoRA configs`,
    );
  if (!cfg) ctx.notes.push("no adapter_config found: alpha = rank assumed for every module (scale 1)");
  const { groups, rest } = groupPeftKeys(rest0, ctx.label);
  const specs: DerivedModuleSpec[] = [];
  for (const [key, core] of cores) {
    // PEFT 0.10 (LoRA-XS's pin) drops ".default" and glues `<m>_lora_latent_mapping`; newer PEFT keeps
    // `<m>.default_lora_latent_mapping`: the module is then the key's parent.
    const base = groups.has(key) || !key.includes(".") ? key : key.slice(0, key.lastIndexOf("."));
    const g = groups.get(base);
    if (!g?.A || !g.B)
      throw new InvalidInputError(`${ctx.label}: core ${core.name} has no lora_A/lora_B beside it (expected ${base}.lora_A.weight and ${base}.lora_B.weight)`);
    groups.delete(base);
    const A = g.A,
      B = g.B;
    const r = A.shape[0]!;
    if (A.shape.length !== 2 || B.shape.length !== 2 || B.shape[1] !== r || core.shape.length !== 2 || core.shape[0] !== r || core.shape[1] !== r)
      throw new InvalidInputError(`${ctx.label}: module "${base}": shapes A [${A.shape}], R [${core.shape}], B [${B.shape}] are not [r, in], [r, r], [out, r]`);
    const path = stripPeftPrefix(base);
    const sc = cfg ? peftModuleScale(cfg, path, ctx.label) : { rank: r, scale: 1, alpha: r, rslora: false };
    if (sc.rank !== r) throw new InvalidInputError(`${ctx.label}: config says rank ${sc.rank} for module "${path}" but its tensors have rank ${r}`);
    const [out, inn] = [B.shape[0]!, A.shape[1]!];
    const extras = Object.values(g.extras);
    if (extras.length)
      throw new InvalidInputError(`${ctx.label}: module "${path}" carries ${extras.map((t) => t.name).join(", ")} beside its core; not supported`);
    specs.push(
      linearModule(
        path,
        out,
        inn,
        r,
        {
          type,
          detail: `${type === "nlora" ? "NLoRA/SLoRA B·N·A" : "LoRA-XS/SB B·R·A"} r ${r}`,
          stored: [A, core, B],
          dtype: core.dtype,
          info: { core: `${r}×${r}`, lora_alpha: sc.alpha, scale: sc.scale },
        },
        async () => {
          const [a, R, b] = await Promise.all([readF64(ctx.file, A), readF64(ctx.file, core), readF64(ctx.file, B)]);
          return foldCore(b, R, a, out, r, inn, sc.scale);
        },
      ),
    );
  }
  // Plain B·A modules beside the cores are not expected in these files; keep them as passthrough-free LoRA would need the generic reader.
  if (groups.size)
    throw new InvalidInputError(
      `${ctx.label}: ${groups.size} module(s) have lora_A/lora_B without the ${type === "nlora" ? "lora_N" : "latent"} core (e.g. ${[...groups.keys()][0]})`,
    );
  ctx.notes.push(
    `${type === "nlora" ? "SLoRA/NLoRA/IntTune" : "LoRA-XS/LoRA-SB"}: ΔW = s·B·R·A with an r×r core per module; read as exact factors (R's SVD split √Σ into both halves)`,
  );
  const parts = buildDerivedAdapterParts(ctx.file, specs, [], rest);
  const base = loraBaseConfig(cfg);
  return { format: "peft", ...parts, config: base, configSource: cfg ? ctx.configSource : "none (alpha = rank)" };
}

export const threeMatrixDetector: Detector = { format: "peft", claims: (names) => hasThreeMatrixKeys(names), parse };
