// MeteoRA experts as the write commands see them (meteora.ts reads them): which module is which
// expert, and the refusal of a write command other than convert.
import { InvalidInputError } from "../../../common/errors.js";

/** The module path and expert index of a MeteoRA expert module (`<m>.experts.<i>`), or null. */
export function meteoraExpert(m: { family?: { type: string; info?: Record<string, unknown> } }): { module: string; expert: number; experts: number } | null {
  if (m.family?.type !== "meteora") return null;
  const i = m.family.info!;
  return { module: String(i["module"]), expert: Number(i["expert"]), experts: Number(i["experts"]) };
}

/** Exit 3 for a write command other than convert on a MeteoRA adapter: its experts share module paths. */
export function refuseExperts(a: { source: string; modules: { family?: { type: string; info?: Record<string, unknown> } }[] }, what: string): void {
  const e = a.modules.map(meteoraExpert).find((x) => x);
  if (!e) return;
  throw new InvalidInputError(
    `${a.source}: MeteoRA checkpoint (${e.experts} experts per module behind a per-token gate); ${what} works on one LoRA at a time`,
    {
      hint: "write the experts as standard LoRAs first: lora convert --to peft --expert I (or --expert all -o DIR)",
    },
  );
}
