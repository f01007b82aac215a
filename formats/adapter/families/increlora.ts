// IncreLoRA checkpoints (docs/formats.md "Adapter families"; FeiyuZhang98/IncreLoRA loralib/increlora.py
// SVDLinear, loraW.forward): nn.ParameterList chunks `<m>.lora_A.<j>` [r_j, in], `<m>.lora_E.<j>`
// [r_j, 1], `<m>.lora_B.<j>` [out, r_j] (chunk 0 the initial rank, later ones the rank-1 chunks added
// while training) and `<m>.ranknum` [1]. ΔW = lora_alpha/(ranknum + 1e-5) · Σ_j B_j·diag(E_j)·A_j; the
// live rank is the count of non-zero E. The file is the whole model (Trainer.save_model): every
// other tensor is the base model's and is left out. lora_alpha comes from the config.json the
// trainer writes beside it (or an adapter_config.json).
import { InvalidInputError } from "../../../common/errors.js";
import type { TensorInfo } from "../../safetensors/index.js";
import { buildDerivedAdapterParts, type DerivedModuleSpec } from "../derived.js";
import type { DetectContext, Detected, Detector } from "../detector.js";
import { budgetByLayer, liveTriplets, readF64, tripletModule } from "./shared.js";
import { hasIncreloraKeys } from "./claims.js";

const CHUNK = /^(.*)\.lora_([AEB])\.(\d+)$/;

type Chunks = { A: Map<number, TensorInfo>; E: Map<number, TensorInfo>; B: Map<number, TensorInfo>; ranknum?: TensorInfo };

async function parse(ctx: DetectContext): Promise<Detected> {
  const cfg = ctx.config ?? ctx.modelConfig ?? null;
  const alphaRaw = cfg?.["lora_alpha"];
  if (typeof alphaRaw !== "number" || !Number.isFinite(alphaRaw))
    throw new InvalidInputError(`${ctx.label}: IncreLoRA checkpoint (lora_E.<j> chunks) but no lora_alpha: ΔW's scale is lora_alpha/ranknum`, {
      hint: "keep the config.json that IncreLoRA's trainer saved beside the checkpoint (it carries lora_alpha), or add an adapter_config.json with lora_alpha",
    });
  const mods = new Map<string, Chunks>();
  const get = (b: string): Chunks => {
    let c = mods.get(b);
    if (!c) mods.set(b, (c = { A: new Map(), E: new Map(), B: new Map() }));
    return c;
  };
  let other = 0;
  const names = new Set(ctx.file.header.tensors.map((t) => t.name));
  for (const t of ctx.file.header.tensors) {
    const m = CHUNK.exec(t.name);
    if (m) get(m[1]!)[m[2] as "A" | "E" | "B"].set(Number(m[3]), t);
    else if (t.name.endsWith(".ranknum") && names.has(`${t.name.slice(0, -".ranknum".length)}.lora_E.0`)) get(t.name.slice(0, -".ranknum".length)).ranknum = t;
    else other++;
  }
  const specs: DerivedModuleSpec[] = [];
  const live: { path: string; live: number }[] = [];
  for (const [path, c] of mods) {
    if (!c.ranknum) throw new InvalidInputError(`${ctx.label}: IncreLoRA module "${path}" has no ranknum tensor (its scale is lora_alpha/ranknum)`);
    const idx = [...c.E.keys()].sort((a, b) => a - b);
    const parts = idx.map((j) => {
      const A = c.A.get(j),
        E = c.E.get(j),
        B = c.B.get(j);
      if (!A || !B || !E) throw new InvalidInputError(`${ctx.label}: IncreLoRA module "${path}" chunk ${j} lacks lora_${!A ? "A" : !B ? "B" : "E"}.${j}`);
      const r = A.shape[0]!;
      if (A.shape.length !== 2 || B.shape.length !== 2 || B.shape[1] !== r || E.shape[0] !== r)
        throw new InvalidInputError(`${ctx.label}: IncreLoRA module "${path}" chunk ${j}: shapes A [${A.shape}], E [${E.shape}], B [${B.shape}] do not agree`);
      return { A, E, B, r };
    });
    if (parts.length === 0 || c.A.size !== parts.length || c.B.size !== parts.length)
      throw new InvalidInputError(`${ctx.label}: IncreLoRA module "${path}" has ${c.A.size} lora_A, ${c.E.size} lora_E and ${c.B.size} lora_B chunks`);
    const out = parts[0]!.B.shape[0]!,
      inn = parts[0]!.A.shape[1]!;
    if (parts.some((p) => p.B.shape[0] !== out || p.A.shape[1] !== inn))
      throw new InvalidInputError(`${ctx.label}: IncreLoRA module "${path}": chunks differ in shape`);
    const [ranknum] = await readF64(ctx.file, c.ranknum);
    const e = new Float64Array(parts.reduce((s, p) => s + p.r, 0));
    let at = 0;
    for (const p of parts) {
      e.set(await readF64(ctx.file, p.E), at);
      at += p.r;
    }
    const keep = liveTriplets(e);
    live.push({ path, live: keep.length });
    if (keep.length === 0) continue;
    // ranknum is float32 in the model: the sum ranknum + 1e-5 rounds to float32 there.
    const scale = alphaRaw / Math.fround(ranknum! + 1e-5);
    const R = e.length;
    const family = {
      type: "increlora",
      detail: `IncreLoRA ${keep.length} of ${R} live (ranknum ${ranknum})`,
      stored: parts.flatMap((p) => [p.A, p.E, p.B]).concat(c.ranknum),
      dtype: parts[0]!.A.dtype,
      info: { live_rank: keep.length, stored_rank: R, chunks: parts.length, ranknum: ranknum!, lora_alpha: alphaRaw },
    };
    specs.push(
      tripletModule({ path, out, inn, r: R, e, scale, keep }, family, async () => {
        const A = new Float64Array(R * inn),
          B = new Float64Array(out * R);
        let row = 0;
        for (const p of parts) {
          A.set(await readF64(ctx.file, p.A), row * inn);
          const b = await readF64(ctx.file, p.B);
          for (let i = 0; i < out; i++) for (let k = 0; k < p.r; k++) B[i * R + row + k] = b[i * p.r + k]!;
          row += p.r;
        }
        return { B, A };
      }),
    );
  }
  ctx.notes.push(
    `IncreLoRA: ${live.reduce((s, m) => s + m.live, 0)} live ranks over ${live.length} modules; scale = lora_alpha/(ranknum + 1e-5), lora_alpha ${alphaRaw}`,
    `IncreLoRA live rank per layer: ${budgetByLayer(live)}`,
  );
  if (other) ctx.notes.push(`${other} other tensor(s) (the base model the trainer saved with the adapter) left out`);
  const parts = buildDerivedAdapterParts(ctx.file, specs, [], []);
  return { format: "peft", ...parts, config: null, configSource: `lora_alpha ${alphaRaw} from ${ctx.config ? ctx.configSource : "config.json"}` };
}

export const increloraDetector: Detector = { format: "peft", claims: hasIncreloraKeys, parse };
