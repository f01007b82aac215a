#!/usr/bin/env python3
"""Write an AdaLoRA adapter with PEFT's own code (AdaLoraModel, RankAllocator.mask_to_budget,
save_pretrained): a bare torch model of Linear layers, a few training steps with random data so the
allocator has importance scores, the final budget allocation, then save. Offline: transformers,
accelerate and the hub are the stand-ins of ../shared/tools/peft-check.

usage: /usr/bin/python3 gen_adalora.py PEFT_SRC PEFT_CHECK_DIR OUT_DIR SEED"""
import os, sys, warnings
peft_src, check_dir, out, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, os.path.join(check_dir, "stubs"))
sys.path.insert(0, check_dir)
import _autostub  # noqa: F401,E402
sys.path.insert(0, peft_src)
warnings.filterwarnings("ignore")
import torch  # noqa: E402
from peft import AdaLoraConfig, get_peft_model  # noqa: E402

torch.manual_seed(seed)


class Attn(torch.nn.Module):
    def __init__(self, d, o):
        super().__init__()
        self.q_proj = torch.nn.Linear(d, d, bias=False)
        self.v_proj = torch.nn.Linear(d, o, bias=False)


class Base(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Attn(24, 20) for _ in range(3)])

    def forward(self, x):
        y = 0
        for l in self.layers:
            y = y + l.q_proj(x).sum() + l.v_proj(x).sum()
        return y

    def prepare_inputs_for_generation(self, *a, **k):
        return {}


total = 20
cfg = AdaLoraConfig(init_r=6, target_r=3, lora_alpha=12, tinit=2, tfinal=4, deltaT=1, total_step=total, target_modules=["q_proj", "v_proj"])
model = get_peft_model(Base(), cfg)
with torch.no_grad():  # E starts at zero and B at zero: give every triplet a value to rank
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.copy_(torch.randn_like(p))
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
for step in range(total):
    x = torch.randn(4, 24)
    loss = (model(x) ** 2) * 1e-4
    loss.backward()
    opt.step()
    model.base_model.update_and_allocate(step)  # after the step, as PEFT's AdaLoRA docs order it
    opt.zero_grad()
model.create_or_update_model_card = lambda *a, **k: None  # the hub stand-in has no model cards
model.save_pretrained(out, safe_serialization=True)
print(sum(sum(v) for v in model.peft_config["default"].rank_pattern.values()))
# PEFT's own ΔW of every AdaLoRA layer (SVDLinear.get_delta_weight, after the in-place E masking):
# the reference the test compares `lora` with.
import numpy as np  # noqa: E402
from peft.tuners.adalora import AdaLoraLayer  # noqa: E402

ref = {}
for n, m in model.named_modules():
    if isinstance(m, AdaLoraLayer) and "default" in m.lora_A:
        ref[n.split("base_model.model.", 1)[-1]] = m.get_delta_weight("default").detach().double().numpy()
np.savez(os.path.join(out, "peft_delta.npz"), **ref)
