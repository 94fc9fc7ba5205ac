"""A 4,096-step decode on the GPU whose fp32 state stays within tolerance of
the fp64 reference (and whose token count, the order-0 term of z, is exact:
a bf16 state would stall at 256, SPEC.md pitfall 7)."""

import numpy as np
import pytest
import torch

import based_core
from based_core import reference
from based_core.testing import make_random_model

STEPS = 4096
HEADER = 56  # bytes before the per-layer state in save_slot (see cpp/src/session.cpp)


def la_states(blob, cfg, act_bytes, symmetric):
    """Parses save_slot bytes into {layer: (S [H, D, hd], z [H, D])} for the LA layers."""
    off = HEADER
    out = {}
    f = cfg.la_feature_dim
    D = 1 + f + (f * (f + 1) // 2 if symmetric else f * f)
    for i, kind in enumerate(cfg.layers):
        if kind == "linear_attention":
            ns = cfg.la_heads * D * cfg.la_head_dim
            S = np.frombuffer(blob, np.float32, ns, off).reshape(cfg.la_heads, D, cfg.la_head_dim)
            off += ns * 4
            z = np.frombuffer(blob, np.float32, cfg.la_heads * D, off).reshape(cfg.la_heads, D)
            off += cfg.la_heads * D * 4
            out[i] = (S, z)
        elif kind == "sliding_window":
            off += 2 * (cfg.swa_window + 1) * cfg.d_model * act_bytes
        else:
            off += 2 * cfg.conv_channels * 4
    assert off == len(blob)
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_long_decode_state_tracks_reference(tmp_path, dtype, symmetric):
    d = make_random_model(str(tmp_path), n_head=2, head_dim=64, n_layer=3, window_size=128, seed=11)
    model = based_core.load(d, device="cuda", dtype=dtype)
    ids = np.random.default_rng(0).integers(0, 1000, size=STEPS + 16)
    s = model.session(max_batch=2, symmetric_state=symmetric)
    s.prefill(1, ids[:16], logits="none")
    last = None
    for t in ids[16:]:
        last = s.decode([1], [int(t)])
    got_logits = based_core.to_numpy(last)[0]
    states = la_states(s.save_slot(1), model.config, 4 if dtype == "float32" else 2, symmetric)
    # the order-0 feature of z counts tokens: exact in fp32 (row 0; the last row when symmetric)
    for S, z in states.values():
        assert np.all(z[:, -1 if symmetric else 0] == len(ids))
    if symmetric:  # compare in the authors' layout
        f = model.config.la_feature_dim
        states = {i: tuple(x.numpy() for x in reference.symmetric_to_full_state(
            torch.from_numpy(S.astype(np.float64)), torch.from_numpy(z.astype(np.float64)), f))
            for i, (S, z) in states.items()}

    ref = reference.load_reference(d, torch.float64)
    logits, st = ref.prefill(torch.tensor(ids)[None])
    want = logits[0, -1].numpy()
    err = np.abs(got_logits - want).max() / np.abs(want).max()
    assert err < (2e-3 if dtype == "float32" else 0.15), err
    if dtype == "float32":
        for i, (S, z) in states.items():
            Sr, zr = st.layers[i]["S"][0].numpy(), st.layers[i]["z"][0].numpy()
            assert np.abs(S - Sr).max() / np.abs(Sr).max() < 1e-4
            assert np.abs(z - zr).max() / np.abs(zr).max() < 1e-5
