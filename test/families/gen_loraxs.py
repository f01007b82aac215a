#!/usr/bin/env python3
"""Write a LoRA-XS adapter with LoRA-XS's own code (MohammadrezaBanaei/LoRA-XS
utils/initialization_utils.py find_and_initialize, utils/latent_utils.py get_delta_weight) on PEFT:
a bare model of Linear layers, get_peft_model, LoRA-XS's initialisation (A, B from the truncated
SVD of W, a trainable r×r latent), the latent given random values as training would, then PEFT's
save_pretrained, which writes the latent as `<module>_lora_latent_mapping.weight`. Each layer's ΔW
from LoRA-XS's get_delta_weight goes to ref_delta.npz. Offline: transformers/accelerate/hub are the
stand-ins of ../shared/tools/peft-check, and sklearn's TruncatedSVD (not installed here) is a numpy
stand-in with the same fit/transform/components_ interface (it only sets the frozen A and B, which
the file stores).

usage: /usr/bin/python3 gen_loraxs.py LORA_XS_CHECKOUT PEFT_SRC PEFT_CHECK_DIR OUT_DIR SEED"""
import json, os, sys, types, warnings
src, peft_src, check_dir, out, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sys.path.insert(0, os.path.join(check_dir, "stubs"))
sys.path.insert(0, check_dir)
import _autostub  # noqa: F401,E402
sys.path.insert(0, peft_src)
sys.path.insert(0, src)
warnings.filterwarnings("ignore")
import numpy as np  # noqa: E402
import torch  # noqa: E402


class TruncatedSVD:  # numpy stand-in for sklearn.decomposition.TruncatedSVD
    def __init__(self, n_components, n_iter=5, random_state=None):
        self.k = n_components

    def fit(self, X):
        _, s, vt = np.linalg.svd(X, full_matrices=False)
        self.components_, self.s = vt[: self.k], s[: self.k]
        return self

    def transform(self, X):
        return X @ self.components_.T

    def inverse_transform(self, Z):
        return Z @ self.components_


sk = types.ModuleType("sklearn")
sk.decomposition = types.ModuleType("sklearn.decomposition")
sk.decomposition.TruncatedSVD = TruncatedSVD
sys.modules["sklearn"], sys.modules["sklearn.decomposition"] = sk, sk.decomposition
from peft import LoraConfig, get_peft_model  # noqa: E402
from utils.initialization_utils import find_and_initialize  # noqa: E402

torch.manual_seed(seed)


class Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(16, 16, bias=False)
        self.v_proj = torch.nn.Linear(16, 12, bias=False)


class Base(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Attn() for _ in range(2)])

    def prepare_inputs_for_generation(self, *a, **k):
        return {}


r = 4
model = get_peft_model(Base(), LoraConfig(r=r, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
rc = {"half_init_dec": False, "replacement_module_random_init": False, "reconstr_mode": "separated", "r_squared": True, "svd": {"rank": r, "n_iter": 10, "random_state": 42}}
find_and_initialize(model, model.peft_config, adapter_name="default", reconstr_type="svd", reconstruct_config=rc, writer=None)
ref = {}
with torch.no_grad():
    for n, m in model.named_modules():
        if hasattr(m, "default_lora_latent_mapping"):
            m.default_lora_latent_mapping.weight.copy_(torch.randn(r, r))
            ref[n.split("base_model.model.", 1)[-1]] = m.get_delta_weight("default").detach().double().numpy()
model.create_or_update_model_card = lambda *a, **k: None  # the hub stand-in has no model cards
model.save_pretrained(out, safe_serialization=True)
np.savez(os.path.join(out, "ref_delta.npz"), **ref)
print(json.dumps(sorted(ref)))
