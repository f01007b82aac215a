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

function rule<I extends string, S extends Severity, L extends Loader>(id: I, severity: S, loader: L, what: string) {
  return { id, severity, loader, what };
}

const DIFFUSERS_PREFIX_WHAT = "diffusers-layout keys carry their component prefix (unet., text_encoder.): since diffusers 0.33 keys without it load nothing";

export const RULES = {
  safetensors: rule("safetensors", "error", "all", "the file is a valid safetensors file (every check of the reference reader)"),
  notLora: rule("not-lora", "error", "all", "the file holds LoRA factor pairs (lora_A/lora_B, lora_down/lora_up)"),
  unreadable: rule("unreadable", "error", "all", "lora's own readers accept the file (what they refuse, loaders refuse or mis-read too)"),
  unpaired: rule("unpaired-factor", "error", "all", "every down/A factor has its up/B partner and vice versa"),
  rankMismatch: rule("rank-mismatch", "error", "all", "A's rows equal B's columns (the rank) and the shapes form a LoRA pair"),
  factorDtype: rule("factor-dtype", "error", "all", "factors are floating point (F64, F32, F16, BF16)"),
  nonFinite: rule("non-finite", "error", "all", "no NaN or ±Inf in any factor"),
  zeroModule: rule("zero-module", "warning", "all", "no module whose ΔW is exactly zero (an untrained or pruned-away module)"),
  mixedDtypes: rule("mixed-dtypes", "warning", "all", "all factors share one dtype"),
  peftNoConfig: rule("peft-no-config", "error", "peft", "PEFT keys come with an adapter_config.json (PeftModel.from_pretrained needs it)"),
  peftNoTargets: rule("peft-no-target-modules", "error", "peft", "adapter_config.json names target_modules (PEFT refuses a config without them)"),
  peftRank: rule("peft-config-rank", "error", "peft", "r / rank_pattern give each module the rank its tensors have (else a size-mismatch error at load)"),
  peftTarget: rule(
    "peft-target-not-matched",
    "error",
    "peft",
    "every module is matched by target_modules, and within layers_to_transform where set (else PEFT creates no layer and drops its weights)",
  ),
  peftPattern: rule("peft-pattern-unused", "warning", "peft", "every rank_pattern / alpha_pattern key matches some module"),
  peftBias: rule("peft-lora-bias", "error", "peft", "lora_B.bias tensors only with lora_bias: true in the config (else PEFT drops them)"),
  peftDora: rule("peft-dora-config", "error", "peft", "lora_magnitude_vector tensors exactly when use_dora is true, one per module"),
  doraShape: rule("dora-magnitude-shape", "error", "peft", "a DoRA magnitude vector has one entry per output feature"),
  diffusersPrefix: rule("diffusers-no-prefix", "error", "diffusers", DIFFUSERS_PREFIX_WHAT),
  kohyaCollision: rule("kohya-name-collision", "error", "kohya", "no two module paths become the same kohya name when '.' turns into '_'"),
  kohyaDim: rule("kohya-metadata-dim", "warning", "kohya", "ss_network_dim agrees with the factor ranks"),
  kohyaAlpha: rule("kohya-metadata-alpha", "warning", "kohya", "ss_network_alpha agrees with the .alpha tensors"),
  kohyaNoAlpha: rule("kohya-missing-alpha", "warning", "kohya", "every kohya module has its .alpha (without it loaders assume alpha = rank)"),
} as const satisfies Record<string, Rule>;

export type RuleKey = keyof typeof RULES;
