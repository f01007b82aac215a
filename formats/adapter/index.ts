export * from "./types.js";
export { loadAdapter, openAdapterSource, readAdapterConfig, type AdapterSource } from "./load.js";
export {
  checkableWhileCopied,
  checkFactorsFinite,
  finiteWhileCopied,
  nonFiniteFactor,
  rawReadable,
  readFactors,
  refuseOverflowingF64,
  scaledNorm,
  type FactorMatrix,
  type ModuleFactors,
} from "./factors.js";
export { registerDetector } from "./detect.js";
export type { Detector, DetectContext, Detected } from "./detector.js";
export * from "./names.js";
export * from "./peft-config.js";
import "./parse-sora.js"; // registers the SoRA checkpoint detector (lora prune --method sora)
export { meteoraExpert, refuseExperts } from "./families/index.js"; // registers the family detectors (docs/formats.md "Adapter families")
export { PEFT_ROLES } from "./parse-peft.js";
export { KOHYA_ROLES } from "./kohya-keys.js";
export { buildModule, type ModuleParts } from "./module.js";
export { buildDerivedAdapterParts, refuseBaseDependent, type DerivedModuleSpec, type ExactFactors } from "./derived.js";
export { parseKohyaMetadata, summariseField, type KohyaMetadata } from "./kohya-metadata.js";
