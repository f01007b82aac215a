#!/usr/bin/env python3
"""Baselines for bench/truncate.ts (not a test): what kohya's resize_lora.py does per module.

usage: truncate_baseline.py ADAPTER.safetensors RANK MODE NAME [NAME ...]
  MODE dense    dense ΔW = scale·B@A in float32, full SVD (numpy, as resize_lora.py's torch.linalg.svd),
                keep RANK (up = U·S, down = Vᵀ)
  MODE lowrank  dense ΔW in float32, torch.svd_lowrank(ΔW, q=RANK+10, niter=2) (newer kohya's fast path)
NAME: PEFT module paths (base_model.model.<NAME>.lora_A.weight). Prints one JSON object: per module
the seconds (ΔW + SVD + factors) and the relative error of the rank-RANK result against the exact
optimum computed from the factors (QR of B and Aᵀ, SVD of the r×r core, float64)."""
import json, os, struct, sys, time
import numpy as np


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    return 8 + n, h


def load(path, base, h, key):
    v = h[key]
    s, e = v["data_offsets"]
    dt = {"F16": np.float16, "F32": np.float32, "BF16": np.uint16}[v["dtype"]]
    a = np.fromfile(path, dtype=dt, count=(e - s) // np.dtype(dt).itemsize, offset=base + s)
    if v["dtype"] == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.reshape(v["shape"]).astype(np.float32)  # kohya: .to(torch.float)


def optimum(B, A, scale, rank):
    """Exact σ of scale·B@A from the factors (float64)."""
    qb, rb = np.linalg.qr(B.astype(np.float64))
    qa, ra = np.linalg.qr(A.T.astype(np.float64))
    s = np.linalg.svd(scale * rb @ ra.T, compute_uv=False)
    return float(np.sqrt(np.sum(s[rank:] ** 2)) / np.sqrt(np.sum(s ** 2)))


def main():
    path, rank, mode, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    base, h = read_header(path)
    cfg = json.loads(h.get("__metadata__", {}).get("adapter_config", "null") or "null")
    out = {"mode": mode, "modules": []}
    torch = None
    if mode == "lowrank":
        import torch  # noqa: F811
        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count() or 1)  # Debian's build starts with 1 OpenMP thread
        out["torch"] = torch.__version__
        out["threads"] = torch.get_num_threads()
    out["numpy"] = np.__version__
    for name in names:
        B = load(path, base, h, f"base_model.model.{name}.lora_B.weight")
        A = load(path, base, h, f"base_model.model.{name}.lora_A.weight")
        r = A.shape[0]
        scale = (cfg["lora_alpha"] / r) if cfg else 1.0
        t0 = time.perf_counter()
        if mode == "dense":
            W = (B @ A) * np.float32(scale)
            U, S, Vt = np.linalg.svd(W, full_matrices=False)
            up = U[:, :rank] * S[:rank]
            down = Vt[:rank]
        else:
            Bt, At = torch.from_numpy(B), torch.from_numpy(A)
            W = (Bt @ At) * scale
            U, S, V = torch.svd_lowrank(W, q=rank + 10, niter=2)
            up = (U[:, :rank] * S[:rank]).numpy()
            down = V[:, :rank].T.numpy()
            W = W.numpy()
        secs = time.perf_counter() - t0
        err = float(np.linalg.norm(W.astype(np.float64) - up.astype(np.float64) @ down.astype(np.float64)) / np.linalg.norm(W.astype(np.float64)))
        out["modules"].append({"name": name, "shape": list(W.shape), "seconds": secs, "relative_error": err, "optimal_error": optimum(B, A, scale, rank)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
