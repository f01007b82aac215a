// What a torch.save pickle may name (the restricted unpickler's policy). Admitted: the
// tensor-rebuilding functions of torch/_utils.py, the storage types of torch/storage.py, the
// type names `_rebuild_from_type_v2` passes, collections.OrderedDict, and the builtins Python uses
// for plain containers (set, frozenset; _codecs.encode for bytes in protocol 2). Each is
// interpreted here as data; no other name is admitted, and the refusal comes at GLOBAL time,
// before any call (torch.load(weights_only=True) admits a similar list: torch/_weights_only_unpickler.py).
import { InvalidInputError } from "../../common/errors.js";
import type { PicklePolicy } from "./pickle.js";
import { makeTensor, STORAGE_DTYPES, type TorchStorage, TorchTensor } from "./tensor.js";
import { describe, PyBytes, PyDict, PyGlobal, PyList, PyTuple, safeInt } from "./values.js";

/** A pickle named a global lora does not admit (exit 3; --json code PICKLE_GLOBAL_REFUSED). */
export class RefusedGlobalError extends InvalidInputError {
  override readonly code: string = "PICKLE_GLOBAL_REFUSED";
  constructor(
    where: string,
    readonly global: string,
    how = "asks for",
  ) {
    super(
      `${where}: the pickle ${how} ${global}, which lora refuses: it reads only tensors, state dicts and plain containers (torch._utils._rebuild_tensor_v2, _rebuild_parameter, torch.*Storage, collections.OrderedDict) and runs nothing`,
      { hint: "if you trust the file, load it in Python and save the state dict with safetensors.torch.save_file" },
    );
  }
}

