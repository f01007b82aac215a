#!/usr/bin/env python3
"""Independent float64 references for the extract/apply tests: numpy only, nothing from lora.
Reads safetensors models (single file, sharded index, diffusers unet/) and adapters (PEFT directory
with PEFT's rank_pattern/alpha_pattern rule, or a kohya file) on its own.

  model_reference.py extract BASE TUNED ADAPTER RANK
      per module of ADAPTER: ΔW = TUNED − BASE (out×in; Conv1D transposed), its dense SVD, and
      rel_to_opt = ‖ΔW_adapter − ΔW_r‖/‖ΔW_r‖ (ΔW_r the Eckart–Young optimum), err = ‖ΔW − ΔW_adapter‖,
      opt_err = ‖ΔW − ΔW_r‖; plus the target weights that changed but are not in the adapter.
  model_reference.py apply BASE OUT SCALE SIGN ADAPTER [PEFT_NPZ]
      W + SIGN·SCALE·ΔW per weight (ΔW from PEFT's own code when PEFT_NPZ is given) against OUT:
      worst |out − ref| / tol, tol = ulp_dtype(ref) + 8·r·eps32·Σ|s·B||A| (one rounding of the
      output dtype plus the float32 product), and whether every other tensor is byte-identical.
  model_reference.py delta-diff BASE ADAPTER1 ADAPTER2
      worst ‖ΔW₂ − ΔW₁‖/‖ΔW₁‖ over the weights either adapter changes (extract ∘ apply round trip).
  model_reference.py same BASE OUT SCALE ADAPTER
      worst |out − base| / ulp_dtype(|base| + |SCALE·ΔW|) over all tensors (apply then --subtract:
      two roundings of magnitude ≤ ½ulp each, plus the float32 products).
"""
import json, os, re, struct, sys
import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    meta = head.pop("__metadata__", None) or {}
    out = {}
    for name, t in head.items():
        b, e = t["data_offsets"]
        raw = data[b:e]
        if t["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, dtype=np.dtype(DT[t["dtype"]]).newbyteorder("<"))
        out[name] = (a.reshape(t["shape"]).astype(np.float64), t["dtype"], raw)
    return meta, out


def read_model(path):
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "unet")):
        path = os.path.join(path, "unet")
    if os.path.isfile(path):
        return read_st(path)[1]
    for stem in ("model", "diffusion_pytorch_model"):
        idx = os.path.join(path, stem + ".safetensors.index.json")
        if os.path.exists(idx):
            out = {}
            for f in sorted(set(json.load(open(idx))["weight_map"].values())):
                out.update(read_st(os.path.join(path, f))[1])
            return out
        if os.path.exists(os.path.join(path, stem + ".safetensors")):
            return read_st(os.path.join(path, stem + ".safetensors"))[1]
    raise SystemExit("no weights in " + path)


def pattern(p, name, default):
    for k, v in (p or {}).items():
        if re.match(r"(.*\.)?(%s)$" % k, name):
            return v
    return default


def read_adapter(path, model_names):
    """name → (weight name, scale, B (out×r), A (r×in), fan_in_fan_out)."""
    mods = {}
    if os.path.isdir(path):
        cfg = json.load(open(os.path.join(path, "adapter_config.json")))
        _, t = read_st(os.path.join(path, "adapter_model.safetensors"))
        for k in t:
            m = re.match(r"base_model\.model\.(.*)\.lora_A\.weight$", k)
            if not m:
                continue
            name = m.group(1)
            A = t[k][0]
            B = t["base_model.model." + name + ".lora_B.weight"][0]
            r = pattern(cfg.get("rank_pattern"), name, cfg["r"])
            alpha = pattern(cfg.get("alpha_pattern"), name, cfg["lora_alpha"])
            assert r == A.shape[0], (name, r, A.shape)
            s = alpha / (np.sqrt(r) if cfg.get("use_rslora") else r)
            mods[name] = (name + ".weight", s, B.reshape(B.shape[0], -1), A.reshape(A.shape[0], -1), bool(cfg.get("fan_in_fan_out")))
    else:
        meta, t = read_st(path)
        names = json.loads(meta.get("lora_module_names", "{}"))
        by_stem = {}
        for w in model_names:
            if w.endswith(".weight"):
                p = w[: -len(".weight")].replace(".", "_")
                by_stem["lora_unet_" + p] = w
                by_stem["lora_" + p] = w
        for k in t:
            if not k.endswith(".lora_down.weight"):
                continue
            stem = k[: -len(".lora_down.weight")]
            A = t[k][0]
            B = t[stem + ".lora_up.weight"][0]
            r = A.shape[0]
            alpha = float(t[stem + ".alpha"][0]) if stem + ".alpha" in t else r
            w = names[stem] + ".weight" if stem in names else by_stem[stem]
            mods[stem] = (w, alpha / r, B.reshape(B.shape[0], -1), A.reshape(r, -1), False)
    return mods


def as_out_in(W, fan_in_fan_out):
    return W.T if fan_in_fan_out and W.ndim == 2 else W.reshape(W.shape[0], -1)


