"""Compare diffusers-check's ΔW (.npz, module path -> float64 array in the weight's shape) with the
ΔW a test meant (a safetensors file of F64 tensors [out, in·kh·kw] named by module path).
Prints JSON {only_diffusers, only_expected, max_rel, worst}. numpy only."""
import json
import sys

import numpy as np

from model_reference import read_st  # beside this file: the safetensors reader of the numpy references


def main():
    got = np.load(sys.argv[1])
    want = {k: v for k, (v, _, _) in read_st(sys.argv[2])[1].items()}
    names = set(got.files)
    res = {"only_diffusers": sorted(names - set(want)), "only_expected": sorted(set(want) - names), "max_rel": 0.0, "worst": ""}
    for k in sorted(names & set(want)):
        g = got[k].reshape(got[k].shape[0], -1)
        w = want[k]
        if g.shape != w.shape:
            res["max_rel"], res["worst"] = float("inf"), f"{k} (shape {g.shape} vs {w.shape})"
            continue
        rel = float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-300))
        if rel > res["max_rel"]:
            res["max_rel"], res["worst"] = rel, k
    print(json.dumps(res))


main()
