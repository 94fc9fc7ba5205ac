"""Tiny random BASED checkpoints in the authors' released layout, for tests.

Nothing here needs torch except writing ``pytorch_model.bin`` (fmt="bin").

Public API
----------
``make_config(...) -> dict``            config.json contents in the authors' format.
``random_state_dict(config, seed=0, dtype="float32") -> dict[str, np.ndarray]``
    canonical key names (no prefix), float32 arrays whose values are exactly
    representable in ``dtype``; both tied names map to the same array.
``make_random_model(folder, **options) -> str``  writes config.json and weights.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .safetensors_io import BF16, bf16_bits_to_f32, f32_to_bf16_bits, save_file

CONV_TARGET = "based.models.mixers.convolution.BaseConv"
LA_TARGET = "based.models.mixers.linear_attention.LinearAttention"
TAYLOR_TARGET = "based.models.mixers.linear_attention.TaylorExp"
SWA_TARGET = "based.models.mixers.slide_attention.SlidingAttention"
METRICS_KEY = "train_metrics.num-tokens.count"
EMB_KEY = "transformer.embeddings.word_embeddings.weight"
HEAD_KEY = "lm_head.weight"


def default_layer_kinds(n_layer: int) -> List[str]:
    """conv, la, swa, conv, la, swa, ...: every mixer appears once n_layer >= 3."""
    return [("conv", "la", "swa")[i % 3] for i in range(n_layer)]


def make_config(*, d_model: int = 64, n_head: int = 4, layer_kinds: Optional[Sequence[str]] = None,
                n_layer: Optional[int] = None, window_size: int = 16, feature_dim: int = 16,
                la_heads: Optional[int] = None, vocab_size: int = 1000,
                pad_vocab_size_multiple: int = 8, n_inner: Optional[int] = None,
                layer_norm_epsilon: float = 1e-5, rotary_emb_base: Optional[float] = None,
                fixed_decay: bool = False, l_max: int = 2048) -> Dict[str, Any]:
    """config.json in the authors' format (a GPT2Config dict plus mixer dicts).

    ``n_inner`` defaults to 2*d rounded up to a multiple of 256: the authors'
    GatedMlp rounds the hidden width that way (SPEC 2.4), so only such values
    give a config whose n_inner equals the weights' width under every reading.
    """
    kinds = list(layer_kinds) if layer_kinds is not None else default_layer_kinds(n_layer or 5)
    if n_layer is not None and n_layer != len(kinds):
        raise ValueError("n_layer does not match len(layer_kinds)")
    if any(k not in ("conv", "la", "swa") for k in kinds):
        raise ValueError(f"layer kinds must be conv/la/swa, got {kinds}")
    if d_model % n_head:
        raise ValueError("n_head must divide d_model")
    if n_inner is None:
        n_inner = -(-2 * d_model // 256) * 256
    eos = vocab_size - 1  # GPT-2 puts <|endoftext|> last
    cfg: Dict[str, Any] = {
        "activation_function": "swiglu",
        "alt_mixer": {
            "_target_": LA_TARGET,
            "feature_dim": feature_dim,
            "feature_map": {"_target_": TAYLOR_TARGET, "input_dim": feature_dim},
            "l_max": l_max,
            "num_heads": la_heads if la_heads is not None else n_head,
        },
        "alt_mixer_2": {"_target_": SWA_TARGET, "causal": True, "num_heads": n_head,
                        "window_size": window_size},
        "alt_mixer_2_layers": [i for i, k in enumerate(kinds) if k == "swa"],
        "alt_mixer_layers": [i for i, k in enumerate(kinds) if k == "la"],
        "attn_pdrop": 0, "bos_token_id": eos, "embd_pdrop": 0, "eos_token_id": eos,
        "fused_bias_fc": True, "fused_dropout_add_ln": True, "fused_mlp": False,
        "initializer_range": 0.02, "layer_norm_epsilon": layer_norm_epsilon,
        "mixer": {"_target_": CONV_TARGET, "expand_proj": 4, "kernel_sizes": 3,
                  "l_max": l_max, "use_bias": True},
        "mlp_fc1_bias": False, "mlp_fc2_bias": False, "model_type": "gpt2",
        "n_embd": d_model, "n_head": n_head, "n_inner": n_inner, "n_layer": len(kinds),
        "n_positions": 0, "out_proj_bias": False,
        "pad_vocab_size_multiple": pad_vocab_size_multiple, "qkv_proj_bias": False,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0, "residual_in_fp32": True,
        "rms_norm": True, "rotary_emb_fraction": 1,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
        "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "tie_word_embeddings": True, "transformers_version": "4.36.2", "use_cache": True,
        "vocab_size": vocab_size,
    }
    if rotary_emb_base is not None:
        cfg["rotary_emb_base"] = rotary_emb_base
    if fixed_decay:
        cfg["fixed_decay"] = True
        cfg["decay_const"] = -3
    return cfg


def _kinds_of(cfg: Dict[str, Any]) -> List[str]:
    swa = set(cfg.get("alt_mixer_2_layers") or [])
    la = set(cfg.get("alt_mixer_layers") or [])
    return ["swa" if i in swa else "la" if i in la else "conv" for i in range(int(cfg["n_layer"]))]


def _round_to(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values so they are exactly representable in ``dtype``."""
    if dtype == "bfloat16":
        return bf16_bits_to_f32(f32_to_bf16_bits(a))
    if dtype == "float16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "float32":
        return a.astype(np.float32)
    raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")


