"""BASED models of the released shapes with random weights, built in memory,
and the model-level correctness gate (based_core vs the PyTorch reference).

Writing a 1b checkpoint with numpy takes ~1 min and 2.7 GB of disk, so the
weights are drawn with torch on the device (seconds), copied to host memory and
handed to NativeModel.from_weights: the same loader checks, no files.
The draw follows testing.random_state_dict's documented recipe (projections
N(0, 1/fan_in), output projections halved, norms 1 + N(0, 0.1^2), ln_f with
random signs, conv taps N(0, 0.5^2), biases N(0, 0.1^2), embedding N(0, 4/d)),
so activations stay O(1) and greedy decoding does not lock onto one token.
"""

from __future__ import annotations

import json
import math
from typing import Dict, List

import numpy as np
import torch

import common  # noqa: F401  (puts based_core on the path)
import based_core
from based_core import _core, testing
from based_core.reference import ReferenceModel

EMB, HEAD = testing.EMB_KEY, testing.HEAD_KEY

# SPEC.md 1.2 / 1.3: the real layer lists.
SHAPES = {
    "based-360m": dict(d=1024, n_layer=27, la=[1, 6, 11, 16, 21], swa=[2, 7, 12, 17, 22]),
    "based-1b": dict(d=1792, n_layer=36, la=[1, 6, 11, 16, 21, 27, 33], swa=[2, 7, 12, 17, 22, 28, 34]),
    # dry runs on the CPU: the same code paths at toy size
    "tiny": dict(d=128, n_layer=6, la=[1, 4], swa=[2, 5]),
}
# PERFORMANCE.md 1b: bytes per decode step = weights + B * S (S = one sequence's
# state read + written, SWA window read, conv tails).
DECODE_BYTES = {"based-360m": (725e6, 14.3e6), "based-1b": (2699e6, 34.7e6)}


def config(name: str) -> Dict:
    s = SHAPES[name]
    kinds = ["swa" if i in s["swa"] else "la" if i in s["la"] else "conv" for i in range(s["n_layer"])]
    tiny = name == "tiny"
    return testing.make_config(d_model=s["d"], n_head=2 if tiny else 16, layer_kinds=kinds,
                               window_size=32 if tiny else 256, feature_dim=16, la_heads=2 if tiny else 16,
                               vocab_size=1000 if tiny else 50257, l_max=2048)


def n_params(cfg: Dict) -> int:
    """Parameter count (tied embedding once), from the weight shapes."""
    return sum(int(np.prod(shape)) for k, shape in weight_shapes(cfg).items() if k != HEAD)


