// Output names through the naming maps (name-map.ts), just before a write: PEFT and diffusers
// outputs get diffusers module paths, kohya outputs kohya stems. Flux is where one module becomes
// several and back (names-flux.ts), done as diffusers does it (lora_conversion_utils.py
// `_convert_to_ai_toolkit_cat`) and exactly reversed:
//
// - split a fused qkv / linear1 of rank R into P parts (ΔW of part j = rows j of the fused ΔW):
//   when R divides by P and lora_up is block-diagonal (every off-diagonal block exactly 0, as kohya's
//   split_qkv training saves it), part j takes down rows j·R/P… and its diagonal up block (rank R/P);
//   otherwise every part takes the whole down and its rows of up (rank R). The scale is kept: alpha
//   is rewritten for the part's rank.
// - fuse P diffusers parts back: when all P are there with one scale and the same down (what the
//   second split case wrote), down is that one and up the parts' rows stacked (rank R); otherwise
//   down is the parts' downs stacked and up block-diagonal (rank ΣRᵢ; missing parts are zero rows).
//   kohya's scale is alpha/(rows of lora_down), so alpha = s·ΣRᵢ; parts with different scales have
//   sᵢ/s folded into their up block (then written in F32 at least).
// - final_layer.adaLN_modulation.1 ↔ norm_out.linear: the up rows' two halves swap.
import { InvalidInputError } from "../../common/errors.js";
import { decodeToFloat64, type DType } from "../safetensors/index.js";
import { isUnmappedKohyaPath, kohyaStemOfPath, pathFamily, unmappedName, type ModelFamily } from "./name-map.js";
import { fluxDiffusersPaths, fluxFromBfl, fluxFromDiffusers, fluxRowsFromPart, fluxSplitRows, type FluxHit } from "./names-flux.js";
import { alphaForScale } from "./peft-config.js";
import type { AdapterOutput, OutModule } from "./output.js";

interface F64Factors {
  A: Float64Array;
  B: Float64Array;
}

/** A module's factors in float64 (exact for every stored dtype). Calls produce() (once). */
async function factorsOf(m: OutModule): Promise<F64Factors> {
  if (m.rawFactors) {
    const [A, B] = await Promise.all([m.rawFactors.A.file.readFloat64(m.rawFactors.A.tensor), m.rawFactors.B.file.readFloat64(m.rawFactors.B.tensor)]);
    return { A, B };
  }
  const f = await m.produce!();
  const dec = (x: Float32Array | Float64Array | Uint8Array) =>
    x instanceof Uint8Array ? decodeToFloat64(m.dtype, x) : x instanceof Float64Array ? x : Float64Array.from(x);
  return { A: dec(f.A), B: dec(f.B) };
}

/** One read of a module's factors shared by `uses` consumers, released after the last. */
function shared(m: OutModule, uses: number, first?: F64Factors): () => Promise<F64Factors> {
  let p: Promise<F64Factors> | null = first ? Promise.resolve(first) : null;
  let left = uses;
  return async () => {
    p ??= factorsOf(m);
    const f = await p;
    if (--left === 0) p = null;
    return f;
  };
}

/** Rows [r0, r0+n) and columns [c0, c0+k) of a row-major matrix with `cols` columns. */
function block(x: Float64Array, cols: number, r0: number, n: number, c0: number, k: number): Float64Array {
  const o = new Float64Array(n * k);
  for (let i = 0; i < n; i++) o.set(x.subarray((r0 + i) * cols + c0, (r0 + i) * cols + c0 + k), i * k);
  return o;
}

/** B (out×r) with its two row halves swapped. */
function swapHalves(B: Float64Array, out: number, r: number): Float64Array {
  const h = (out / 2) * r;
  const o = new Float64Array(B.length);
  o.set(B.subarray(h), 0);
  o.set(B.subarray(0, h), h);
  return o;
}

/** The name to show for a module: its kohya stem when it has or had one. */
function nameOf(m: OutModule): string {
  if (m.stem !== undefined) return m.stem;
  const bfl = m.path.startsWith("transformer.") && fluxFromBfl(m.path.slice("transformer.".length));
  return bfl ? `lora_unet_${bfl.bfl.replace(/\./g, "_")}` : m.path;
}

