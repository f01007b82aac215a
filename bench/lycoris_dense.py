#!/usr/bin/env python3
"""Baseline for bench/lycoris.ts (not a test): the route the usual tools take to resize a LyCORIS
module (kohya resize_lora.py-style): form the dense ΔW in float32 by LyCORIS's formula, full SVD
(numpy), keep RANK. usage: lycoris_dense.py FILE RANK STEM [STEM ...]; prints one JSON object: per
stem the seconds (ΔW + SVD + factors) and the relative error ‖ΔW − ΔW_k‖/‖ΔW‖ (from the spectrum)."""
import json, struct, sys, time
import os
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from truncate_baseline import load, read_header  # noqa: E402  (the one safetensors reader of the benches)


def tensors(path):
    base, h = read_header(path)
    return h, lambda key: load(path, base, h, key)


def main():
    path, rank, stems = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    h, load = tensors(path)
    out = {}
    for stem in stems:
        t0 = time.perf_counter()
        has = lambda p: f"{stem}.{p}" in h
        g = lambda p: load(f"{stem}.{p}")
        alpha = float(g("alpha").reshape(-1)[0]) if has("alpha") else None
        if has("hada_w1_a"):
            r = g("hada_w1_b").shape[0]
            s = (alpha or r) / r
            dw = (g("hada_w1_a") @ g("hada_w1_b").reshape(r, -1)) * (g("hada_w2_a") @ g("hada_w2_b").reshape(r, -1)) * s
        else:
            w1 = g("lokr_w1") if has("lokr_w1") else g("lokr_w1_a") @ g("lokr_w1_b")
            if has("lokr_w2"):
                w2 = g("lokr_w2")
                dim = g("lokr_w1_b").shape[0] if has("lokr_w1_b") else None
            else:
                w2 = g("lokr_w2_a") @ g("lokr_w2_b").reshape(g("lokr_w2_b").shape[0], -1)
                dim = g("lokr_w1_b").shape[0] if has("lokr_w1_b") else g("lokr_w2_b").shape[0]
            s = 1.0 if dim is None else (alpha or dim) / dim
            dw = np.kron(w1, w2.reshape(w2.shape[0], -1)) * s
        U, S, Vt = np.linalg.svd(dw, full_matrices=False)
        up, down = U[:, :rank] * S[:rank], Vt[:rank]
        sec = time.perf_counter() - t0
        S64 = S.astype(np.float64)
        out[stem] = {"seconds": sec, "relative_error": float(np.sqrt((S64[rank:] ** 2).sum() / (S64**2).sum())), "shape": list(dw.shape)}
        del up, down, dw, U, Vt
    print(json.dumps(out))


if __name__ == "__main__":
    main()
