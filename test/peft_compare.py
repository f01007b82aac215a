#!/usr/bin/env python3
"""Compare PEFT's ΔW (an .npz written by ../shared/tools/peft-check/peft_load.py) with the ΔW the
tool intended: s·B@A from the adapter's factors, with s per module as `lora inspect --json` reports.
usage: peft_compare.py ADAPTER_DIR PEFT.npz INSPECT.json  → prints {"modules": n, "max_rel": x}"""
import json, sys, os
import numpy as np
sys.path.insert(0, os.environ.get("PEFT_CHECK_DIR", ""))
import st_numpy  # noqa: E402

adapter, npz, insp = sys.argv[1:4]
peft = np.load(npz)
rep = json.load(open(insp))
_, t = st_numpy.read_st(os.path.join(adapter, "adapter_model.safetensors"))
worst, n = 0.0, 0
for m in rep["modules"]:
    name = m["name"]
    base = "base_model.model." + name
    if base + ".lora_A.weight" in t:
        A, B = t[base + ".lora_A.weight"][0], t[base + ".lora_B.weight"][0]
    else:
        A, B = t[base + ".lora_embedding_A"][0], t[base + ".lora_embedding_B"][0]
    A = A.astype(np.float64).reshape(A.shape[0], -1)
    B = B.astype(np.float64).reshape(B.shape[0], -1)
    want = m["scale"] * (B @ A)
    got = peft[name].reshape(want.shape)
    rel = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)
    worst = max(worst, float(rel))
    n += 1
missing = sorted(set(peft.files) - {m["name"] for m in rep["modules"]})
print(json.dumps({"modules": n, "max_rel": worst, "peft_extra": missing}))
