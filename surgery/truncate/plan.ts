// The first pass of lora truncate (plan, then write): the method (svd, or prefix
// for DyLoRA), and every module's output rank, from --rank alone or from the spectra (the very
// ones `lora inspect` prints: allocate.ts for --energy/--budget, kohya-rules.ts for --dynamic).
// A rank of 0 removes the module.
import type { Adapter } from "../../formats/adapter/index.js";
import type { LinalgBackend, ModuleGrams } from "../../linalg/types.js";
import { moduleSpectra } from "../spectra.js";
import { allocate } from "./allocate.js";
import { cleanDynamicRank, kohyaDynamicRank } from "./kohya-rules.js";
import type { TruncateOptions } from "./options.js";

export interface Plan {
  method: "svd" | "prefix";
  /** rank per module name (0 = removed) */
  ranks: Map<string, number>;
  /** σ per module, when the selection needed them (same computation as `lora inspect`). */
  spectra?: Map<string, Float64Array>;
  /** The native route's Grams from that same pass, per module. */
  grams?: Map<string, ModuleGrams>;
  notes: string[];
}

/** σ of every module exactly as `lora inspect` computes them (so --budget/--energy ranks agree). */
async function spectraOf(a: Adapter, be: LinalgBackend): Promise<{ spectra: Map<string, Float64Array>; grams: Map<string, ModuleGrams> }> {
  const spectra = new Map<string, Float64Array>(),
    grams = new Map<string, ModuleGrams>();
  // The Grams are kept for the fused route, which then skips its first pass (2r² floats a module).
  for (const [m, sp] of await moduleSpectra(a, be, { keepGrams: true })) {
    spectra.set(m.name, Float64Array.from(Array.from(sp.S).slice(0, m.rank)));
    if (sp.grams) grams.set(m.name, sp.grams);
  }
  return { spectra, grams };
}

export async function plan(o: TruncateOptions, a: Adapter, be: LinalgBackend): Promise<Plan> {
  const notes: string[] = [];
  if (o.ranks) {
    const ranks = new Map(a.modules.map((m) => [m.name, Math.min(o.ranks!.get(m.name) ?? 0, m.rank)]));
    return { method: "svd", ranks, ...(o.spectra ? { spectra: new Map(o.spectra) } : {}), notes };
  }
  let method = o.method;
  const wantsSpectrum = o.energy !== undefined || o.budget !== undefined || o.dynamic !== undefined || o.kohyaCompat;
  if (method === undefined) {
    if (o.unit !== undefined || o.alphaMode !== "keep") {
      method = "prefix";
    } else if (a.dylora && !wantsSpectrum && o.split === undefined) {
      method = "prefix";
      notes.push(
        `kohya DyLoRA file (ss_network_module networks.dylora, unit ${a.dylora.unit}): using --method prefix, the nested rank-R adapter it was trained to hold (--method svd gives the optimal rank-R ΔW instead)`,
      );
    } else {
      method = "svd";
      if (a.dylora)
        notes.push("kohya DyLoRA file, but these options (--energy/--budget/--dynamic/--split) need --method svd; prefix is what DyLoRA trained for --rank R");
    }
  }
  const ranks = new Map<string, number>();
  if (method === "prefix") {
    for (const m of a.modules) ranks.set(m.name, Math.min(o.rank ?? m.rank, m.rank));
    const unit = o.unit ?? a.dylora?.unit;
    if (o.rank !== undefined && a.dylora && unit && a.modules.some((m) => ranks.get(m.name)! < m.rank && ranks.get(m.name)! % unit !== 0)) {
      notes.push(`rank ${o.rank} is not a multiple of the DyLoRA unit ${unit}; DyLoRA trained only multiples of it`);
    }
    return { method, ranks, notes };
  }
  if (!wantsSpectrum) {
    for (const m of a.modules) ranks.set(m.name, Math.min(o.rank!, m.rank));
    return { method, ranks, notes };
  }
  const { spectra, grams } = await spectraOf(a, be);
  if (o.energy !== undefined || o.budget !== undefined) {
    const alloc = allocate(
      a.modules.map((m) => ({ name: m.name, sigma: spectra.get(m.name)!, in: m.in, out: m.out, rank: m.rank })),
      {
        score: o.score,
        minRank: o.minRank,
        rho: o.rho,
        ...(o.budget !== undefined ? { budget: o.budget } : {}),
        ...(o.energy !== undefined ? { energy: o.energy } : {}),
      },
    );
    for (const [k, v] of alloc.ranks) ranks.set(k, v);
    return { method, ranks, spectra, grams, notes };
  }
  let padded = 0;
  for (const m of a.modules) {
    const S = spectra.get(m.name)!;
    let t: number;
    if (o.kohyaCompat) {
      t = kohyaDynamicRank(S, o.dynamic, o.dynamicParam ?? 0, {
        ...(o.rank !== undefined ? { cap: o.rank } : {}),
        scale: m.scale,
        length: Math.min(m.out, m.in),
      });
      if (t > m.rank) padded++;
    } else {
      t = cleanDynamicRank(S, o.dynamic!, o.dynamicParam!);
      t = Math.max(t, Math.min(o.minRank, m.rank));
      t = Math.min(t, m.rank, o.rank ?? Infinity);
    }
    ranks.set(m.name, t);
  }
  if (padded)
    notes.push(
      `${padded} module(s) get more ranks than they hold under kohya's rule (its +1 on a full spectrum); the extra components are written as zeros (ΔW unchanged; resize_lora.py's are zero singular values)`,
    );
  return { method, ranks, spectra, grams, notes };
}