def random_state_dict(config: Dict[str, Any], seed: int = 0, dtype: str = "float32"
                      ) -> Dict[str, np.ndarray]:
    """Random weights for ``config`` scaled so activations stay O(1).

    Projections ~ N(0, 1/fan_in) (output projections halved so the residual
    grows slowly), norm weights 1 + N(0, 0.1^2) (ln_f with random signs, so
    greedy decoding does not lock onto one token), conv taps N(0, 0.5^2),
    BaseConv biases N(0, 0.1^2), embedding N(0, 4/d) so logits have std ~2.
    """
    rng = np.random.default_rng(seed)
    d = int(config["n_embd"])
    mult = int(config.get("pad_vocab_size_multiple", 1) or 1)
    v_pad = -(-int(config["vocab_size"]) // mult) * mult
    hidden = int(config["n_inner"])
    la = config.get("alt_mixer") or {}
    la_heads, fdim = int(la.get("num_heads", config["n_head"])), int(la.get("feature_dim", 16))

    def lin(out: int, fan_in: int, gain: float = 1.0) -> np.ndarray:
        return rng.standard_normal((out, fan_in), dtype=np.float32) * np.float32(gain / np.sqrt(fan_in))

    def vec(n: int, mean: float, std: float) -> np.ndarray:
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    sd: Dict[str, np.ndarray] = {}
    emb = rng.standard_normal((v_pad, d), dtype=np.float32) * np.float32(2.0 / np.sqrt(d))
    sd[EMB_KEY] = emb
    for i, kind in enumerate(_kinds_of(config)):
        p = f"transformer.layers.{i}."
        sd[p + "norm1.weight"] = vec(d, 1.0, 0.1)
        if kind == "conv":
            sd[p + "mixer.in_proj.weight"] = lin(4 * d, d)
            sd[p + "mixer.in_proj.bias"] = vec(4 * d, 0.0, 0.1)
            sd[p + "mixer.conv.conv.weight"] = (0.5 * rng.standard_normal((2 * d, 1, 3))).astype(np.float32)
            sd[p + "mixer.out_proj.weight"] = lin(d, 2 * d, 0.5)
            sd[p + "mixer.out_proj.bias"] = vec(d, 0.0, 0.1)
        elif kind == "la":
            sd[p + "mixer.proj_q.weight"] = lin(la_heads * fdim, d)
            sd[p + "mixer.proj_k.weight"] = lin(la_heads * fdim, d)
            sd[p + "mixer.proj_v.weight"] = lin(d, d)
            sd[p + "mixer.out_proj.weight"] = lin(d, d, 0.5)
        else:
            sd[p + "mixer.Wqkv.weight"] = lin(3 * d, d)
            sd[p + "mixer.out_proj.weight"] = lin(d, d, 0.5)
        sd[p + "norm2.weight"] = vec(d, 1.0, 0.1)
        sd[p + "mlp.fc1.weight"] = lin(2 * hidden, d)
        sd[p + "mlp.fc2.weight"] = lin(d, hidden, 0.5)
    # ln_f gets random signs: with a tied head, a near-1 ln_f makes every token
    # predict itself (E[id] stays in the residual), and greedy decode sticks.
    sd["transformer.ln_f.weight"] = vec(d, 1.0, 0.1) * rng.choice(np.float32([-1, 1]), d)
    sd = {k: _round_to(v, dtype) for k, v in sd.items()}
    sd[HEAD_KEY] = sd[EMB_KEY]
    return sd


def make_random_model(folder: str, *, d_model: Optional[int] = None, n_head: int = 4,
                      head_dim: Optional[int] = None, n_layer: Optional[int] = None,
                      layer_kinds: Optional[Sequence[str]] = None, window_size: int = 16,
                      feature_dim: int = 16, la_heads: Optional[int] = None,
                      vocab_size: int = 1000, pad_vocab_size_multiple: int = 8,
                      n_inner: Optional[int] = None, layer_norm_epsilon: float = 1e-5,
                      rotary_emb_base: Optional[float] = None, dtype: str = "float32",
                      fmt: str = "safetensors", prefix: bool = False,
                      metrics_key: Any = False, tied_name: str = "lm_head",
                      decay_key: bool = False, seed: int = 0) -> str:
    """Write a tiny random BASED checkpoint (config.json + weights) into ``folder``.

    Width: ``d_model`` (default 64), or ``n_head * head_dim`` when head_dim is
    given (e.g. 64 or 112).  ``layer_kinds`` (list of "conv"/"la"/"swa") or
    ``n_layer`` (default 5, pattern conv, la, swa, ...).  ``window_size`` is the
    config W (the model attends W//2 past tokens).  ``dtype``: float32 /
    bfloat16 / float16 weights.  ``fmt``: "safetensors" (model.safetensors) or
    "bin" (pytorch_model.bin, needs torch).  ``prefix``: prepend "model." to
    every weight key.  ``metrics_key``: True or a key name to add a Lightning
    metrics scalar.  ``tied_name``: "lm_head", "embedding" or "both" = which
    name(s) hold the tied embedding.  ``decay_key``: add transformer.decay.decay
    [n_head] (and fixed_decay in the config).  Returns ``folder``.
    """
    if head_dim is not None:
        if d_model is not None and d_model != n_head * head_dim:
            raise ValueError("d_model != n_head * head_dim")
        d_model = n_head * head_dim
    d_model = 64 if d_model is None else d_model
    if tied_name not in ("lm_head", "embedding", "both"):
        raise ValueError("tied_name must be 'lm_head', 'embedding' or 'both'")
    if fmt not in ("safetensors", "bin"):
        raise ValueError("fmt must be 'safetensors' or 'bin'")
    cfg = make_config(d_model=d_model, n_head=n_head, layer_kinds=layer_kinds, n_layer=n_layer,
                      window_size=window_size, feature_dim=feature_dim, la_heads=la_heads,
                      vocab_size=vocab_size, pad_vocab_size_multiple=pad_vocab_size_multiple,
                      n_inner=n_inner, layer_norm_epsilon=layer_norm_epsilon,
                      rotary_emb_base=rotary_emb_base, fixed_decay=decay_key)
    sd = random_state_dict(cfg, seed=seed, dtype=dtype)
    if tied_name == "lm_head":
        del sd[EMB_KEY]
    elif tied_name == "embedding":
        del sd[HEAD_KEY]
    if decay_key:
        rng = np.random.default_rng(seed + 1)
        sd["transformer.decay.decay"] = rng.uniform(0.5, 1.0, n_head).astype(np.float32)
    pre = "model." if prefix else ""
    named = {pre + k: v for k, v in sd.items()}
    if metrics_key:
        # Lightning metrics live beside the wrapped model: no "model." prefix
        named[metrics_key if isinstance(metrics_key, str) else METRICS_KEY] = np.array(12345.0, np.float32)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")
    if fmt == "safetensors":
        save_file({k: _encode(k, v, dtype) for k, v in named.items()},
                  os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    else:
        import torch  # only the .bin format needs torch

        tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        cache: Dict[int, Any] = {}  # keep tied names sharing one tensor, as torch does
        tensors = {}
        for k, v in named.items():
            if id(v) not in cache:
                t = torch.from_numpy(np.array(v))
                cache[id(v)] = t if _is_metadata_key(k) else t.to(tdt)
            tensors[k] = cache[id(v)]
        torch.save(tensors, os.path.join(folder, "pytorch_model.bin"))
    return folder


def _is_metadata_key(k: str) -> bool:
    """Keys that stay float32 whatever the weight dtype (metrics, decay buffer)."""
    return "metrics" in k or k.endswith("decay.decay")


def _encode(key: str, v: np.ndarray, dtype: str) -> Any:
    if _is_metadata_key(key) or dtype == "float32":
        return v.astype(np.float32)
    if dtype == "bfloat16":
        return BF16.from_float(v)
    return v.astype(np.float16)
