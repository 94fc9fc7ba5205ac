"""Writes the seed corpus under tests/fuzz/corpus/ (deterministic; run again
after changing the tiny config in fuzz_model.cpp). Needs based_core (numpy only).

    corpus/safetensors/  small valid and edge-case safetensors images
    corpus/config/       config.json variants: the released checkpoints' shapes
                         (SPEC.md 1.2-1.5) and the tiny test config
    corpus/model/        1 variant byte + a tiny model's safetensors image
                         (the layout fuzz_model.cpp expects)
"""

from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np

from based_core.safetensors_io import BF16, TensorEntry, save_file
from based_core.testing import make_config, random_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# Must match tiny_config() in fuzz_model.cpp.
TINY = dict(d_model=16, n_head=2, layer_kinds=["conv", "la", "swa"], window_size=4, feature_dim=4,
            la_heads=2, vocab_size=30, pad_vocab_size_multiple=8, n_inner=32)


def st_bytes(tensors, metadata=None) -> bytes:
    """A safetensors image in memory (save_file writes paths only)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        save_file(tensors, p, metadata=metadata)
        return open(p, "rb").read()


def raw_image(header, data: bytes = b"") -> bytes:
    """A hand-made image (header: a dict or JSON text), for what save_file refuses to write."""
    h = (header if isinstance(header, str) else json.dumps(header)).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(sub: str, name: str, data: bytes) -> None:
    os.makedirs(os.path.join(OUT, sub), exist_ok=True)
    with open(os.path.join(OUT, sub, name), "wb") as f:
        f.write(data)


def safetensors_seeds() -> None:
    rng = np.random.default_rng(0)
    write("safetensors", "empty_header", raw_image({}))
    write("safetensors", "metadata_only", raw_image({"__metadata__": {"format": "pt"}}))
    write("safetensors", "all_supported_dtypes", st_bytes({
        "f64": rng.standard_normal(3), "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f16": np.ones((2, 2), np.float16), "bf16": BF16.from_float(np.arange(4, dtype=np.float32)),
        "i64": np.arange(3, dtype=np.int64), "i32": np.arange(2, dtype=np.int32), "u8": np.arange(5, dtype=np.uint8),
    }, metadata={"format": "pt", "note": "seed"}))
    write("safetensors", "unsupported_dtypes", st_bytes({
        "i8": np.arange(4, dtype=np.int8), "b": np.array([True, False]), "i16": np.arange(3, dtype=np.int16),
    }))
    write("safetensors", "scalar_and_empty", st_bytes({
        "scalar": np.array(1.5, np.float32), "empty": np.zeros((0, 4), np.float32), "one": np.ones(1, np.float32),
    }))
    write("safetensors", "aliased_offsets", raw_image(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))
    write("safetensors", "f8_and_u64", raw_image(
        {"f8": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
         "u64": {"dtype": "U64", "shape": [1], "data_offsets": [8, 16]}}, bytes(16)))
    # Regression: megabytes of nesting overflowed the stack in json::dump (now refused past 32 levels).
    write("safetensors", "deep_nesting", raw_image('{"__metadata__": {"a": ' + "[" * 40 + "]" * 40 + "}}"))
    cfg = make_config(**TINY)
    sd = random_state_dict(cfg, seed=1)
    write("safetensors", "tiny_ln_f", st_bytes({"transformer.ln_f.weight": sd["transformer.ln_f.weight"]}))


def config_seeds() -> None:
    tiny = make_config(**TINY)
    write("config", "tiny.json", json.dumps(tiny, indent=2).encode())
    # The released checkpoints (SPEC.md 1.2-1.4) in the config.json format of 1.5.
    b360 = make_config(d_model=1024, n_head=16, n_layer=27, window_size=256, feature_dim=16, la_heads=16,
                       vocab_size=50257, n_inner=2048,
                       layer_kinds=["la" if i in (1, 6, 11, 16, 21) else "swa" if i in (2, 7, 12, 17, 22) else "conv"
                                    for i in range(27)])
    b360["eos_token_id"] = b360["bos_token_id"] = 50256
    write("config", "based-360m.json", json.dumps(b360, indent=2).encode())
    la1b, swa1b = (1, 6, 11, 16, 21, 27, 33), (2, 7, 12, 17, 22, 28, 34)
    b1 = make_config(d_model=1792, n_head=16, n_layer=36, window_size=256, feature_dim=16, la_heads=16,
                     vocab_size=50257, n_inner=3584, fixed_decay=True,
                     layer_kinds=["la" if i in la1b else "swa" if i in swa1b else "conv" for i in range(36)])
    b1["eos_token_id"] = b1["bos_token_id"] = 50256
    write("config", "based-1b.json", json.dumps(b1, indent=2).encode())
    b50 = dict(b1)
    b50.pop("fixed_decay"), b50.pop("decay_const")
    b50["alt_mixer"] = dict(b1["alt_mixer"], parallel_implementation="fla_parallel")
    write("config", "based-1b-50b.json", json.dumps(b50, indent=2).encode())
    # Variants the parser accepts: no n_inner, integral floats, partial RoPE, a custom rope base,
    # empty layer lists, nulls for optional keys.
    v = dict(tiny)
    v.pop("n_inner")
    write("config", "no_n_inner.json", json.dumps(v).encode())
    write("config", "floats.json", json.dumps(dict(tiny, n_embd=16.0, n_head=2.0, rotary_emb_fraction=0.5,
                                                   rotary_emb_base=500000.0)).encode())
    write("config", "all_conv.json", json.dumps(dict(tiny, alt_mixer_layers=[], alt_mixer_2_layers=None)).encode())
    write("config", "deep_nesting.json", b'{"n_embd": ' + b"[" * 40 + b"]" * 40 + b"}")
    write("config", "minimal.json", b'{"n_embd": 8, "n_layer": 1, "n_head": 1, "vocab_size": 4,'
                                    b' "mixer": {"_target_": "BaseConv"}}')


def model_seeds() -> None:
    cfg = make_config(**TINY)
    # variant byte: bit 0 = config with n_inner, bits 1-2 = model dtype (f32, bf16, f16, f32)
    for dtype, variant in (("float32", 1), ("bfloat16", 3), ("float16", 4)):
        sd = random_state_dict(cfg, seed=2, dtype=dtype)
        del sd["transformer.embeddings.word_embeddings.weight"]  # tied: stored once, as lm_head
        enc = {k: (BF16.from_float(a) if dtype == "bfloat16" else a.astype(np.float16) if dtype == "float16" else a)
               for k, a in sd.items()}
        write("model", f"tiny_{dtype}", bytes([variant]) + st_bytes(enc, metadata={"format": "pt"}))
    # the "model." prefix, a Lightning metrics scalar and the decay buffer (all ignored by the loader)
    sd = random_state_dict(cfg, seed=3)
    named = {"model." + k: a for k, a in sd.items()}
    named["train_metrics.num-tokens.count"] = np.array(1.0, np.float32)
    named["model.transformer.decay.decay"] = np.ones(2, np.float32)
    write("model", "tiny_prefixed_both_tied_names", bytes([0]) + st_bytes(named))


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    model_seeds()
    for sub in ("safetensors", "config", "model"):
        files = os.listdir(os.path.join(OUT, sub))
        print(f"{sub}: {len(files)} seeds, {sum(os.path.getsize(os.path.join(OUT, sub, f)) for f in files)} bytes",
              file=sys.stderr)