def weight_shapes(cfg: Dict) -> Dict[str, tuple]:
    d, hid = int(cfg["n_embd"]), int(cfg["n_inner"])
    mult = int(cfg["pad_vocab_size_multiple"])
    v_pad = -(-int(cfg["vocab_size"]) // mult) * mult
    la = cfg["alt_mixer"]
    hf = int(la["num_heads"]) * int(la["feature_dim"])
    out = {EMB: (v_pad, d), HEAD: (v_pad, d), "transformer.ln_f.weight": (d,)}
    swa, las = set(cfg["alt_mixer_2_layers"]), set(cfg["alt_mixer_layers"])
    for i in range(int(cfg["n_layer"])):
        p = f"transformer.layers.{i}."
        out[p + "norm1.weight"] = (d,)
        out[p + "norm2.weight"] = (d,)
        out[p + "mlp.fc1.weight"] = (2 * hid, d)
        out[p + "mlp.fc2.weight"] = (d, hid)
        if i in swa:
            out[p + "mixer.Wqkv.weight"] = (3 * d, d)
            out[p + "mixer.out_proj.weight"] = (d, d)
        elif i in las:
            out[p + "mixer.proj_q.weight"] = (hf, d)
            out[p + "mixer.proj_k.weight"] = (hf, d)
            out[p + "mixer.proj_v.weight"] = (d, d)
            out[p + "mixer.out_proj.weight"] = (d, d)
        else:
            out[p + "mixer.in_proj.weight"] = (4 * d, d)
            out[p + "mixer.in_proj.bias"] = (4 * d,)
            out[p + "mixer.conv.conv.weight"] = (2 * d, 1, 3)
            out[p + "mixer.out_proj.weight"] = (d, 2 * d)
            out[p + "mixer.out_proj.bias"] = (d,)
    return out


def random_weights(cfg: Dict, device: str, dtype=torch.bfloat16, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)

    def normal(shape, mean=0.0, std=1.0):
        t = torch.randn(shape, generator=g, device=device, dtype=torch.float32)
        return (t.mul_(std).add_(mean)).to(dtype)

    w: Dict[str, torch.Tensor] = {}
    for k, shape in weight_shapes(cfg).items():
        if k == HEAD:
            continue
        if k == EMB:
            w[k] = normal(shape, std=2.0 / math.sqrt(shape[1]))
        elif k == "transformer.ln_f.weight":
            sign = torch.randint(0, 2, shape, generator=g, device=device).float() * 2 - 1
            w[k] = (normal(shape, 1.0, 0.1).float() * sign).to(dtype)
        elif "norm" in k:
            w[k] = normal(shape, 1.0, 0.1)
        elif k.endswith("conv.conv.weight"):
            w[k] = normal(shape, std=0.5)
        elif k.endswith(".bias"):
            w[k] = normal(shape, std=0.1)
        else:
            gain = 0.5 if ("out_proj" in k or "fc2" in k) else 1.0
            w[k] = normal(shape, std=gain / math.sqrt(shape[1]))
    w[HEAD] = w[EMB]  # tied: one tensor under both names
    return w


def build(name: str, device: str, seed: int = 0):
    """(based_core.Model, config dict, weights on `device`) for a named shape."""
    cfg = config(name)
    w = random_weights(cfg, device, seed=seed)
    host: Dict[str, torch.Tensor] = {}
    cache: Dict[int, torch.Tensor] = {}
    for k, t in w.items():  # keep the tie: copy each tensor once
        if id(t) not in cache:
            cache[id(t)] = t.cpu()
        host[k] = cache[id(t)]
    native = _core.NativeModel.from_weights(_core.ModelConfig.from_json(json.dumps(cfg)), host,
                                            device=device, dtype="bfloat16")
    del host, cache
    return based_core.Model(native, path=None), cfg, w


def build_model(name: str, device: str, seed: int = 0):
    """(based_core.Model, config dict) as build(), with the device copy of the weights freed."""
    model, cfg, w = build(name, device, seed=seed)
    del w
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return model, cfg


def random_prompts(n: int, length: int, vocab: int, seed: int = 0) -> List[List[int]]:
    rng = np.random.default_rng(seed)
    return [list(map(int, row)) for row in rng.integers(0, vocab, size=(n, length))]


def gate(model, cfg: Dict, weights: Dict[str, torch.Tensor], n_prompt: int = 600, n_decode: int = 4,
         tol: float = 0.15) -> Dict:
    """Prefill of n_prompt tokens (crossing the 512-token prefill chunk) then
    n_decode teacher-forced decode steps through based_core; the n_decode+1
    logits rows against the fp32 reference's full forward on the same weights.
    Tolerance: relative-to-max 0.15, as the repository's bf16 model test."""
    ids = random_prompts(1, n_prompt + n_decode, int(cfg["vocab_size"]), seed=7)[0]
    s = model.session(max_batch=1)
    rows = [torch.from_dlpack(s.prefill(0, ids[:n_prompt], logits="last")).float().cpu()]
    for t in ids[n_prompt:]:
        rows.append(torch.from_dlpack(s.decode([0], [t])).float().cpu())
    del s
    got = torch.cat(rows)
    dev = next(iter(weights.values())).device
    ref = ReferenceModel(cfg, weights, dtype=torch.float32)
    want = ref.forward(torch.tensor([ids], device=dev))[0, n_prompt - 1:].float().cpu()
    del ref
    err = common.rel_err(got, want)
    agree = float((got.argmax(-1) == want.argmax(-1)).float().mean())
    g = common.gate(err, tol, f"prefill {n_prompt} + {n_decode} decode steps vs fp32 reference")
    g["argmax_agreement"] = agree
    return g


def decode_ceiling(name: str, batch: int):
    """PERFORMANCE.md 1b: tokens/s = B / ((weights + B*S) / 3.0 TB/s); None for toy shapes."""
    if name not in DECODE_BYTES:
        return None
    w, s = DECODE_BYTES[name]
    return batch / ((w + batch * s) / common.HBM_BPS)


def prefill_ceiling(cfg: Dict):
    """PERFORMANCE.md 1d: tokens/ms at 2 * params FLOP per token and 790 TFLOP/s."""
    return common.TENSOR_FLOPS / (2.0 * n_params(cfg)) / 1e3
