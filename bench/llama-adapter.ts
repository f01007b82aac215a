// A synthetic Llama-7B-shaped PEFT adapter for benchmarks: layers × q,k,v,o (4096×4096),
// gate,up (11008×4096), down (4096×11008); rank r; F16 (≈ 320 MB at 32 layers, rank 64). Written
// module by module through the real writer, never all in memory.
import { writeAdapter, type OutModule } from "../formats/adapter/write.js";
import { Rng } from "../linalg/random.js";

export const HIDDEN = 4096,
  MLP = 11008;
export const LLAMA_TARGETS: [string, number, number][] = [
  ["self_attn.q_proj", HIDDEN, HIDDEN],
  ["self_attn.k_proj", HIDDEN, HIDDEN],
  ["self_attn.v_proj", HIDDEN, HIDDEN],
  ["self_attn.o_proj", HIDDEN, HIDDEN],
  ["mlp.gate_proj", MLP, HIDDEN],
  ["mlp.up_proj", MLP, HIDDEN],
  ["mlp.down_proj", HIDDEN, MLP],
];

/** A ~ N(0, 1/in), B ~ N(0, 0.02²)·0.95^c (a decaying spectrum, like trained adapters). */
export async function generateLlamaAdapter(dir: string, layers: number, rank: number, seed = 20240601): Promise<void> {
  const shapes: [string, number, number][] = [];
  for (let l = 0; l < layers; l++) for (const [t, out, inn] of LLAMA_TARGETS) shapes.push([`model.layers.${l}.${t}`, out, inn]);
  await writeRandomPeftAdapter(dir, shapes, rank, { seed, dtype: "F16", decay: 0.95 });
}

/**
 * A PEFT adapter (alpha = 2r, target_modules from the last path segments) with A ~ N(0, 1/in) and
 * B ~ N(0, 0.02²)·decay^c, drawn module by module in the order given (A, then B).
 */
export async function writeRandomPeftAdapter(
  dir: string,
  shapes: [path: string, out: number, inn: number][],
  rank: number,
  o: { seed: number; dtype: "F16" | "F32"; decay?: number },
): Promise<void> {
  const rng = new Rng(o.seed);
  const modules: OutModule[] = shapes.map(([path, out, inn]) => ({
    path,
    kind: "linear",
    rank,
    alpha: 2 * rank,
    out,
    in: inn,
    dtype: o.dtype,
    produce: async () => {
      const A = Float32Array.from(rng.normals(rank * inn, 1 / Math.sqrt(inn)));
      const B = Float32Array.from(rng.normals(out * rank, 0.02));
      if (o.decay !== undefined) for (let i = 0; i < out; i++) for (let c = 0; c < rank; c++) B[i * rank + c]! *= o.decay ** c;
      return { A, B };
    },
  }));
  const targets = [...new Set(shapes.map(([p]) => p.split(".").at(-1)!))];
  await writeAdapter(
    dir,
    {
      format: "peft",
      modules,
      passthrough: [],
      metadata: {},
      baseConfig: { peft_type: "LORA", task_type: "CAUSAL_LM", r: rank, lora_alpha: 2 * rank, target_modules: targets },
    },
    { force: true, inputs: [] },
  );
}