const CALLABLE = new Set([
  "torch._utils._rebuild_tensor",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
  "torch._tensor._rebuild_from_type_v2",
  "collections.OrderedDict",
  "builtins.set",
  "builtins.frozenset",
  "_codecs.encode",
]);
/** Names admitted as values only (a storage type in a persistent id, the type of _rebuild_from_type_v2). */
const TYPES = new Set(["torch.Tensor", "torch.nn.parameter.Parameter", ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`)]);

/** Resolves a storage persistent id: `('storage', storage_type, key, location, numel[, view_metadata])`. */
export type StorageLoader = (key: string, storageType: string, numel: number, viewMetadata: unknown) => TorchStorage;

export function torchPolicy(where: string, loadStorage: StorageLoader): PicklePolicy {
  const bad = (msg: string): never => {
    throw new InvalidInputError(`${where}: ${msg}`, { hint: "the checkpoint is corrupt or not written by torch.save" });
  };
  const emptyHooks = (v: unknown, fn: string) => {
    if (v !== null && !(v instanceof PyDict && v.size === 0)) bad(`${fn} with backward hooks (${describe(v)})`);
  };
  const args = (a: PyTuple, fn: string, min: number, max: number) => {
    if (a.items.length < min || a.items.length > max) bad(`${fn} called with ${a.items.length} arguments`);
    return a.items;
  };
  const tensorArg = (v: unknown, fn: string): TorchTensor => (v instanceof TorchTensor ? v : bad(`${fn} of ${describe(v)}, not a tensor`));
  const call = (fn: unknown, a: PyTuple, op: string): unknown => {
    if (!(fn instanceof PyGlobal)) return bad(`${op} applies ${describe(fn)}, which is not callable`);
    const name = fn.qualified;
    if (!CALLABLE.has(name)) throw new RefusedGlobalError(where, name, `calls`);
    switch (name) {
      case "torch._utils._rebuild_tensor": {
        const [s, off, size, stride] = args(a, name, 4, 4);
        return makeTensor(s, off, size, stride, where);
      }
      case "torch._utils._rebuild_tensor_v2": {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        const [s, off, size, stride, , hooks, metadata] = args(a, name, 6, 7);
        emptyHooks(hooks, name);
        if (metadata !== undefined && metadata !== null && !(metadata instanceof PyDict && metadata.size === 0))
          bad(`${name} with tensor metadata ${describe(metadata)}`);
        return makeTensor(s, off, size, stride, where);
      }
      case "torch._utils._rebuild_parameter": {
        const [data, , hooks] = args(a, name, 3, 3);
        emptyHooks(hooks, name);
        return tensorArg(data, name);
      }
      case "torch._utils._rebuild_parameter_with_state": {
        // (data, requires_grad, backward_hooks, state): the state is Python attributes of the Parameter, not data
        const [data, , hooks] = args(a, name, 4, 4);
        emptyHooks(hooks, name);
        return tensorArg(data, name);
      }
      case "torch._tensor._rebuild_from_type_v2": {
        // (func, new_type, args, state): torch.Tensor or Parameter rebuilt by an admitted func
        const [func, type, inner, state] = args(a, name, 4, 4);
        if (!(type instanceof PyGlobal) || !["torch.Tensor", "torch.nn.parameter.Parameter"].includes(type.qualified)) bad(`${name} to type ${describe(type)}`);
        if (state !== null && !(state instanceof PyDict && state.size === 0)) bad(`${name} with state ${describe(state)}`);
        if (!(inner instanceof PyTuple)) return bad(`${name} with arguments ${describe(inner)}`);
        return tensorArg(call(func, inner, name), name);
      }
      case "collections.OrderedDict": {
        const [items] = args(a, name, 0, 1);
        const d = new PyDict("OrderedDict");
        if (items !== undefined) {
          if (!(items instanceof PyList || items instanceof PyTuple)) return bad(`OrderedDict(${describe(items)})`);
          for (const pair of items.items) {
            if (!(pair instanceof PyTuple) || pair.items.length !== 2) return bad(`OrderedDict item ${describe(pair)}`);
            setKey(d, pair.items[0], pair.items[1], bad);
          }
        }
        return d;
      }
      case "builtins.set":
      case "builtins.frozenset": {
        const [items] = args(a, name, 0, 1);
        if (items !== undefined && !(items instanceof PyList || items instanceof PyTuple)) return bad(`${name}(${describe(items)})`);
        return new PyList(items ? [...items.items] : [], name === "builtins.set" ? "set" : "frozenset");
      }
      default: {
        // _codecs.encode(str, "latin1"): how protocol 2 spells a bytes object (Python's Pickler.save_bytes)
        const [s, enc] = args(a, name, 2, 2);
        if (typeof s !== "string" || (enc !== "latin1" && enc !== "latin-1")) return bad(`_codecs.encode(${describe(s)}, ${describe(enc)})`);
        const out = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) <= 0xff ? s.charCodeAt(i) : bad("_codecs.encode of a non-Latin-1 string");
        return new PyBytes(out);
      }
    }
  };
  return {
    global(module, name) {
      // Python 2 module names, as Python 3's unpickler maps them (fix_imports)
      const m = module === "__builtin__" ? "builtins" : module;
      const q = `${m}.${name}`;
      if (!CALLABLE.has(q) && !TYPES.has(q)) throw new RefusedGlobalError(where, printable(`${module}.${name}`));
      return new PyGlobal(m, name);
    },
    call,
    build(obj, state) {
      // OrderedDict.__reduce__ passes the instance __dict__ (a state dict's `_metadata`) as BUILD state
      if (obj instanceof PyDict && obj.kind === "OrderedDict" && state instanceof PyDict) {
        for (let i = 0; i < state.size; i++) {
          if (typeof state.keys[i] !== "string") bad(`BUILD with attribute ${describe(state.keys[i])}`);
          obj.attributes.set(state.keys[i] as string, state.values[i]);
        }
        return obj;
      }
      return bad(`BUILD of ${describe(obj)} with ${describe(state)}: only an OrderedDict's attributes are set`);
    },
    persistentLoad(pid) {
      // torch/serialization.py persistent_id: ('storage', storage_type, key, location, numel) (+ view_metadata in the legacy format)
      if (!(pid instanceof PyTuple) || pid.items[0] !== "storage" || (pid.items.length !== 5 && pid.items.length !== 6))
        return bad(`persistent id ${describe(pid)} is not a torch storage reference`);
      const [, type, key, location, numel, view] = pid.items;
      if (!(type instanceof PyGlobal) || type.module !== "torch" || !STORAGE_DTYPES[type.name]) return bad(`storage type ${describe(type)}`);
      if (typeof key !== "string" || typeof location !== "string") return bad(`storage key ${describe(key)} at ${describe(location)}`);
      const n = safeInt(numel);
      if (n === null || n < 0) return bad(`storage ${JSON.stringify(key)} with ${describe(numel)} elements`);
      return loadStorage(key, type.name, n, view ?? null);
    },
  };
}

function setKey(d: PyDict, k: unknown, v: unknown, bad: (m: string) => never): void {
  try {
    d.set(k, v);
  } catch {
    bad(`an unhashable dict key (${describe(k)})`);
  }
}

/** A global's name as given, cut and with control characters escaped, for the message. */
function printable(s: string): string {
  const t = JSON.stringify(s.length > 200 ? s.slice(0, 200) + "…" : s).slice(1, -1);
  return t;
}