/** Whether lora_up is block-diagonal for `rows` parts of rank r/P each (diffusers' "sparse" test). */
function blockDiagonal(B: Float64Array, R: number, rows: number[]): boolean {
  const P = rows.length;
  if (R % P !== 0) return false;
  const ar = R / P;
  let r0 = 0;
  for (let j = 0; j < P; j++) {
    for (let i = r0; i < r0 + rows[j]!; i++) {
      for (let c = 0; c < R; c++) if (Math.floor(c / ar) !== j && B[i * R + c] !== 0) return false;
    }
    r0 += rows[j]!;
  }
  return true;
}

/** A BFL-named module (kohya Flux) as its diffusers module(s). */
async function splitFlux(m: OutModule, hit: FluxHit, rslora: boolean): Promise<OutModule[]> {
  const paths = fluxDiffusersPaths(hit).map((p) => `transformer.${p}`);
  const common = { kind: m.kind, in: m.in, dtype: m.dtype, ...(m.kernel ? { kernel: m.kernel } : {}) };
  if (m.extras && Object.keys(m.extras).length && paths.length > 1)
    throw new InvalidInputError(`module "${nameOf(m)}" has ${Object.keys(m.extras).join(", ")}; a fused Flux module with those cannot be split`);
  if (hit.entry.swapHalves) {
    if (m.out % 2 !== 0) throw new InvalidInputError(`module "${nameOf(m)}": ${m.out} output rows do not halve (shift and scale)`);
    const get = shared(m, 1);
    return [
      {
        ...common,
        path: paths[0]!,
        rank: m.rank,
        alpha: m.alpha,
        out: m.out,
        ...(m.extras ? { extras: m.extras } : {}),
        produce: async () => {
          const f = await get();
          return { A: f.A, B: swapHalves(f.B, m.out, m.rank) };
        },
      },
    ];
  }
  if (paths.length === 1) {
    const { stem: _s, ...rest } = m;
    return [{ ...rest, path: paths[0]! }];
  }
  const rows = fluxSplitRows(hit.entry, m.out);
  if (!rows) {
    throw new InvalidInputError(
      `module "${nameOf(m)}": ${m.out} output rows do not split into ${paths.join(", ")} (${hit.entry.split === "thirds" ? "thirds" : "h, h, h and 4h rows"})`,
    );
  }
  const R = m.rank,
    P = paths.length;
  const scale = m.alpha / (rslora ? Math.sqrt(R) : R);
  let first: F64Factors | undefined;
  let sparse = false;
  if (R % P === 0) {
    first = await factorsOf(m);
    sparse = blockDiagonal(first.B, R, rows);
  }
  const get = shared(m, P, first);
  const ar = sparse ? R / P : R;
  const offsets = rows.map((_, j) => rows.slice(0, j).reduce((x, y) => x + y, 0));
  return paths.map((path, j) => ({
    ...common,
    path,
    rank: ar,
    alpha: sparse ? alphaForScale(scale, ar, rslora) : m.alpha,
    out: rows[j]!,
    produce: async () => {
      const f = await get();
      return sparse
        ? { A: block(f.A, m.in, j * ar, ar, 0, m.in), B: block(f.B, R, offsets[j]!, rows[j]!, j * ar, ar) }
        : { A: f.A, B: block(f.B, R, offsets[j]!, rows[j]!, 0, R) };
    },
  }));
}

const WIDTH: Record<string, number> = { F16: 1, BF16: 1, F32: 2, F64: 3 };

