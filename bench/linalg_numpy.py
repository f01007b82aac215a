#!/usr/bin/env python3
"""numpy side of bench/linalg.ts (not a test).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/linalg_numpy.py SPEC.json OUT.json [ID,ID…]

SPEC.json (written by bench/linalg.ts) lists the cases; each names raw little-endian input files
in the same directory, so both sides time the same data. Every case is timed as the best of
`runs` after one warm-up. OUT.json gets {"config": {...}, "results": {case id: seconds}, "checks": {...}}.

k-means is the same Lloyd iteration as the native backends, written the way one would in numpy:
distances from one GEMM (‖x‖² + ‖c‖² − 2 X Cᵀ), argmin, and the weighted centroid sums as a
second GEMM with the one-hot label matrix; an empty cluster keeps its centroid; the same initial
centroids and the same number of iterations (tol < 0, so it never stops early).
"""
import ctypes
import glob
import json
import os
import sys
import time

import numpy as np


def blas_config():
    cfg = {"numpy": np.__version__}
    try:  # threadpoolctl, when installed, knows the library and its core type
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            i = info[0]
            cfg.update(library=i.get("internal_api"), version=i.get("version"), coretype=i.get("architecture"),
                       threads=i.get("num_threads"), source="threadpoolctl")
            return cfg
    except Exception:
        pass
    # Otherwise ask the OpenBLAS numpy bundles directly (scipy-openblas, ILP64 symbols with suffix 64_).
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                try:
                    get_config = getattr(lib, f"{prefix}get_config{suffix}")
                    get_config.restype = ctypes.c_char_p
                    cfg["config"] = get_config().decode()
                    try:
                        core = getattr(lib, f"{prefix}get_corename{suffix}")
                        core.restype = ctypes.c_char_p
                        cfg["coretype"] = core().decode()
                    except AttributeError:
                        pass
                    try:
                        cfg["threads"] = getattr(lib, f"{prefix}get_num_threads{suffix}")()
                    except AttributeError:
                        pass
                    cfg["library"] = os.path.basename(path)
                    cfg["source"] = "ctypes"
                    return cfg
                except AttributeError:
                    continue
    cfg["config"] = "unknown (no threadpoolctl, no bundled OpenBLAS found)"
    return cfg


def load(d, f, dtype, shape):
    return np.fromfile(os.path.join(d, f), dtype=dtype).reshape(shape)


def lloyd(x, init, iters):
    c = init.copy()
    n, k = x.shape[0], c.shape[0]
    xx = np.einsum("ij,ij->i", x, x)
    onehot = np.zeros((k, n))
    rows = np.arange(n)
    labels = None

    def assign(c):
        cc = np.einsum("ij,ij->i", c, c)
        dist = xx[:, None] + cc[None, :] - 2.0 * (x @ c.T)
        return dist.argmin(axis=1)

    for _ in range(iters):
        labels = assign(c)
        onehot.fill(0)
        onehot[labels, rows] = 1.0
        wsum = onehot.sum(axis=1)
        sums = onehot @ x
        nxt = np.where(wsum[:, None] > 0, sums / np.maximum(wsum, 1e-300)[:, None], c)
        # shift, as the native code computes it (used only to stop; tol < 0 never stops)
        _ = float(((nxt - c) ** 2).sum())
        c = nxt
    labels = assign(c)
    inertia = float(((x - c[labels]) ** 2).sum())
    return c, labels, inertia


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    only = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
    spec = json.load(open(spec_path))
    d = os.path.dirname(os.path.abspath(spec_path))
    results, checks = {}, {}
    for case in spec["cases"]:
        if only is not None and case["id"] not in only:
            continue
        dt = np.float32 if case["dtype"] == "f32" else np.float64
        op, runs = case["op"], case["runs"]
        if op == "gemm":
            a = load(d, case["a"], dt, case["aShape"])
            b = load(d, case["b"], dt, case["bShape"])
            fn = lambda: a @ b
        elif op == "qr":
            a = load(d, case["a"], dt, case["aShape"])
            fn = lambda: np.linalg.qr(a, mode="reduced")
        elif op == "svd":
            a = load(d, case["a"], dt, case["aShape"])
            fn = lambda: np.linalg.svd(a, full_matrices=False)
        elif op == "eigSym":
            a = load(d, case["a"], dt, case["aShape"])
            fn = lambda: np.linalg.eigh(a, UPLO="L")
        elif op == "kmeans":
            x = load(d, case["a"], np.float64, case["aShape"])
            init = load(d, case["b"], np.float64, case["bShape"])
            iters = case["iters"]
            fn = lambda: lloyd(x, init, iters)
        else:
            raise ValueError(op)
        out = fn()  # warm-up
        if op == "kmeans":
            checks[case["id"]] = {"inertia": out[2], "labels": out[1].astype(int).tolist()}
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        results[case["id"]] = best
    json.dump({"config": blas_config(), "results": results, "checks": checks}, open(out_path, "w"))


if __name__ == "__main__":
    main()
