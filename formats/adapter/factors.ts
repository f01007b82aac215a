// Reading a module's factors as matrices: A r×in (conv kernels flattened), B out×r, every value
// checked finite (cli.md: NaN/Inf in a factor is exit 3, naming the tensor).
import { InvalidInputError } from "../errors.js";
import type { Mat } from "../../linalg/types.js";
import type { TensorInfo } from "../safetensors/index.js";
import type { Adapter, LoraModule } from "./types.js";

function checkFinite(data: Float32Array | Float64Array, t: TensorInfo, label: string): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) {
      throw new InvalidInputError(`${label}: tensor ${t.name} holds ${Number.isNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"} at element ${i}; factors must be finite`);
    }
  }
}

export interface ModuleFactors<T extends Float32Array | Float64Array = Float32Array | Float64Array> {
  A: Mat<T>;
  B: Mat<T>;
}

export async function readFactors(adapter: Adapter, m: LoraModule, precision: "f32" | "f64" = "f64"): Promise<ModuleFactors> {
  const label = adapter.source === "-" ? "<stdin>" : adapter.source;
  const read = (t: TensorInfo) => (precision === "f64" ? adapter.file.readFloat64(t) : adapter.file.readFloat32(t));
  const [a, b] = await Promise.all([read(m.A), read(m.B)]);
  checkFinite(a, m.A, label);
  checkFinite(b, m.B, label);
  return { A: { rows: m.rank, cols: m.in, data: a }, B: { rows: m.out, cols: m.rank, data: b } };
}