/** diffusers Flux parts of one BFL module (kohya output) fused into it. */
async function fuseFlux(parts: { m: OutModule; part: number }[], hit: FluxHit): Promise<OutModule> {
  const bfl = hit.bfl;
  const stem = `lora_unet_${bfl.replace(/\./g, "_")}`;
  const first = parts[0]!;
  const P = hit.entry.diffusers.length;
  for (const { m } of parts) {
    if (m.kind !== "linear") throw new InvalidInputError(`module "${m.path}": Flux ${bfl} parts must be linear, this one is ${m.kind}`);
    if (m.extras && Object.keys(m.extras).length)
      throw new InvalidInputError(`module "${m.path}" has ${Object.keys(m.extras).join(", ")}; it cannot be fused into ${stem}`);
  }
  const rows = fluxRowsFromPart(hit.entry, first.part, first.m.out);
  for (const { m, part } of parts) {
    if (m.in !== first.m.in || m.out !== rows[part])
      throw new InvalidInputError(
        `modules "${first.m.path}" (${first.m.out}×${first.m.in}) and "${m.path}" (${m.out}×${m.in}) cannot be parts of one ${bfl} (rows ${rows.join(", ")})`,
      );
  }
  const inF = first.m.in;
  const out = rows.reduce((x, y) => x + y, 0);
  const offsets = rows.map((_, j) => rows.slice(0, j).reduce((x, y) => x + y, 0));
  const byPart = [...parts].sort((a, b) => a.part - b.part);
  const scales = byPart.map(({ m }) => m.alpha / m.rank);
  const oneScale = scales.every((s) => s === scales[0]);
  const dtypes = [...new Set(byPart.map(({ m }) => m.dtype))];
  let dtype: DType = dtypes.reduce((a, b) => ((WIDTH[b] ?? 2) > (WIDTH[a] ?? 2) ? b : a));
  if (dtypes.length > 1 && (WIDTH[dtype] ?? 2) < 2) dtype = "F32";
  const data = await Promise.all(byPart.map(({ m }) => factorsOf(m)));
  // The exact inverse of the non-block-diagonal split: every part present, one rank, scale and down.
  const sameDown =
    byPart.length === P &&
    oneScale &&
    byPart.every(({ m }) => m.rank === first.m.rank) &&
    data.every((d) => d.A.length === data[0]!.A.length && d.A.every((v, i) => v === data[0]!.A[i]));
  if (sameDown) {
    const R = first.m.rank;
    return {
      path: `transformer.${bfl}`,
      stem,
      kind: "linear",
      rank: R,
      alpha: byPart[0]!.m.alpha,
      out,
      in: inF,
      dtype,
      produce: async () => {
        const B = new Float64Array(out * R);
        byPart.forEach(({ part }, k) => B.set(data[k]!.B, offsets[part]! * R));
        return { A: data[0]!.A, B };
      },
    };
  }
  const R = byPart.reduce((s, { m }) => s + m.rank, 0);
  const sRef = scales[0]!;
  if (!oneScale && (WIDTH[dtype] ?? 2) < 2) dtype = "F32";
  return {
    path: `transformer.${bfl}`,
    stem,
    kind: "linear",
    rank: R,
    alpha: sRef * R,
    out,
    in: inF,
    dtype,
    produce: async () => {
      const A = new Float64Array(R * inF);
      const B = new Float64Array(out * R);
      let c = 0;
      byPart.forEach(({ m, part }, k) => {
        const d = data[k]!;
        const fold = scales[k]! / sRef;
        A.set(d.A, c * inF);
        for (let i = 0; i < m.out; i++) for (let t = 0; t < m.rank; t++) B[(offsets[part]! + i) * R + c + t] = d.B[i * m.rank + t]! * fold;
        c += m.rank;
      });
      return { A, B };
    },
  };
}

/** A diffusers Flux module (kohya output) that maps one-to-one, renamed (and its up halves swapped for norm_out). */
function renameToBfl(m: OutModule, hit: FluxHit): OutModule {
  const stem = `lora_unet_${hit.bfl.replace(/\./g, "_")}`;
  if (!hit.entry.swapHalves) return { ...m, path: `transformer.${hit.bfl}`, stem };
  if (m.out % 2 !== 0) throw new InvalidInputError(`module "${m.path}": ${m.out} output rows do not halve (scale and shift)`);
  const { rawFactors: _r, ...rest } = m;
  const get = shared(m, 1);
  return {
    ...rest,
    path: `transformer.${hit.bfl}`,
    stem,
    produce: async () => {
      const f = await get();
      return { A: f.A, B: swapHalves(f.B, m.out, m.rank) };
    },
  };
}

