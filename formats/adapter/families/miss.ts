// MiSS and Bone as PEFT saves them (docs/formats.md "Adapter families"; huggingface/peft
// tuners/miss/layer.py MissLinear.get_delta_weight_miss / get_delta_weight / forward; Bone is the
// same code under `bone_`): one key `<m>.miss_block` (`.bone_block`) per Linear, config
// peft_type MISS|BONE with r, init_weights (true/false, "mini", "bat") and mini_r.
//   default: block M [r, out]; ΔW[:, k·r + j] = M[j, :] — Mᵀ tiled over every r-column input block
//            (a last partial block takes the first in mod r columns). Exact factors B' = Mᵀ, A' = T with
//            T[j, k·r + j] = 1.
//   mini:    block [r, mini_r], tiled to [r, out] along the columns (M[j, o mod mini_r]), then as default.
//   bat:     block [out/r, r, r]; W cut into r×r blocks W_ij: ΔW_ij = W_ij·M_i + M_i (needs W itself).
// Every variant needs the base weight: its input width (not in the file) for default/mini, its values
// for bat. With --base the modules are read as exact factors; without, they are listed as needing it.
import { InvalidInputError } from "../../../common/errors.js";
import type { TensorInfo } from "../../safetensors/index.js";
import { buildDerivedAdapterParts, type DerivedModuleSpec } from "../derived.js";
import type { DetectContext, Detected, Detector } from "../detector.js";
import type { BaseDependentModule } from "../types.js";
import { readF64, stripPeftPrefix, linearModule } from "./shared.js";

const SUFFIXES = [".miss_block", ".bone_block"];

export function hasMissKeys(names: string[]): boolean {
  return names.some((n) => SUFFIXES.some((s) => n.endsWith(s)));
}

type Variant = "default" | "mini" | "bat";

function variantOf(cfg: Record<string, unknown> | null): Variant {
  const iw = cfg?.["init_weights"];
  return iw === "bat" ? "bat" : iw === "mini" ? "mini" : "default";
}

/** The base weight of `path` in the --base model: `<path>.weight`, or with leading components dropped. */
function baseWeight(ctx: DetectContext, path: string): { file: { readFloat64(t: TensorInfo): Promise<Float64Array> }; info: TensorInfo } | null {
  const parts = path.split(".");
  for (let i = 0; i < parts.length; i++) {
    const hit = ctx.base?.tensors.get(`${parts.slice(i).join(".")}.weight`);
    if (hit) return hit;
  }
  return null;
}

