"""Self-consistency tests of the pure-PyTorch BASED oracle (float64).

The oracle is what the C++/CUDA kernels are checked against, so each of its
ops is checked here against an independent, more literal formulation, and the
parallel and recurrent model forms are checked against each other.
"""

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from based_core import reference as R  # noqa: E402
from based_core import safetensors_io as st  # noqa: E402
from based_core.testing import make_config, make_random_model, random_state_dict  # noqa: E402

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64) * scale


# ----------------------------------------------------------------------------
# Taylor feature map
# ----------------------------------------------------------------------------

def test_feature_map_layout_and_constants():
    x = randn(5, 16, seed=1)
    phi = R.taylor_feature_map(x, 16)
    assert phi.shape == (5, 273)
    assert torch.equal(phi[:, 0], torch.ones(5, dtype=F64))
    torch.testing.assert_close(phi[:, 1:17], x / 2.0, rtol=0, atol=1e-15)
    for i, j in [(0, 0), (0, 5), (5, 0), (15, 15), (3, 11)]:
        expect = x[:, i] * x[:, j] / (4.0 * math.sqrt(2.0))
        torch.testing.assert_close(phi[:, 17 + 16 * i + j], expect, rtol=0, atol=1e-15)


def test_feature_map_kernel_is_taylor_exp():
    q, k = randn(200, 16, seed=2, scale=1.5), randn(200, 16, seed=3, scale=1.5)
    dots = (R.taylor_feature_map(q) * R.taylor_feature_map(k)).sum(-1)
    s = (q * k).sum(-1) / 4.0
    torch.testing.assert_close(dots, 1 + s + s * s / 2, rtol=1e-13, atol=1e-13)
    assert dots.min() >= 0.5 - 1e-12
    # the minimum 0.5 is reached at s = -1, i.e. q.k = -4
    q1 = torch.zeros(16, dtype=F64)
    q1[0] = 2.0
    kappa = (R.taylor_feature_map(q1) * R.taylor_feature_map(-q1)).sum()
    assert abs(kappa.item() - 0.5) < 1e-14


# ----------------------------------------------------------------------------
# symmetric state layout (SPEC 2.1 "Optional compression")
# ----------------------------------------------------------------------------

def _pairs(f):
    """The symmetric layout's pair order, written out literally: i <= j, row-major."""
    return [(i, j) for i in range(f) for j in range(i, f)]


@pytest.mark.parametrize("f", [16, 5])
def test_symmetric_feature_maps_layout_and_kernel(f):
    x = randn(7, f, seed=4)
    pq, pk = R.symmetric_feature_maps(x)
    P = f * (f + 1) // 2
    assert pq.shape == pk.shape == (7, 1 + f + P)
    for r, (i, j) in enumerate(_pairs(f)):
        assert torch.equal(pk[:, r], x[:, i] * x[:, j])
        w = 1.0 / (2 * f) if i == j else 1.0 / f
        torch.testing.assert_close(pq[:, r], x[:, i] * x[:, j] * w, rtol=1e-15, atol=0)
    assert torch.equal(pk[:, P:P + f], x)
    torch.testing.assert_close(pq[:, P:P + f], x / math.sqrt(f), rtol=1e-15, atol=0)
    assert torch.equal(pk[:, P + f], torch.ones(7, dtype=F64)) and torch.equal(pq[:, P + f], pk[:, P + f])
    # the same kernel as the full TaylorExp map, to fp64 rounding (kappa >= 0.5, so relative)
    q, k = randn(500, f, seed=5, scale=1.5), randn(500, f, seed=6, scale=1.5)
    sym = (R.symmetric_feature_maps(q)[0] * R.symmetric_feature_maps(k)[1]).sum(-1)
    full = (R.taylor_feature_map(q) * R.taylor_feature_map(k)).sum(-1)
    assert ((sym - full).abs() / full).max() < 1e-14
    # feature_dim is the constant f, independent of the width (as in taylor_feature_map)
    sym = (R.symmetric_feature_maps(q, 2 * f)[0] * R.symmetric_feature_maps(k, 2 * f)[1]).sum(-1)
    full = (R.taylor_feature_map(q, 2 * f) * R.taylor_feature_map(k, 2 * f)).sum(-1)
    assert ((sym - full).abs() / full).max() < 1e-14


