// Generated LyCORIS files for tests and benches (docs/formats.md "LyCORIS"): LoHa (± Tucker), LoKr
// (w1/w2 full, low-rank or Tucker; conv), LoCon with a Tucker core, full diff, plain kohya LoRA and
// (IA)³ modules in one safetensors file, with each module's dense ΔW formed independently here in
// float64 by LyCORIS's own formulas (lycoris/functional/*.py) from the values as stored (read back).
import { encodeFloats, SafetensorsFile, serializeSafetensors, type DType, type TensorSpec } from "../formats/safetensors/index.js";
import type { Rng } from "../linalg/random.js";

export type LySpec =
  | { kind: "loha"; stem: string; out: number; in: number; r1: number; r2: number; alpha?: number; kernel?: number[]; tucker?: boolean }
  | { kind: "lokr"; stem: string; a: number; b: number; c: number; d: number; alpha?: number; kernel?: number[]; w1r?: number; w2r?: number; tucker?: boolean }
  | { kind: "locon-tucker"; stem: string; out: number; inCh: number; r: number; kernel: number[]; alpha?: number }
  | { kind: "full"; stem: string; out: number; in: number; kernel?: number[]; bias?: boolean }
  | { kind: "plain"; stem: string; out: number; in: number; r: number; alpha?: number }
  | { kind: "ia3"; stem: string; n: number };

export interface LyDense {
  out: number;
  in: number;
  /** ΔW flattened [out, in·Πk], row-major, scale applied. */
  D: Float64Array;
}

const prod = (k: number[] | undefined) => (k ?? []).reduce((x, y) => x * y, 1);

/** The tensors of one module (random values, scaled so ΔW entries are O(1)). */
function tensorsOf(s: LySpec): [string, number[]][] {
  const K = prod("kernel" in s ? s.kernel : undefined);
  switch (s.kind) {
    case "loha":
      if (s.tucker)
        return [
          ["hada_w1_a", [s.r1, s.out]],
          ["hada_w1_b", [s.r1, s.in]],
          ["hada_t1", [s.r1, s.r1, ...s.kernel!]],
          ["hada_w2_a", [s.r2, s.out]],
          ["hada_w2_b", [s.r2, s.in]],
          ["hada_t2", [s.r2, s.r2, ...s.kernel!]],
        ];
      return [
        ["hada_w1_a", [s.out, s.r1]],
        ["hada_w1_b", [s.r1, s.in * K]],
        ["hada_w2_a", [s.out, s.r2]],
        ["hada_w2_b", [s.r2, s.in * K]],
      ];
    case "lokr": {
      const w1: [string, number[]][] = s.w1r
        ? [
            ["lokr_w1_a", [s.a, s.w1r]],
            ["lokr_w1_b", [s.w1r, s.c]],
          ]
        : [["lokr_w1", [s.a, s.c]]];
      const w2: [string, number[]][] = s.tucker
        ? [
            ["lokr_w2_a", [s.w2r!, s.b]],
            ["lokr_w2_b", [s.w2r!, s.d]],
            ["lokr_t2", [s.w2r!, s.w2r!, ...s.kernel!]],
          ]
        : s.w2r
          ? [
              ["lokr_w2_a", [s.b, s.w2r]],
              ["lokr_w2_b", [s.w2r, s.d * K]],
            ]
          : [["lokr_w2", [s.b, s.d, ...(s.kernel ?? [])]]];
      return [...w1, ...w2];
    }
    case "locon-tucker":
      return [
        ["lora_down.weight", [s.r, s.inCh, 1, 1]],
        ["lora_mid.weight", [s.r, s.r, ...s.kernel]],
        ["lora_up.weight", [s.out, s.r, 1, 1]],
      ];
    case "full":
      return [["diff", [s.out, s.in, ...(s.kernel ?? [])]], ...(s.bias ? ([["diff_b", [s.out]]] as [string, number[]][]) : [])];
    case "plain":
      return [
        ["lora_down.weight", [s.r, s.in]],
        ["lora_up.weight", [s.out, s.r]],
      ];
    case "ia3":
      return [["weight", [s.n]]];
  }
}

/** A LyCORIS file of these modules in `dtype`, its bytes and each module's dense ΔW (ia3: none). */
export async function lycorisFile(
  rng: Rng,
  specs: LySpec[],
  dtype: DType,
  metadata: Record<string, string> = { ss_network_module: "lycoris.kohya" },
  opts: { dense?: boolean } = {},
) {
  const ts: TensorSpec[] = [];
  for (const s of specs) {
    for (const [p, shape] of tensorsOf(s)) {
      const n = shape.reduce((x, y) => x * y, 1);
      ts.push({ name: `${s.stem}.${p}`, dtype, shape, data: encodeFloats(dtype, rng.normals(n, 1 / Math.sqrt(Math.max(2, shape[0]!)))) });
    }
    if ("alpha" in s && s.alpha !== undefined)
      ts.push({ name: `${s.stem}.alpha`, dtype: "F32", shape: [], data: encodeFloats("F32", Float64Array.of(s.alpha)) });
    if (s.kind === "ia3") ts.push({ name: `${s.stem}.on_input`, dtype: "I64", shape: [], data: new Uint8Array(8) });
  }
  const bytes = await serializeSafetensors(ts, metadata);
  const f = SafetensorsFile.fromBuffer(bytes, "gen");
  const dense = new Map<string, LyDense>();
  if (opts.dense === false) return { bytes, dense };
  for (const s of specs) {
    if (s.kind === "ia3") continue;
    const get = (p: string) => f.readFloat64(`${s.stem}.${p}`);
    dense.set(s.stem, await denseOf(s, get));
  }
  await f.close();
  return { bytes, dense };
}

