#!/usr/bin/env python3
"""Write an IncreLoRA checkpoint with IncreLoRA's own layer (FeiyuZhang98/IncreLoRA
loralib/loralib/increlora.py SVDLinear, add_reserve_param, loraW): modules grown by reserve chunks
as its RankAllocator does (ranknum += add_r, new chunks appended), the model's state_dict saved as
safetensors (IncreLoRA's trainer saves the same keys in pytorch_model.bin) with a config.json that
carries lora_alpha, and each layer's ΔW from loraW (the layer's own formula) in ref_delta.npz.

usage: /usr/bin/python3 gen_increlora.py INCRELORA_CHECKOUT PEFT_CHECK_DIR OUT_DIR SEED"""
import json, os, sys, types
src, check_dir, out, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.modules["ipdb"] = types.ModuleType("ipdb")  # imported at the top of increlora.py, used only on errors
sys.path.insert(0, os.path.join(src, "loralib"))
sys.path.insert(0, check_dir)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from loralib.increlora import SVDLinear  # noqa: E402
import st_numpy  # noqa: E402

torch.manual_seed(seed)
alpha = 16
model = torch.nn.Module()
layers = {"encoder.layer.0.attention.self.query_proj": (12, 10), "encoder.layer.1.attention.self.value_proj": (8, 10)}
mods = {}
for name, (o, i) in layers.items():
    m = SVDLinear(i, o, r=2, lora_alpha=alpha, merge_weights=False)
    parent = model
    for p in name.split(".")[:-1]:
        if not hasattr(parent, p):
            parent.add_module(p, torch.nn.Module())
        parent = getattr(parent, p)
    parent.add_module(name.split(".")[-1], m)
    mods[name] = m
with torch.no_grad():
    # step 0: every module gets add_r reserve chunks (RankAllocator); module 1 is then picked twice.
    for m in mods.values():
        m.add_reserve_param(1, advance_learn=True)
    m1 = mods["encoder.layer.1.attention.self.value_proj"]
    for _ in range(2):
        m1.ranknum += 1
        m1.add_reserve_param(1, advance_learn=True)
    for m in mods.values():
        for e in m.lora_E:
            e.copy_(torch.randn_like(e))
        m.lora_E[-1].zero_()  # target reached: the last add_r chunks are zeroed
        for p in list(m.lora_A) + list(m.lora_B):
            p.copy_(torch.randn_like(p))
os.makedirs(out, exist_ok=True)
sd = model.state_dict()
st_numpy.write_st(os.path.join(out, "model.safetensors"), {k: (v.detach().numpy(), "F32") for k, v in sd.items()})
json.dump({"apply_lora": True, "lora_type": "svd", "lora_alpha": alpha, "lora_r": 2}, open(os.path.join(out, "config.json"), "w"))
ref = {n: m.W(m.lora_A, m.lora_E, m.lora_B, m.scaling, m.ranknum).detach().double().numpy() for n, m in mods.items()}
np.savez(os.path.join(out, "ref_delta.npz"), **ref)
print(json.dumps(sorted(sd)))
