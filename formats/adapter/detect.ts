// Format detection by keys, never by file name (docs/formats.md). Each detector looks at the tensor names
// and either claims the file or passes. Order matters: the more specific layouts come first.
import { diffusersDetector } from "./parse-diffusers.js";
import { hasKohyaKeys } from "./kohya-keys.js";
import { hasPeftKeys, parsePeft } from "./parse-peft.js";
import { hasLycorisKeys } from "./lycoris/keys.js";
import type { Detected, DetectContext, Detector } from "./detector.js";
import type { PeftConfig } from "./peft-config.js";
import { inWeightLayout, readWeightLayout } from "./fan-in-fan-out.js";

const kohya: Detector = {
  format: "kohya",
  claims: (names) => hasKohyaKeys(names),
  async parse(ctx) {
    // the reader and its SD/SDXL/Flux name maps load only for a kohya file
    const { parseKohya } = await import("./parse-kohya.js");
    const r = await parseKohya(ctx.file, ctx.metadata, ctx.label, ctx.notes);
    const cfgRaw = ctx.metadata["lora_peft_config"];
    let config: PeftConfig | null = null;
    if (cfgRaw) {
      try {
        config = JSON.parse(cfgRaw) as PeftConfig;
      } catch {
        /* ignored: informational only */
      }
    }
    if (inWeightLayout(ctx.metadata)) {
      // Factors in a GPT-2 Conv1D weight's layout (our kohya writer's mark, fan-in-fan-out.ts):
      // read transposed into PEFT's out×in, and the adapter is fan_in_fan_out whatever else is lost.
      ctx.notes.push("factors stored in the Conv1D weight's layout (lora_weight_layout: fan_in_fan_out): read transposed, ΔW out×in as in PEFT");
      return {
        format: "kohya",
        ...readWeightLayout(ctx.file, r.modules, r.passthrough),
        config: { ...config, fan_in_fan_out: true },
        configSource: "kohya .alpha tensors",
      };
    }
    return { format: "kohya", ...r, config, configSource: "kohya .alpha tensors" };
  },
};

const peft: Detector = {
  format: "peft",
  claims: (names) => hasPeftKeys(names),
  async parse(ctx) {
    const r = parsePeft(ctx.file.header.tensors, ctx.config, ctx.label, ctx.notes);
    return { format: "peft", ...r, config: ctx.config, configSource: ctx.config ? ctx.configSource : "none (alpha = rank)" };
  },
};

/** LyCORIS (parse-lycoris.ts): claimed by its keys; the reader (LoHa, LoKr, … kernels) is loaded only for such a file. */
const lycorisDetector: Detector = {
  format: "kohya",
  claims: (names) => hasLycorisKeys(names),
  parse: async (ctx: DetectContext): Promise<Detected> => (await import("./parse-lycoris.js")).lycorisDetector.parse(ctx),
};

/**
 * Detectors tried in order; other formats (SoRA) register themselves at the front. diffusers comes
 * before kohya and PEFT: its PEFT-style keys (`unet.….lora_A.weight`, no adapter_config) would
 * otherwise be read as PEFT without a config. LyCORIS (LoHa, LoKr, …: parse-lycoris.ts) comes before
 * kohya, whose naming it shares: it claims only files with a key kohya LoRA never has.
 */
export const detectors: Detector[] = [diffusersDetector, lycorisDetector, kohya, peft];

export function registerDetector(d: Detector): void {
  detectors.unshift(d);
}