const mm = (A: Float64Array, m: number, k: number, B: Float64Array, n: number) => {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) C[i * n + j]! += A[i * k + p]! * B[p * n + j]!;
  return C;
};

/** einsum("i j k, i p, j r -> p r k", t, wa, wb): [p, r·K]. */
function tucker(t: Float64Array, R1: number, R2: number, K: number, wa: Float64Array, P: number, wb: Float64Array, Rn: number): Float64Array {
  const W = new Float64Array(P * Rn * K);
  for (let p = 0; p < P; p++)
    for (let r = 0; r < Rn; r++)
      for (let k = 0; k < K; k++) {
        let v = 0;
        for (let i = 0; i < R1; i++) for (let j = 0; j < R2; j++) v += t[(i * R2 + j) * K + k]! * wa[i * P + p]! * wb[j * Rn + r]!;
        W[(p * Rn + r) * K + k] = v;
      }
  return W;
}

async function denseOf(s: Exclude<LySpec, { kind: "ia3" }>, get: (p: string) => Promise<Float64Array>): Promise<LyDense> {
  const K = prod("kernel" in s ? s.kernel : undefined);
  const scale = (dim: number | undefined) => (dim === undefined ? 1 : ("alpha" in s && s.alpha ? s.alpha : dim) / dim);
  switch (s.kind) {
    case "loha": {
      const n = s.in * K;
      let F1: Float64Array, F2: Float64Array;
      if (s.tucker) {
        F1 = tucker(await get("hada_t1"), s.r1, s.r1, K, await get("hada_w1_a"), s.out, await get("hada_w1_b"), s.in);
        F2 = tucker(await get("hada_t2"), s.r2, s.r2, K, await get("hada_w2_a"), s.out, await get("hada_w2_b"), s.in);
      } else {
        F1 = mm(await get("hada_w1_a"), s.out, s.r1, await get("hada_w1_b"), n);
        F2 = mm(await get("hada_w2_a"), s.out, s.r2, await get("hada_w2_b"), n);
      }
      const sc = scale(s.r1);
      return { out: s.out, in: n, D: F1.map((x, i) => sc * x * F2[i]!) };
    }
    case "lokr": {
      const W1 = s.w1r ? mm(await get("lokr_w1_a"), s.a, s.w1r, await get("lokr_w1_b"), s.c) : await get("lokr_w1");
      const dn = s.d * K;
      const W2 = s.tucker
        ? tucker(await get("lokr_t2"), s.w2r!, s.w2r!, K, await get("lokr_w2_a"), s.b, await get("lokr_w2_b"), s.d)
        : s.w2r
          ? mm(await get("lokr_w2_a"), s.b, s.w2r, await get("lokr_w2_b"), dn)
          : await get("lokr_w2");
      const sc = scale(s.w1r ?? s.w2r);
      const out = s.a * s.b,
        n = s.c * dn;
      const D = new Float64Array(out * n);
      // torch.kron(w1[..., None, None], w2) flattened: [(i·b + p), (k·d + q)·K + kk]
      for (let i = 0; i < s.a; i++)
        for (let p = 0; p < s.b; p++)
          for (let k = 0; k < s.c; k++) for (let q = 0; q < dn; q++) D[(i * s.b + p) * n + k * dn + q] = sc * W1[i * s.c + k]! * W2[p * dn + q]!;
      return { out, in: n, D };
    }
    case "locon-tucker": {
      const up = await get("lora_up.weight"),
        down = await get("lora_down.weight"),
        mid = await get("lora_mid.weight");
      // Σ up[o,i]·mid[i,j,k]·down[j,c] = tucker(mid, upᵀ, down)
      const upT = new Float64Array(s.r * s.out);
      for (let o = 0; o < s.out; o++) for (let i = 0; i < s.r; i++) upT[i * s.out + o] = up[o * s.r + i]!;
      const sc = scale(s.r);
      return { out: s.out, in: s.inCh * K, D: tucker(mid, s.r, s.r, K, upT, s.out, down, s.inCh).map((x) => sc * x) };
    }
    case "full":
      return { out: s.out, in: s.in * K, D: await get("diff") };
    case "plain": {
      const sc = scale(s.r);
      return { out: s.out, in: s.in, D: mm(await get("lora_up.weight"), s.out, s.r, await get("lora_down.weight"), s.in).map((x) => sc * x) };
    }
  }
}
