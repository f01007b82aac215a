// The adapter families beyond B·A (docs/formats.md "Adapter families"), each read by its own file
// into exact factors (derived.ts) and registered in front of the generic detectors: their keys would
// otherwise be read as plain PEFT (the cores and gates as passthrough) or refused.
import { registerDetector } from "../detect.js";
import { adaloraDetector } from "./adalora.js";
import { increloraDetector } from "./increlora.js";
import { meteoraDetector } from "./meteora.js";
import { missDetector } from "./miss.js";
import { threeMatrixDetector } from "./three-matrix.js";

export { meteoraExpert, refuseExperts } from "./meteora.js";

let registered = false;
export function registerFamilyDetectors(): void {
  if (registered) return;
  registered = true;
  for (const d of [adaloraDetector, increloraDetector, threeMatrixDetector, missDetector, meteoraDetector]) registerDetector(d);
}

registerFamilyDetectors();
