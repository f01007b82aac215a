// The rules `lora lint` checks: what PEFT, kohya and diffusers loaders enforce, and the traps they
// fall into silently (docs/cli.md "lint"). One entry per rule: its id, severity and the loader
// that fails (or silently mis-loads) on a file that breaks it.

export type Severity = "error" | "warning";
export type Loader = "peft" | "kohya" | "diffusers" | "all";

export interface Rule {
  id: string;
  severity: Severity;
  loader: Loader;
  /** One line: what the rule checks. */
  what: string;
}

export const RULES = {
  safetensors: { id: "safetensors", severity: "error", loader: "all", what: "the file is a valid safetensors file (every check of the reference reader)" },
  notLora: { id: "not-lora", severity: "error", loader: "all", what: "the file holds LoRA factor pairs (lora_A/lora_B, lora_down/lora_up)" },
  unreadable: {
    id: "unreadable",
    severity: "error",
    loader: "all",
    what: "lora's own readers accept the file (what they refuse, loaders refuse or mis-read too)",
  },
  unpaired: { id: "unpaired-factor", severity: "error", loader: "all", what: "every down/A factor has its up/B partner and vice versa" },
  rankMismatch: { id: "rank-mismatch", severity: "error", loader: "all", what: "A's rows equal B's columns (the rank) and the shapes form a LoRA pair" },
  factorDtype: { id: "factor-dtype", severity: "error", loader: "all", what: "factors are floating point (F64, F32, F16, BF16)" },
  nonFinite: { id: "non-finite", severity: "error", loader: "all", what: "no NaN or ±Inf in any factor" },
  zeroModule: { id: "zero-module", severity: "warning", loader: "all", what: "no module whose ΔW is exactly zero (an untrained or pruned-away module)" },
  mixedDtypes: { id: "mixed-dtypes", severity: "warning", loader: "all", what: "all factors share one dtype" },
  peftNoConfig: {
    id: "peft-no-config",
    severity: "error",
    loader: "peft",
    what: "PEFT keys come with an adapter_config.json (PeftModel.from_pretrained needs it)",
  },
  peftNoTargets: {
    id: "peft-no-target-modules",
    severity: "error",
    loader: "peft",
    what: "adapter_config.json names target_modules (PEFT refuses a config without them)",
  },
  peftRank: {
    id: "peft-config-rank",
    severity: "error",
    loader: "peft",
    what: "r / rank_pattern give each module the rank its tensors have (else a size-mismatch error at load)",
  },
  peftTarget: {
    id: "peft-target-not-matched",
    severity: "error",
    loader: "peft",
    what: "every module is matched by target_modules (else PEFT creates no layer and drops its weights)",
  },
  peftPattern: { id: "peft-pattern-unused", severity: "warning", loader: "peft", what: "every rank_pattern / alpha_pattern key matches some module" },
  peftBias: {
    id: "peft-lora-bias",
    severity: "error",
    loader: "peft",
    what: "lora_B.bias tensors only with lora_bias: true in the config (else PEFT drops them)",
  },
  peftDora: { id: "peft-dora-config", severity: "error", loader: "peft", what: "lora_magnitude_vector tensors exactly when use_dora is true, one per module" },
  doraShape: { id: "dora-magnitude-shape", severity: "error", loader: "peft", what: "a DoRA magnitude vector has one entry per output feature" },
  diffusersPrefix: {
    id: "diffusers-no-prefix",
    severity: "error",
    loader: "diffusers",
    what: "diffusers-layout keys carry their component prefix (unet., text_encoder.): since diffusers 0.33 keys without it load nothing",
  },
  kohyaCollision: {
    id: "kohya-name-collision",
    severity: "error",
    loader: "kohya",
    what: "no two module paths become the same kohya name when '.' turns into '_'",
  },
  kohyaDim: { id: "kohya-metadata-dim", severity: "warning", loader: "kohya", what: "ss_network_dim agrees with the factor ranks" },
  kohyaAlpha: { id: "kohya-metadata-alpha", severity: "warning", loader: "kohya", what: "ss_network_alpha agrees with the .alpha tensors" },
  kohyaNoAlpha: {
    id: "kohya-missing-alpha",
    severity: "warning",
    loader: "kohya",
    what: "every kohya module has its .alpha (without it loaders assume alpha = rank)",
  },
} as const satisfies Record<string, Rule>;

export type RuleKey = keyof typeof RULES;
