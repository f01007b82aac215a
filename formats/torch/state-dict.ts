// Finding the state dict in an unpickled checkpoint. torch.save takes any object: a state dict,
// or a wrapper such as {"state_dict": …, "epoch": 3} or {"model": …, "optimizer": …}. The tensors
// are taken from the one dict that holds tensors directly; when tensors sit in more than one place
// (a model and its optimizer state, a list of tensors) the choice is the user's, and lora says so.
import { InvalidInputError } from "../../common/errors.js";
import { WALK } from "./limits.js";
import { TorchTensor } from "./tensor.js";
import { describe, PyDict, PyList, PyTuple } from "./values.js";

export interface StateDict {
  tensors: { name: string; tensor: TorchTensor }[];
  /** Python-style path of the dict within the checkpoint ("" for the top level), e.g. `["state_dict"]`. */
  path: string;
  /** Keys of the dict whose values are not tensors (ignored). */
  ignored: string[];
}

const step = (k: unknown): string => (typeof k === "string" || typeof k === "number" ? `[${JSON.stringify(k)}]` : `[${describe(k)}]`);

export function findStateDict(root: unknown, where: string): StateDict {
  const holders: { dict: PyDict; path: string }[] = [];
  const loose: string[] = [];
  const seen = new Set<object>();
  let visited = 0;
  // iterative depth-first walk; each container is entered once (cycles and shared sub-objects)
  const todo: { v: unknown; path: string; depth: number }[] = [{ v: root, path: "", depth: 0 }];
  while (todo.length) {
    const { v, path, depth } = todo.pop()!;
    if (!(v instanceof PyDict || v instanceof PyList || v instanceof PyTuple) || seen.has(v)) continue;
    seen.add(v);
    if (depth >= WALK.maxNesting) throw new InvalidInputError(`${where}: containers nested deeper than ${WALK.maxNesting} levels`);
    const entries: [unknown, unknown][] = v instanceof PyDict ? v.keys.map((k, i) => [k, v.values[i]]) : v.items.map((x, i) => [i, x]);
    visited += entries.length;
    if (visited > WALK.maxEntries) throw new InvalidInputError(`${where}: more than ${WALK.maxEntries} container entries`);
    let direct = false;
    for (const [k, x] of entries) {
      if (!(x instanceof TorchTensor)) continue;
      if (v instanceof PyDict) direct = true;
      else loose.push(path + step(k));
    }
    for (let i = entries.length - 1; i >= 0; i--) {
      const [k, x] = entries[i]!;
      if (!(x instanceof TorchTensor)) todo.push({ v: x, path: path + step(k), depth: depth + 1 });
    }
    if (direct) holders.push({ dict: v as PyDict, path });
  }
  if (root instanceof TorchTensor) throw new InvalidInputError(`${where}: the checkpoint is a single ${root.describe()}, not a state dict of named tensors`);
  const places = [...holders.map((h) => h.path || "the top level"), ...loose];
  if (holders.length === 0 && loose.length === 0) throw new InvalidInputError(`${where}: the checkpoint holds no tensors (${describe(root)})`);
  if (places.length > 1) {
    const shown = places.slice(0, 6).join(", ") + (places.length > 6 ? `, … (${places.length} places)` : "");
    const first = holders[0]?.path || "";
    throw new InvalidInputError(`${where}: tensors are stored in more than one place (${shown}); lora reads one state dict and will not guess which`, {
      hint: `save the one you want on its own, e.g. torch.save(ckpt${first}, "adapter.bin"), or with safetensors.torch.save_file`,
    });
  }
  if (holders.length === 0) throw new InvalidInputError(`${where}: the tensors are in a ${describe(root)} at ${loose[0]}, not in a dict of named tensors`);
  const { dict, path } = holders[0]!;
  const tensors: StateDict["tensors"] = [];
  const ignored: string[] = [];
  for (let i = 0; i < dict.size; i++) {
    const k = dict.keys[i];
    const x = dict.values[i];
    if (x instanceof TorchTensor) {
      if (typeof k !== "string") throw new InvalidInputError(`${where}: the state dict${path} names a tensor by ${describe(k)}, not a string`);
      tensors.push({ name: k, tensor: x });
    } else ignored.push(typeof k === "string" ? k : describe(k));
  }
  return { tensors, path, ignored };
}