/** kohya output: every module gets its stem (Flux parts fused); a path no map covers exits 3. */
async function toKohya(out: AdapterOutput, family: ModelFamily): Promise<OutModule[]> {
  const result: OutModule[] = [];
  const groups = new Map<string, { hit: FluxHit; parts: { m: OutModule; part: number }[]; at: number }>();
  for (const m of out.modules) {
    if (m.stem !== undefined) {
      result.push(m);
      continue;
    }
    if (family === "flux" && m.path.startsWith("transformer.")) {
      const rel = m.path.slice("transformer.".length);
      if (fluxFromBfl(rel)) {
        result.push({ ...m, stem: `lora_unet_${rel.replace(/\./g, "_")}` });
        continue;
      }
      const hit = fluxFromDiffusers(rel);
      if (hit && hit.entry.diffusers.length > 1) {
        const g = groups.get(hit.bfl);
        if (g) {
          if (g.parts.some((p) => p.part === hit.part)) throw new InvalidInputError(`module "${m.path}" is given twice`);
          g.parts.push({ m, part: hit.part });
        } else {
          groups.set(hit.bfl, { hit, parts: [{ m, part: hit.part }], at: result.length });
          result.push(m); // placeholder, replaced below
        }
        continue;
      }
      if (hit) {
        result.push(renameToBfl(m, hit));
        continue;
      }
    }
    if (isUnmappedKohyaPath(m.path)) throw unmappedName(m.path, family, "kohya");
    const stem = kohyaStemOfPath(m.path, family);
    if (stem === undefined) throw unmappedName(m.path, family, "kohya");
    result.push({ ...m, stem });
  }
  for (const g of groups.values()) result[g.at] = await fuseFlux(g.parts, g.hit);
  const seen = new Map<string, string>();
  for (const m of result) {
    const prev = seen.get(m.stem!);
    if (prev !== undefined) throw new InvalidInputError(`modules "${prev}" and "${m.path}" both have the kohya name ${m.stem}`);
    seen.set(m.stem!, m.path);
  }
  return result;
}

/** PEFT / diffusers output: diffusers module paths (kohya Flux modules split). */
async function toDiffusersPaths(out: AdapterOutput, family: ModelFamily): Promise<OutModule[]> {
  const rslora = out.baseConfig?.["use_rslora"] === true;
  const result: OutModule[] = [];
  for (const m of out.modules) {
    if (isUnmappedKohyaPath(m.path)) throw unmappedName(m.stem ?? `lora_${m.path}`, family, out.format === "peft" ? "PEFT" : "diffusers");
    const hit = m.path.startsWith("transformer.") ? fluxFromBfl(m.path.slice("transformer.".length)) : undefined;
    if (hit) result.push(...(await splitFlux(m, hit, rslora)));
    else result.push(m);
  }
  return result;
}

/** The output with its module names as the target format spells them (called by writeAdapter). */
export async function applyNameMap(out: AdapterOutput): Promise<AdapterOutput> {
  const family = pathFamily(out.modules.map((m) => m.path));
  const modules = out.format === "kohya" ? await toKohya(out, family) : await toDiffusersPaths(out, family);
  const changed = modules.length !== out.modules.length || modules.some((m, i) => m.path !== out.modules[i]!.path);
  return { ...out, modules, ...(changed ? { keepTargetModules: false } : {}) };
}

/** The names a module set will be written under (no data read): what convert warns about. */
export function outputNames(out: AdapterOutput): { name: string; alpha: number; rank: number; path: string }[] {
  const family = pathFamily(out.modules.map((m) => m.path));
  const names: { name: string; alpha: number; rank: number; path: string }[] = [];
  const fused = new Set<string>();
  for (const m of out.modules) {
    const rel = m.path.startsWith("transformer.") ? m.path.slice("transformer.".length) : undefined;
    if (out.format === "kohya") {
      const d = family === "flux" && rel !== undefined && m.stem === undefined ? fluxFromDiffusers(rel) : undefined;
      const stem = d ? `lora_unet_${d.bfl.replace(/\./g, "_")}` : (m.stem ?? kohyaStemOfPath(m.path, family) ?? m.path);
      if (d && d.entry.diffusers.length > 1) {
        if (fused.has(stem)) continue;
        fused.add(stem);
      }
      names.push({ name: stem, alpha: m.alpha, rank: m.rank, path: m.path });
    } else {
      const hit = rel !== undefined ? fluxFromBfl(rel) : undefined;
      const paths = hit ? fluxDiffusersPaths(hit).map((p) => `transformer.${p}`) : [m.path];
      for (const p of paths) names.push({ name: p, alpha: m.alpha, rank: m.rank, path: p });
    }
  }
  return names;
}
