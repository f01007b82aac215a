export * from "./types.js";
export { loadAdapter, openAdapterSource, readAdapterConfig, type AdapterSource } from "./load.js";
export { nonFiniteFactor, rawReadable, readFactors, readFactorsWithGrams, readRawFactors, type ModuleFactors, type ModuleFactorsGrams, type RawFactors } from "./factors.js";
export { registerDetector, type Detector, type DetectContext, type Detected } from "./detect.js";
export * from "./names.js";
export * from "./peft-config.js";
import "./parse-sora.js"; // registers the SoRA checkpoint detector (lora prune --method sora)
export { PEFT_ROLES } from "./parse-peft.js";
export { KOHYA_ROLES } from "./parse-kohya.js";
export { buildModule, type ModuleParts } from "./module.js";
