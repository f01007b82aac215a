# Writes real torch.save checkpoints for formats/torch tests (Debian's python3-torch; run by
# test/torch-save.ts). Usage: torch_checkpoints.py OUT_DIR. Each file comes with the exact
# contiguous little-endian bytes of its tensors in manifest.json (hex), computed by torch itself.
# Malicious files are only pickled here, never loaded: pickling records names, it runs nothing.
import collections, json, os, pickle, sys, zipfile
import torch

out = sys.argv[1]
torch.manual_seed(0)
manifest = {}


def raw(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


DT = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
      torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def save(name, obj, sd, **kw):
    torch.save(obj, os.path.join(out, name), **kw)
    manifest[name] = {k: {"dtype": DT[v.dtype], "shape": list(v.shape), "hex": raw(v).hex()} for k, v in sd.items()}


# every dtype
x = torch.randn(3, 5, dtype=torch.float64) * 100
dtypes = collections.OrderedDict((f"t.{DT[d]}", (x > 0) if d == torch.bool else x.to(d)) for d in DT)
save("dtypes.pt", dtypes, dtypes)

# views: transposed, sliced with a storage offset, a column (inner stride ≠ 1), expanded (stride 0),
# shared storages, a scalar, an empty tensor, an nn.Parameter, a 3-d permutation
base = torch.arange(0, 96, dtype=torch.float32).reshape(8, 12)
views = collections.OrderedDict()
views["transposed"] = base.t()
views["sliced"] = base[2:6, 3:9]
views["column"] = base[:, 5]
views["expanded"] = torch.tensor([1.5, -2.0, 3.25]).expand(4, 3)
views["shared_a"] = base
views["shared_b"] = base[1]
views["scalar"] = torch.tensor(7.5, dtype=torch.float16)
views["empty"] = base[3:3]
views["param"] = torch.nn.Parameter(torch.randn(2, 3, dtype=torch.bfloat16))
views["permuted"] = torch.randn(2, 3, 4).permute(2, 0, 1)[1:, :, ::2]
save("views.pt", views, views)
save("views-legacy.pt", views, views, _use_new_zipfile_serialization=False)

# a module's state_dict (an OrderedDict carrying _metadata, set by BUILD)
lin = torch.nn.Linear(4, 3)
msd = lin.state_dict()
save("module.pt", msd, msd)

# PEFT-style adapter (the same tensors go to safetensors on the TypeScript side)
peft = collections.OrderedDict()
for m in ["q_proj", "v_proj"]:
    a = torch.randn(4, 16)
    peft[f"base_model.model.model.layers.0.self_attn.{m}.lora_A.weight"] = a
    # B stored as a transposed view: torch.save keeps the strides
    peft[f"base_model.model.model.layers.0.self_attn.{m}.lora_B.weight"] = torch.randn(4, 24).t()
save("adapter_model.bin", peft, peft)
save("nested.pt", {"state_dict": peft, "epoch": 3, "config": {"lr": 1e-4}}, peft)
save("ambiguous.pt", {"model": peft, "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}}}, {})
save("list.pt", [torch.zeros(2), torch.ones(2)], {})
save("proto4.pt", views, views, pickle_protocol=4)

# the same checkpoint rewritten with deflated records
with zipfile.ZipFile(os.path.join(out, "views.pt")) as src, zipfile.ZipFile(os.path.join(out, "deflated.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
manifest["deflated.pt"] = manifest["views.pt"]
# and with 70,000 extra records, so that the end record needs zip64 (more than 65,535 entries)
with zipfile.ZipFile(os.path.join(out, "views.pt")) as src, zipfile.ZipFile(os.path.join(out, "zip64.pt"), "w") as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
    prefix = src.infolist()[0].filename.split("/")[0]
    for i in range(70000):
        dst.writestr(f"{prefix}/pad/{i}", b"")
manifest["zip64.pt"] = manifest["views.pt"]


# hostile pickles: each would create a marker file if it were ever run
def marker(tag):
    return os.path.join(out, f"EXECUTED-{tag}")


class SystemCall:
    def __reduce__(self):
        return (os.system, (f"touch {marker('system')}",))


class EvalCall:
    def __reduce__(self):
        return (eval, (f"open({marker('eval')!r}, 'w')",))


class OtherReduce:  # __reduce__ of some other class: a Counter built from a list
    def __reduce__(self):
        return (collections.Counter, (["a"],))


hostile = {
    "system.pt": {"w": torch.zeros(2), "x": SystemCall()},
    "eval.pt": {"w": torch.zeros(2), "x": EvalCall()},
    "other.pt": {"w": torch.zeros(2), "x": OtherReduce()},
}
for name, obj in hostile.items():
    torch.save(obj, os.path.join(out, name))
torch.save({"w": torch.zeros(2), "x": SystemCall()}, os.path.join(out, "system-legacy.pt"), _use_new_zipfile_serialization=False)


def zip_with(name, pkl):
    with zipfile.ZipFile(os.path.join(out, name), "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")


# STACK_GLOBAL (protocol 4) to os.system, and the protocol-0 INST and OBJ opcodes
zip_with("stack-global.pt", pickle.dumps(SystemCall(), protocol=4))
zip_with("inst.pt", b"(S'touch " + marker("inst").encode() + b"'\nios\nsystem\n.")
zip_with("obj.pt", b"(cos\nsystem\nS'touch " + marker("obj").encode() + b"'\no.")
zip_with("builtins-eval.pt", b"cbuiltins\neval\n(S'open(" + repr(marker("beval")).replace("'", '"').encode() + b", \"w\")'\ntR.")
json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"))
