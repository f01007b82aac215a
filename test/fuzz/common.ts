// What the fuzz tests share: the verdict on one case (it completes, or it ends in an
// InvalidInputError, exit 3, with a non-empty first line; any other exception is a finding and
// propagates), and the random tensors of a structured case.
import fc from "fast-check";
import { InvalidInputError } from "../../common/errors.js";
import type { Adapter, LoraModule } from "../../formats/adapter/index.js";
import { dtypeAlignment, type TensorSpec } from "../../formats/safetensors/index.js";
import type { Rng } from "../../linalg/random.js";

/** "ok" when `work` completes, "invalid" when it ends in exit 3 with a message; anything else is rethrown. */
export async function verdict(work: () => Promise<void>): Promise<"ok" | "invalid"> {
  try {
    await work();
    return "ok";
  } catch (e) {
    if (e instanceof InvalidInputError && e.exitCode === 3 && e.message.split("\n")[0]!.length > 0) return "invalid";
    throw e;
  }
}

/** Every module of a loaded adapter through `each`, then the adapter's file closed (also on an error). */
export async function eachModule(a: Adapter, each: (m: LoraModule) => Promise<unknown>): Promise<void> {
  try {
    for (const m of a.modules) await each(m);
  } finally {
    await a.file.close();
  }
}

/** The case fields randomTensors reads: which of up to 7 roles to keep, and a shape for each (rank ≤ maxRank, dims ≤ 5). */
export const tensorFields = (maxRank: number) => ({
  keep: fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }),
  shapes: fc.array(fc.array(fc.nat(5), { minLength: 0, maxLength: maxRank }), { minLength: 7, maxLength: 7 }),
});

/**
 * One tensor a role, named `name(role)`, with the case's shape for it and random bytes of its
 * dtype. A role is dropped only where keep[i] is false and keep[6] is true, so that complete
 * modules with wrong shapes are common too.
 */
export function randomTensors(
  roles: readonly string[],
  name: (role: string) => string,
  c: { keep: boolean[]; shapes: number[][]; dtype: string },
  rng: Rng,
): TensorSpec[] {
  const specs: TensorSpec[] = [];
  const dtype = c.dtype as TensorSpec["dtype"];
  roles.forEach((role, i) => {
    if (!c.keep[i] && c.keep[6]) return;
    const shp = c.shapes[i]!;
    const count = shp.reduce((x, y) => x * y, 1);
    const data = new Uint8Array(count * dtypeAlignment(dtype));
    for (let k = 0; k < data.length; k++) data[k] = Math.floor(rng.uniform() * 256);
    specs.push({ name: name(role), dtype, shape: shp, data });
  });
  return specs;
}
