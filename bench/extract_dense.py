#!/usr/bin/env python3
"""The dense extraction route (what kohya's extract_lora_from_models.py and mergekit's
extract-lora do), for bench/extract.ts: per weight, ΔW = tuned − base in float32, a full economy
SVD (numpy/LAPACK), the leading RANK triplets kept. Tensors are read one at a time from the
safetensors files (header offsets), so memory is not what is compared.

usage: extract_dense.py BASE TUNED RANK [REGEX]
prints one JSON object: per weight its shape, seconds of the SVD and relative error
‖ΔW − ΔW_r‖_F / ‖ΔW‖_F, and the total seconds (reading included).
"""
import json, os, re, struct, sys, time
import numpy as np


def shards(path):
    if os.path.isdir(os.path.join(path, "unet")):
        path = os.path.join(path, "unet")
    for stem in ("model", "diffusion_pytorch_model"):
        idx = os.path.join(path, stem + ".safetensors.index.json")
        if os.path.exists(idx):
            return [os.path.join(path, f) for f in sorted(set(json.load(open(idx))["weight_map"].values()))]
        if os.path.exists(os.path.join(path, stem + ".safetensors")):
            return [os.path.join(path, stem + ".safetensors")]
    return [path]


def index(path):
    out = {}
    for f in shards(path):
        with open(f, "rb") as h:
            n = struct.unpack("<Q", h.read(8))[0]
            head = json.loads(h.read(n))
        head.pop("__metadata__", None)
        for name, t in head.items():
            out[name] = (f, 8 + n + t["data_offsets"][0], t["data_offsets"][1] - t["data_offsets"][0], t["dtype"], t["shape"])
    return out


def load(entry):
    f, at, size, dt, shape = entry
    with open(f, "rb") as h:
        h.seek(at)
        raw = h.read(size)
    if dt == "BF16":
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.frombuffer(raw, dtype={"F32": "<f4", "F16": "<f2"}[dt]).astype(np.float32)
    return a.reshape(shape)


def main():
    base, tuned, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sel = re.compile(sys.argv[4]) if len(sys.argv) > 4 else None
    t0 = time.perf_counter()
    b, t = index(base), index(tuned)
    rows = []
    for name, e in b.items():
        if not name.endswith(".weight") or len(e[4]) not in (2, 4) or re.search(r"embed_tokens|wte|wpe", name):
            continue
        if sel and not sel.search(name[: -len(".weight")]):
            continue
        D = load(t[name]) - load(e)
        D = D.reshape(D.shape[0], -1)
        norm = float(np.linalg.norm(D))
        if norm == 0:
            continue
        s0 = time.perf_counter()
        U, S, Vh = np.linalg.svd(D, full_matrices=False)
        up, down = U[:, :rank] * S[:rank], Vh[:rank]
        secs = time.perf_counter() - s0
        err = float(np.sqrt(np.sum(S[rank:].astype(np.float64) ** 2))) / norm
        rows.append({"name": name[: -len(".weight")], "shape": list(D.shape), "svd_seconds": secs, "relative_error": err})
        del up, down, U, S, Vh, D
    print(json.dumps({"rank": rank, "weights": rows, "seconds": time.perf_counter() - t0}))


main()
