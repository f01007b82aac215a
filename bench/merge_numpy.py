#!/usr/bin/env python3
"""numpy reference routes for bench/merge.ts (not a test; numpy only, no sklearn needed).

lego  DIR...   LoRA-LEGO per module with scikit-learn's k-means settings reimplemented in numpy:
               greedy k-means++ (2 + int(ln k) local trials, candidates drawn ∝ w·D², norm-trick
               distances as sklearn's _euclidean_distances), n_init restarts keeping the lowest
               inertia, Lloyd with tol × mean feature variance, sample weights 1/N; then the dual
               reweighting (L∞ cluster-norm, √(r_ref/k)). Prints per-module inertia and timings.
svd   DIR...   the dense route PEFT's add_weighted_adapter(svd) takes: ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ formed
               densely, then a full SVD (np.linalg.svd, full_matrices as PEFT's default True unless
               --economy), truncated to K. Times the modules named by --modules.
Output: one JSON document on stdout.
"""
import argparse, json, os, struct, sys, time
import numpy as np


def read_st(path):
    """{name: (array, dtype)} of a safetensors file, F32/F16/BF16/F64 decoded to float arrays."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for k, v in header.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            f.seek(base + s)
            raw = f.read(e - s)
            if v["dtype"] == "BF16":
                a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, {"F64": np.float64, "F32": np.float32, "F16": np.float16}[v["dtype"]])
            out[k] = a.reshape(v["shape"])
        return out


def load_adapter(d):
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    t = read_st(os.path.join(d, "adapter_model.safetensors"))
    mods = {}
    for k in t:
        if k.endswith(".lora_A.weight"):
            name = k[len("base_model.model."):-len(".lora_A.weight")]
            A = t[k].astype(np.float64)
            B = t[k.replace("lora_A", "lora_B")].astype(np.float64)
            r = A.shape[0]
            alpha = cfg["lora_alpha"]
            s = alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r
            mods[name] = (B, A, s)
    return mods


def kmeans_pp(X, k, rs, w, xsq):
    n = X.shape[0]
    trials = 2 + int(np.log(k))
    first = rs.choice(n, p=w / w.sum())
    centers = [first]
    closest = np.maximum(xsq + xsq[first] - 2 * (X @ X[first]), 0)
    closest[first] = 0
    pot = closest @ w
    for _ in range(1, k):
        vals = rs.uniform(size=trials) * pot
        ids = np.clip(np.searchsorted(np.cumsum(w * closest), vals), None, n - 1)
        d = np.maximum(xsq[None, :] + xsq[ids, None] - 2 * (X[ids] @ X.T), 0)
        np.minimum(closest, d, out=d)
        pots = d @ w
        b = int(np.argmin(pots))
        pot, closest = pots[b], d[b]
        centers.append(ids[b])
    return X[centers].copy()


def lloyd(X, C, w, max_iter, tol, xsq):
    k = C.shape[0]
    for it in range(max_iter):
        D = xsq[:, None] + (C * C).sum(1)[None, :] - 2 * (X @ C.T)
        lab = D.argmin(1)
        M = np.zeros((X.shape[0], k))
        M[np.arange(X.shape[0]), lab] = w
        ws = M.sum(0)
        newC = C.copy()
        nz = ws > 0
        newC[nz] = (M.T @ X)[nz] / ws[nz, None]
        shift = ((newC - C) ** 2).sum()
        C = newC
        if shift <= tol:
            break
    D = xsq[:, None] + (C * C).sum(1)[None, :] - 2 * (X @ C.T)
    lab = D.argmin(1)
    inertia = float((w * np.maximum(D[np.arange(X.shape[0]), lab], 0)).sum())
    return C, lab, inertia, it + 1


def lego_module(terms, k, n_init, max_iter, tol, seed):
    X = np.vstack([np.hstack([np.sqrt(s) * A, np.sqrt(s) * B.T]) for (B, A, s, _) in terms])
    w = np.concatenate([np.full(A.shape[0], wt) for (_, A, _, wt) in terms])
    xsq = (X * X).sum(1)
    tol_abs = np.mean(np.var(X, axis=0)) * tol
    rs = np.random.RandomState(seed)
    best = None
    for _ in range(n_init):
        C0 = kmeans_pp(X, k, rs, w, xsq)
        C, lab, inertia, iters = lloyd(X, C0, w, max_iter, tol_abs, xsq)
        if best is None or inertia < best[2]:
            best = (C, lab, inertia, iters)
    C, lab, inertia, iters = best
    for c in range(k):
        m = lab == c
        if m.any():
            tgt = (w[m] * np.abs(X[m]).max(1)).sum() / w[m].sum()
            C[c] *= tgt / max(np.abs(C[c]).max(), 1e-12)
    rref = np.mean([A.shape[0] for (_, A, _, _) in terms])
    inn = terms[0][1].shape[1]
    f = (rref / k) ** 0.25
    return f * C[:, inn:].T, f * C[:, :inn], inertia, iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["lego", "svd"])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modules", default="")
    ap.add_argument("--economy", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    adapters = [load_adapter(d) for d in a.dirs]
    load_s = time.perf_counter() - t0
    N = len(adapters)
    res = {"numpy": np.__version__, "load_s": load_s, "modules": {}}
    if a.mode == "lego":
        total = 0.0
        for name in adapters[0]:
            terms = [(ad[name][0], ad[name][1], ad[name][2], 1.0 / N) for ad in adapters]
            t1 = time.perf_counter()
            _, _, inertia, iters = lego_module(terms, a.k, a.n_init, a.max_iter, a.tol, a.seed)
            dt = time.perf_counter() - t1
            total += dt
            res["modules"][name] = {"inertia": inertia, "iterations": iters, "seconds": dt}
        res["cluster_s"] = total
    else:
        for name in a.modules.split(","):
            t1 = time.perf_counter()
            dW = sum((1.0 / N) * ad[name][2] * (ad[name][0] @ ad[name][1]) for ad in adapters)
            t2 = time.perf_counter()
            U, S, Vh = np.linalg.svd(dW, full_matrices=not a.economy)
            B, A = U[:, :a.k] * S[:a.k], Vh[:a.k]
            t3 = time.perf_counter()
            res["modules"][name] = {"shape": list(dW.shape), "form_s": t2 - t1, "svd_s": t3 - t2, "sigma": S[:a.k].tolist()}
    res["total_s"] = time.perf_counter() - t0
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