def test_symmetric_state_row_counts():
    assert R.symmetric_feature_maps(randn(16))[0].shape == (153,)
    S, z = R.symmetric_to_full_state(randn(2, 153, 64), randn(2, 153))
    assert S.shape == (2, 273, 64) and z.shape == (2, 273)
    S, z = R.full_to_symmetric_state(S, z)
    assert S.shape == (2, 153, 64) and z.shape == (2, 153)
    with pytest.raises(ValueError, match="272 rows"):
        R.full_to_symmetric_state(randn(272, 4), randn(272))
    with pytest.raises(ValueError, match="273 rows"):  # a full state is not a symmetric one
        R.symmetric_to_full_state(randn(273, 4), randn(273))


@pytest.mark.parametrize("f", [16, 5])
def test_symmetric_state_conversions_are_exact_inverses(f):
    D = 1 + f + f * (f + 1) // 2
    S, z = randn(2, 3, D, 8, seed=7), randn(2, 3, D, seed=8)
    Sf, zf = R.symmetric_to_full_state(S, z)
    assert Sf.shape == (2, 3, 1 + f + f * f, 8) and zf.shape == (2, 3, 1 + f + f * f)
    # the rows, written out literally
    P = f * (f + 1) // 2
    c2 = math.sqrt(2.0) * math.sqrt(f)
    assert torch.equal(zf[..., 0], z[..., P + f])
    torch.testing.assert_close(zf[..., 1:1 + f], z[..., P:P + f] / f ** 0.25, rtol=1e-15, atol=0)
    for r, (i, j) in enumerate(_pairs(f)):
        for a, b in ((i, j), (j, i)):
            torch.testing.assert_close(Sf[..., 1 + f + f * a + b, :], S[..., r, :] / c2, rtol=1e-15, atol=0)
            torch.testing.assert_close(zf[..., 1 + f + f * a + b], z[..., r] / c2, rtol=1e-15, atol=0)
    S2, z2 = R.full_to_symmetric_state(Sf, zf)
    torch.testing.assert_close(S2, S, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(z2, z, rtol=1e-14, atol=1e-15)
    # float32 in, float32 out (acc dtype), like the other ops
    assert R.symmetric_to_full_state(S.float(), z.float())[0].dtype == torch.float32


@pytest.mark.parametrize("f", [16, 5])
def test_symmetric_state_of_a_prefill_run(f):
    """A real state is symmetric: full -> symmetric -> full is the identity, the symmetric state is
    sum phi_k_sym v^T, and reading it out with phi_q_sym gives the same y."""
    L, H, hd = 50, 2, 16
    q, k, v = randn(L, H, f, seed=40), randn(L, H, f, seed=41), randn(L, H, hd, seed=42)
    y, S, z = R.linear_attention_prefill(q, k, v, f)
    Ss, zs = R.full_to_symmetric_state(S, z)
    S2, z2 = R.symmetric_to_full_state(Ss, zs)
    torch.testing.assert_close(S2, S, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(z2, z, rtol=1e-13, atol=1e-13)
    pq, pk = R.symmetric_feature_maps(q, f)[0], R.symmetric_feature_maps(k, f)[1]
    torch.testing.assert_close(Ss, torch.einsum("thD,thd->hDd", pk, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(zs, pk.sum(0), rtol=1e-12, atol=1e-12)
    # the last token's output from the symmetric state (which includes it)
    num = torch.einsum("hD,hDd->hd", pq[-1], Ss)
    den = torch.einsum("hD,hD->h", pq[-1], zs)
    torch.testing.assert_close(num / (den + 1e-12).unsqueeze(-1), y[-1], rtol=1e-11, atol=1e-11)


# ----------------------------------------------------------------------------
# linear attention
# ----------------------------------------------------------------------------

def _la_inputs(L, H, hd, seed):
    return (randn(L, H, 16, seed=seed), randn(L, H, 16, seed=seed + 1),
            randn(L, H, hd, seed=seed + 2))


@pytest.mark.parametrize("hd", [64, 112])
def test_linear_attention_parallel_matches_definition_and_recurrence(hd):
    L, H = 40, 3
    q, k, v = _la_inputs(L, H, hd, seed=10)
    y, S, z = R.linear_attention_prefill(q, k, v, 16)
    assert y.shape == (L, H, hd) and S.shape == (H, 273, hd) and z.shape == (H, 273)
    # literal definition with kappa = 1 + s + s^2/2 and the current token included
    s = torch.einsum("thf,jhf->htj", q, k) / 4.0
    kap = torch.tril(1 + s + s * s / 2)
    expect = torch.einsum("htj,jhd->thd", kap, v) / (kap.sum(-1).T.unsqueeze(-1) + 1e-12)
    torch.testing.assert_close(y, expect, rtol=1e-12, atol=1e-12)
    # recurrent: update first, then read out
    S2 = torch.zeros(H, 273, hd, dtype=F64)
    z2 = torch.zeros(H, 273, dtype=F64)
    for t in range(L):
        yt, S2, z2 = R.linear_attention_decode(q[t], k[t], v[t], S2, z2, 16)
        torch.testing.assert_close(yt, y[t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S2, S, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z2, z, rtol=1e-12, atol=1e-12)
    # state is sum phi(k) v^T, feature-major
    pk = R.taylor_feature_map(k, 16)
    torch.testing.assert_close(S, torch.einsum("thD,thd->hDd", pk, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z[:, 0], torch.full((H,), float(L), dtype=F64))


def test_linear_attention_chunked_prefill_with_state():
    L, H, hd = 70, 2, 64
    q, k, v = _la_inputs(L, H, hd, seed=20)
    y, S, z = R.linear_attention_prefill(q, k, v)
    for cut in (1, 33, 64, 69):
        ya, Sa, za = R.linear_attention_prefill(q[:cut], k[:cut], v[:cut])
        yb, Sb, zb = R.linear_attention_prefill(q[cut:], k[cut:], v[cut:], state=(Sa, za))
        torch.testing.assert_close(torch.cat([ya, yb]), y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(Sb, S, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(zb, z, rtol=1e-12, atol=1e-12)
    # the internal query chunking does not change anything; batch dims work
    yc, _, _ = R.linear_attention_prefill(q, k, v, chunk=7)
    torch.testing.assert_close(yc, y, rtol=1e-12, atol=1e-12)
    yb, Sb, _ = R.linear_attention_prefill(q[None].repeat(2, 1, 1, 1), k[None].repeat(2, 1, 1, 1),
                                           v[None].repeat(2, 1, 1, 1))
    torch.testing.assert_close(yb[1], y, rtol=1e-12, atol=1e-12)
    assert Sb.shape == (2, H, 273, hd)


# ----------------------------------------------------------------------------
# RoPE and sliding-window attention
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_rope_hd112_explicit_formula(base):
    hd, H = 112, 2
    pos = torch.tensor([0, 1, 5, 127, 2047, 5000])
    x = randn(len(pos), H, hd, seed=30)
    y = R.rope(x, pos, base)
    expect = x.clone()
    for t, p in enumerate(pos.tolist()):
        for i in range(hd // 2):
            ang = p * base ** (-2.0 * i / hd)
            c, s = math.cos(ang), math.sin(ang)
            a, b = x[t, :, i], x[t, :, i + hd // 2]
            expect[t, :, i] = a * c - b * s
            expect[t, :, i + hd // 2] = b * c + a * s
    # angles up to 5000 rad: 1e-16 relative error in the frequency is ~1e-12 here
    torch.testing.assert_close(y, expect, rtol=1e-10, atol=1e-10)
    # relative-position property: <R_p q, R_s k> depends only on p - s
    q, k = randn(1, 1, hd, seed=31), randn(1, 1, hd, seed=32)
    d1 = (R.rope(q, torch.tensor([7]), base) * R.rope(k, torch.tensor([3]), base)).sum()
    d2 = (R.rope(q, torch.tensor([1007]), base) * R.rope(k, torch.tensor([1003]), base)).sum()
    assert abs(d1 - d2) < 1e-9


def _swa_brute(q, k, v, w):
    L, H, hd = q.shape
    out = torch.zeros_like(q)
    for t in range(L):
        lo = max(0, t - w)
        s = torch.einsum("hd,jhd->hj", q[t], k[lo:t + 1]) / math.sqrt(hd)
        out[t] = torch.einsum("hj,jhd->hd", torch.softmax(s, -1), v[lo:t + 1])
    return out


@pytest.mark.parametrize("hd", [64, 112])
@pytest.mark.parametrize("w", [64, 128])
def test_sliding_window_prefill_matches_brute_force(hd, w):
    H = 2
    q, k, v = randn(300, H, hd, seed=40), randn(300, H, hd, seed=41), randn(300, H, hd, seed=42)
    for L in (1, 2, 3, 63, 64, 65, 300):
        expect = _swa_brute(q[:L], k[:L], v[:L], w)
        got = R.sliding_window_attention(q[:L], k[:L], v[:L], w)
        torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    got = R.sliding_window_attention(q, k, v, w, block=37)  # query blocking is exact
    torch.testing.assert_close(got, _swa_brute(q, k, v, w), rtol=1e-12, atol=1e-12)


def test_sliding_window_decode_ring_buffer_matches_prefill():
    H, hd, w, L = 2, 64, 5, 23
    q, k, v = randn(L, H, hd, seed=50), randn(L, H, hd, seed=51), randn(L, H, hd, seed=52)
    full = R.sliding_window_attention(q, k, v, w)
    n = w + 1
    kc, vc = torch.zeros(n, H, hd, dtype=F64), torch.zeros(n, H, hd, dtype=F64)
    cpos = torch.full((n,), -1)
    for t in range(L):
        kc[t % n], vc[t % n], cpos[t % n] = k[t], v[t], t
        o = R.sliding_window_attention_decode(q[t], kc, vc, cpos, t, w)
        torch.testing.assert_close(o, full[t], rtol=1e-12, atol=1e-12)
    # prefill of a continuation against cached keys with explicit positions
    cont = R.sliding_window_attention(q[10:], k[4:], v[4:], w, torch.arange(10, L), torch.arange(4, L))
    torch.testing.assert_close(cont, full[10:], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# short conv, norm, MLP
# ----------------------------------------------------------------------------

def test_short_conv_matches_conv1d_and_carries_tail():
    C, L = 6, 11
    a, wt = randn(2, L, C, seed=60), randn(C, 1, 3, seed=61)
    ref = F.conv1d(a.transpose(1, 2), wt, padding=2, groups=C)[..., :L].transpose(1, 2)
    c, tail = R.short_conv(a, wt)
    torch.testing.assert_close(c, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(tail, a[:, -2:])
    c1, t1 = R.short_conv(a[:, :1], wt)  # fewer than 2 inputs: zeros, oldest first
    assert torch.equal(t1[:, 0], torch.zeros(2, C, dtype=F64)) and torch.equal(t1[:, 1], a[:, 0])
    tail = None
    for lo, hi in [(0, 1), (1, 4), (4, 5), (5, L)]:
        cc, tail = R.short_conv(a[:, lo:hi], wt, tail)
        torch.testing.assert_close(cc, ref[:, lo:hi], rtol=1e-13, atol=1e-13)
    tail = torch.zeros(2, 2, C, dtype=F64)
    for t in range(L):
        ct, tail = R.short_conv_step(a[:, t], wt, tail)
        torch.testing.assert_close(ct, ref[:, t], rtol=1e-13, atol=1e-13)


def test_rmsnorm_and_swiglu():
    x, w = randn(4, 10, seed=70), randn(10, seed=71)
    expect = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(R.rmsnorm(x, w, 1e-5), expect, rtol=1e-14, atol=1e-14)
    u = randn(3, 8, seed=72)
    torch.testing.assert_close(R.swiglu(u), u[:, :4] * u[:, 4:] * torch.sigmoid(u[:, 4:]))


# ----------------------------------------------------------------------------
# whole model
# ----------------------------------------------------------------------------

def test_config_parsing():
    cfg = make_config(d_model=64, n_head=4, layer_kinds=["conv", "la", "swa"], window_size=256,
                      vocab_size=50257)
    cfg["alt_mixer_layers"] = [1, 2]  # layer 2 is in both lists: SWA wins
    c = R.ReferenceConfig.from_dict(cfg)
    assert c.layer_kinds == ["conv", "la", "swa"]
    assert (c.vocab_padded, c.swa_window, c.head_dim, c.rotary_dim) == (50264, 128, 16, 16)
    assert (c.la_feature_map_dim, c.la_head_dim, c.rope_base, c.la_eps) == (16, 16, 10000.0, 1e-12)
    cfg["rotary_emb_base"] = 500000
    cfg["alt_mixer"]["parallel_implementation"] = "fla_parallel"
    c = R.ReferenceConfig.from_dict(cfg)
    assert c.rope_base == 500000.0 and c.la_eps == 1e-6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny"))
    make_random_model(folder, window_size=8, n_layer=6, seed=3, vocab_size=1001)
    return folder


def _check_prefill_then_step(model, ids, cuts):
    full = model.forward(ids)
    assert full.shape == (ids.shape[0], ids.shape[1], model.config.vocab_padded)
    for p in cuts:
        if p:
            lp, state = model.prefill(ids[:, :p])
            torch.testing.assert_close(lp, full[:, :p], rtol=1e-9, atol=1e-9)
        else:
            state = model.init_state(ids.shape[0])
        for t in range(p, ids.shape[1]):
            torch.testing.assert_close(model.step(ids[:, t], state), full[:, t], rtol=1e-9, atol=1e-9)
        assert state.pos == ids.shape[1]


def test_model_forward_equals_prefill_then_decode(tiny):
    model = R.load_reference(tiny, F64)
    assert model.config.vocab_padded == 1008 and model.config.swa_window == 4
    ids = torch.randint(0, 1001, (2, 20), generator=gen(80))
    _check_prefill_then_step(model, ids, cuts=(0, 1, 2, 3, 9))
    # chunked prefill continuing from a state equals one prefill
    la, state = model.prefill(ids[:, :7])
    lb, _ = model.prefill(ids[:, 7:], state)
    torch.testing.assert_close(torch.cat([la, lb], 1), model.forward(ids), rtol=1e-9, atol=1e-9)


def test_model_hd112_forward_equals_decode(tmp_path):
    make_random_model(str(tmp_path), n_head=2, head_dim=112, layer_kinds=["la", "swa", "conv"],
                      window_size=6, seed=5, vocab_size=1001)
    model = R.load_reference(str(tmp_path), F64)
    ids = torch.randint(0, 1001, (1, 12), generator=gen(81))
    _check_prefill_then_step(model, ids, cuts=(4,))
    out = model.generate_greedy(ids[0, :4].tolist(), 5)
    assert len(out) == 5 and all(0 <= t < 1008 for t in out)


def test_load_bin_with_prefix_metrics_tied_lm_head(tiny, tmp_path):
    make_random_model(str(tmp_path), window_size=8, n_layer=6, seed=3, vocab_size=1001, fmt="bin",
                      prefix=True, metrics_key=True, tied_name="lm_head", decay_key=True)
    raw = torch.load(os.path.join(str(tmp_path), "pytorch_model.bin"), weights_only=True)
    assert "train_metrics.num-tokens.count" in raw and "model.lm_head.weight" in raw
    assert not any(k.endswith("word_embeddings.weight") for k in raw)
    a, b = R.load_reference(tiny, F64), R.load_reference(str(tmp_path), F64)
    ids = torch.randint(0, 1001, (1, 10), generator=gen(82))
    assert torch.equal(a.forward(ids), b.forward(ids))
    emb_only = str(tmp_path / "emb")
    make_random_model(emb_only, window_size=8, n_layer=6, seed=3, vocab_size=1001,
                      tied_name="embedding")
    assert torch.equal(R.load_reference(emb_only, F64).forward(ids), a.forward(ids))


def test_bf16_checkpoints_agree_across_formats(tmp_path):
    kw = dict(window_size=8, n_layer=3, seed=4, dtype="bfloat16", vocab_size=1001)
    make_random_model(str(tmp_path / "s"), **kw)
    make_random_model(str(tmp_path / "b"), fmt="bin", tied_name="both", **kw)
    hdr, _ = st.read_header(str(tmp_path / "s" / "model.safetensors"))
    assert hdr["lm_head.weight"]["dtype"] == "BF16"
    ids = torch.randint(0, 1001, (1, 6), generator=gen(83))
    a = R.load_reference(str(tmp_path / "s"), torch.float32).forward(ids)
    b = R.load_reference(str(tmp_path / "b"), torch.float32).forward(ids)
    assert torch.equal(a, b)


def test_random_config_is_authors_format(tiny):
    with open(os.path.join(tiny, "config.json")) as fh:
        cfg = json.load(fh)
    assert cfg["alt_mixer"]["feature_map"]["input_dim"] == 16
    assert cfg["mixer"]["_target_"].endswith("convolution.BaseConv")
    assert cfg["alt_mixer_2"]["_target_"].endswith("slide_attention.SlidingAttention")
    assert cfg["tie_word_embeddings"] and cfg["n_positions"] == 0
    sd = random_state_dict(cfg, seed=0)
    assert sd["transformer.layers.0.mixer.conv.conv.weight"].shape == (128, 1, 3)


# ----------------------------------------------------------------------------
# safetensors_io
# ----------------------------------------------------------------------------

def test_bf16_rounding_matches_torch():
    vals = np.concatenate([
        np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 1e3,
        np.float32([0.0, -0.0, np.inf, -np.inf, 1e-40, -3e-39, 3.4e38,
                    1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20])])
    bits = st.f32_to_bf16_bits(vals)
    expect = torch.from_numpy(vals).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bits, expect)
    assert np.isnan(st.bf16_bits_to_f32(st.f32_to_bf16_bits(np.float32([np.nan])))).all()
    assert np.array_equal(st.bf16_bits_to_f32(bits), torch.from_numpy(bits.view(np.int16))
                          .view(torch.bfloat16).float().numpy())


def test_safetensors_round_trip_all_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "i64": rng.integers(-2 ** 40, 2 ** 40, (4,)),
        "i32": rng.integers(-2 ** 30, 2 ** 30, (3, 1)).astype(np.int32),
        "bf16": st.BF16(rng.integers(0, 2 ** 16, (5, 3)).astype(np.uint16)),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "torch_bf16": torch.randn(4, 4, generator=gen(3)).to(torch.bfloat16),
        "torch_f32": torch.randn(3, generator=gen(4)),
    }
    path = str(tmp_path / "t.safetensors")
    st.save_file(tensors, path, metadata={"format": "pt"})
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
    assert (8 + n) % 8 == 0
    assert st.load_metadata(path) == {"format": "pt"}
    for mmap in (True, False):
        got = st.load_file(path, mmap=mmap)
        assert set(got) == set(tensors)
        for name, val in tensors.items():
            e = got[name]
            if isinstance(val, st.BF16):
                assert e.dtype == "BF16" and np.array_equal(e.array, val.bits)
            elif isinstance(val, torch.Tensor):
                if val.dtype == torch.bfloat16:
                    assert e.dtype == "BF16"
                    assert np.array_equal(e.array, val.view(torch.int16).numpy().view(np.uint16))
                else:
                    assert e.dtype == "F32" and np.array_equal(e.array, val.numpy())
            else:
                assert e.shape == val.shape and e.array.dtype == val.dtype.newbyteorder("<")
                assert np.array_equal(e.array, val)
    with pytest.raises(ValueError):
        st.save_file({"u16": np.zeros(2, np.uint16)}, path)
