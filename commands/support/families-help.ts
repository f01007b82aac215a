// The adapter families beyond B·A in one help paragraph (docs/formats.md "Adapter families"),
// appended to the --help of the commands that read adapters.
export const FAMILY_HELP = `
Adapter families read besides plain LoRA (docs/formats.md "Adapter families"):
  AdaLoRA (PEFT, peft_type ADALORA)  live rank = non-zero lora_E; pruned triplets dropped
  IncreLoRA (lora_E.<j> chunks)      lora_alpha from the trainer's config.json
  LoRA-XS / LoRA-SB (_lora_latent_mapping), SLoRA/NLoRA (lora_N)   ΔW = s·B·R·A
  MeteoRA (moe_gate)                 one module per expert: <module>.experts.<i>; convert --expert I|all
  MiSS / Bone (miss_block, bone_block)  ΔW needs the base weights: convert --base MODEL
inspect shows every family (live ranks, spectra); convert writes an exact standard LoRA; truncate,
merge, diff and lint work on the exact factors. MeteoRA: truncate and merge after convert --expert.
MiSS/Bone without --base: inspect lists the blocks, write commands exit 3.`;