def ulp(x, dtype):
    x = np.abs(x)
    if dtype == "F32":
        return np.spacing(x.astype(np.float32)).astype(np.float64)
    if dtype == "F16":
        return np.spacing(np.minimum(x, 65504).astype(np.float16)).astype(np.float64)
    # BF16: 8 significant bits
    m, e = np.frexp(np.maximum(x, 1e-38))
    return np.ldexp(1.0, e - 8)


def extract(base, tuned, adapter, rank):
    B0, T0 = read_model(base), read_model(tuned)
    mods = read_adapter(adapter, B0.keys())
    res, covered = [], set()
    for name, (w, s, B, A, fifo) in sorted(mods.items()):
        covered.add(w)
        D = as_out_in(T0[w][0] - B0[w][0], fifo)
        got = s * (B @ A)
        U, S, Vt = np.linalg.svd(D, full_matrices=False)
        r = A.shape[0]
        opt = (U[:, :r] * S[:r]) @ Vt[:r]
        res.append({"name": name, "weight": w, "rank": int(r), "rel_to_opt": float(np.linalg.norm(got - opt) / np.linalg.norm(opt)),
                    "err": float(np.linalg.norm(D - got)), "opt_err": float(np.sqrt(np.sum(S[r:] ** 2))), "norm": float(np.linalg.norm(D))})
    missing = sorted(w for w in B0 if w not in covered and w.endswith(".weight") and B0[w][0].ndim in (2, 4)
                     and not re.search(r"(embed_tokens|wte|wpe)\.weight$", w) and not np.array_equal(B0[w][0], T0[w][0]))
    print(json.dumps({"modules": res, "missing": missing}))


def apply(base, out, scale, sign, adapter, npz=None):
    B0, O = read_model(base), read_model(out)
    mods = read_adapter(adapter, B0.keys())
    peft = np.load(npz) if npz else None
    ref = {}
    for name, (w, s, B, A, fifo) in mods.items():
        d = (peft[name].astype(np.float64).reshape(B.shape[0], -1) if peft is not None else s * (B @ A))
        slack = 8 * A.shape[0] * 2.0 ** -24 * (np.abs(s * B) @ np.abs(A))
        W = B0[w][0]
        if fifo and W.ndim == 2:
            d, slack = d.T, slack.T
        prev = ref.get(w, (W.copy(), np.zeros(W.shape)))
        ref[w] = (prev[0] + sign * scale * d.reshape(W.shape), prev[1] + scale * slack.reshape(W.shape))
    worst, worst_name, others_same = 0.0, None, True
    for w, (o, dt, raw) in O.items():
        if w in ref:
            r, slack = ref[w]
            q = float(np.max(np.abs(o - r) / (ulp(r, dt) + slack)))
            if q > worst:
                worst, worst_name = q, w
        elif raw != B0[w][2]:
            others_same = False
    print(json.dumps({"worst": worst, "worst_weight": worst_name, "weights": len(ref), "others_identical": others_same,
                      "same_names": sorted(O) == sorted(B0)}))


def same(base, out, scale, adapter):
    B0, O = read_model(base), read_model(out)
    mods = read_adapter(adapter, B0.keys())
    size = {}
    for name, (w, s, B, A, fifo) in mods.items():
        d = np.abs(s * scale * (B @ A)) + 8 * A.shape[0] * 2.0 ** -24 * scale * (np.abs(s * B) @ np.abs(A))
        size[w] = size.get(w, 0) + (d.T if fifo and B0[w][0].ndim == 2 else d).reshape(B0[w][0].shape)
    worst = 0.0
    for w, (o, dt, _) in O.items():
        b = B0[w][0]
        d = size.get(w, 0)
        if o.size:
            worst = max(worst, float(np.max(np.abs(o - b) / ulp(np.abs(b) + d, dt))))
    print(json.dumps({"worst": worst}))


def delta_diff(base, a1, a2):
    """‖ΔW₂ − ΔW₁‖/‖ΔW₁‖ per weight (the two adapters' ΔW, in out×in)."""
    B0 = read_model(base)
    d = []
    for m in (read_adapter(a1, B0.keys()), read_adapter(a2, B0.keys())):
        acc = {}
        for name, (w, s, B, A, fifo) in m.items():
            acc[w] = acc.get(w, 0) + s * (B @ A)
        d.append(acc)
    worst = max(float(np.linalg.norm(d[1].get(w, 0) - d[0][w]) / np.linalg.norm(d[0][w])) for w in set(d[0]) | set(d[1]))
    print(json.dumps({"worst": worst, "weights": [len(d[0]), len(d[1])]}))


if __name__ == "__main__":
    cmd, *a = sys.argv[1:]
    if cmd == "extract":
        extract(a[0], a[1], a[2], int(a[3]))
    elif cmd == "apply":
        apply(a[0], a[1], float(a[2]), float(a[3]), a[4], a[5] if len(a) > 5 else None)
    elif cmd == "delta-diff":
        delta_diff(a[0], a[1], a[2])
    else:
        same(a[0], a[1], float(a[2]), a[3])