async function parse(ctx: DetectContext): Promise<Detected> {
  const cfg = ctx.config;
  const pt = cfg?.["peft_type"];
  if (pt !== "MISS" && pt !== "BONE")
    throw new InvalidInputError(
      `${ctx.label}: MiSS/Bone blocks but no MiSS/Bone adapter_config (peft_type ${JSON.stringify(pt ?? null)}); init_weights picks the formula`,
      {
        hint: "keep the adapter_config.json that PEFT saved beside adapter_model.safetensors",
      },
    );
  const variant = variantOf(cfg);
  const miniR = Number(cfg?.["mini_r"] ?? 1);
  const rest: TensorInfo[] = [];
  const specs: DerivedModuleSpec[] = [];
  const deps: BaseDependentModule[] = [];
  for (const t of ctx.file.header.tensors) {
    const suf = SUFFIXES.find((s) => t.name.endsWith(s));
    if (!suf) {
      rest.push(t);
      continue;
    }
    const path = stripPeftPrefix(t.name.slice(0, -suf.length));
    const where = `${ctx.label}: ${pt} module "${path}"`;
    const bad = (want: string) => new InvalidInputError(`${where}: block [${t.shape}] is not ${want} (init_weights ${JSON.stringify(cfg?.["init_weights"])})`);
    if (variant === "bat" ? t.shape.length !== 3 || t.shape[1] !== t.shape[2] : t.shape.length !== 2)
      throw bad(variant === "bat" ? "[out/r, r, r]" : "[r, out]");
    if (variant === "mini" && t.shape[1] !== miniR) throw bad(`[r, mini_r = ${miniR}]`);
    const r = variant === "bat" ? t.shape[1]! : t.shape[0]!;
    const w = baseWeight(ctx, path);
    if (!w) {
      deps.push({
        name: path,
        path,
        type: pt.toLowerCase(),
        tensors: [t],
        reason:
          variant === "bat"
            ? `${pt} "bat": ΔW_ij = W_ij·M_i + M_i multiplies the base weight's r×r blocks`
            : `${pt} block [${t.shape}] is tiled across the base weight's input width, which the file does not record`,
      });
      continue;
    }
    const [out, inn] = [w.info.shape[0]!, w.info.shape[1]!];
    if (w.info.shape.length !== 2) throw new InvalidInputError(`${where}: base weight ${w.info.name} is not a Linear weight ([${w.info.shape}])`);
    const outOk = variant === "bat" ? out === t.shape[0]! * r && inn % r === 0 : variant === "mini" ? out % miniR === 0 : t.shape[1] === out;
    if (!outOk) throw new InvalidInputError(`${where}: block [${t.shape}] does not fit the base weight ${w.info.name} [${w.info.shape}]`);
    const rank = variant === "bat" ? Math.min(out, inn) : Math.min(r, inn);
    specs.push(
      linearModule(
        path,
        out,
        inn,
        rank,
        { type: pt.toLowerCase(), detail: `${pt} ${variant} r ${r}`, stored: [t], dtype: t.dtype, info: { variant, block: r, base_weight: w.info.name } },
        async () => {
          const M = await readF64(ctx.file, t);
          if (variant === "bat") return batFactors(M, await w.file.readFloat64(w.info), out, inn, r);
          // B' = M_fullᵀ (out × r), A' = the tiling T (r × in); only the first `rank` rows when in < r.
          const cols = variant === "mini" ? miniR : out;
          const B = new Float64Array(out * rank),
            A = new Float64Array(rank * inn);
          for (let o = 0; o < out; o++) for (let j = 0; j < rank; j++) B[o * rank + j] = M[j * cols + (o % cols)]!;
          for (let c = 0; c < inn; c++) A[(c % r) * inn + c] = 1;
          return { B, A };
        },
      ),
    );
  }
  if (deps.length) ctx.notes.push(`${pt} (${variant}): ΔW depends on the base weights; pass --base <model> to read it (inspect lists the blocks without it)`);
  const parts = buildDerivedAdapterParts(ctx.file, specs, [], rest);
  return { format: "peft", ...parts, config: null, configSource: `${ctx.configSource} (${pt} ${variant})`, ...(deps.length ? { baseDependent: deps } : {}) };
}

/** bat: ΔW (out×in) block by block, written as exact factors I·ΔW (in ≥ out) or ΔW·I (in < out). */
function batFactors(M: Float64Array, W: Float64Array, out: number, inn: number, r: number): { B: Float64Array; A: Float64Array } {
  const D = new Float64Array(out * inn);
  for (let i = 0; i < out / r; i++)
    for (let j = 0; j < inn / r; j++)
      for (let a = 0; a < r; a++)
        for (let b = 0; b < r; b++) {
          let v = M[i * r * r + a * r + b]!;
          for (let k = 0; k < r; k++) v += W[(i * r + a) * inn + j * r + k]! * M[i * r * r + k * r + b]!;
          D[(i * r + a) * inn + j * r + b] = v;
        }
  const k = Math.min(out, inn);
  const I = new Float64Array(k * k);
  for (let x = 0; x < k; x++) I[x * k + x] = 1;
  return out <= inn ? { B: I, A: D } : { B: D, A: I };
}

export const missDetector: Detector = { format: "peft", claims: (names) => hasMissKeys(names), parse };
