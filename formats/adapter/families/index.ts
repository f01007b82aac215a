// The adapter families beyond B·A (docs/formats.md "Adapter families"), each read by its own file
// into exact factors (derived.ts) and registered in front of the generic detectors: their keys would
// otherwise be read as plain PEFT (the cores and gates as passthrough) or refused. Detection uses
// claims.ts alone; a family's reader is imported only when a file is claimed by it (start-up).
import { registerDetector } from "../detect.js";
import type { DetectContext, Detected, Detector } from "../detector.js";
import { claimsAdalora, hasIncreloraKeys, hasMeteoraKeys, hasMissKeys, hasThreeMatrixKeys } from "./claims.js";

export { meteoraExpert, refuseExperts } from "./experts.js";

/** A detector whose parse loads its family's reader on first use. */
function lazy(claims: Detector["claims"], load: () => Promise<Detector>): Detector {
  return { format: "peft", claims, parse: async (ctx: DetectContext): Promise<Detected> => (await load()).parse(ctx) };
}

let registered = false;
export function registerFamilyDetectors(): void {
  if (registered) return;
  registered = true;
  for (const d of [
    lazy(claimsAdalora, async () => (await import("./adalora.js")).adaloraDetector),
    lazy(hasIncreloraKeys, async () => (await import("./increlora.js")).increloraDetector),
    lazy(hasThreeMatrixKeys, async () => (await import("./three-matrix.js")).threeMatrixDetector),
    lazy(hasMissKeys, async () => (await import("./miss.js")).missDetector),
    lazy(hasMeteoraKeys, async () => (await import("./meteora.js")).meteoraDetector),
  ])
    registerDetector(d);
}

registerFamilyDetectors();
