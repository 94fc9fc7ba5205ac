"""Pure-PyTorch reference of the BASED language model: the test oracle.

Written from /work/shared/SPEC.md (sections 1-4, checklist in section 6).  It is
meant to be obviously correct, not fast.  Every op works in float64 (tests) and
float32; the model also runs in bfloat16/float16 for rough comparisons.

Precision rules (the "accumulation dtype" ``acc``): op functions compute in
float64 when any input is float64, otherwise in float32, and return results in
``acc``.  The model keeps the residual stream and the linear-attention state in
``acc`` and casts sublayer inputs/outputs to its compute dtype like the authors.

Tensor layouts (``...`` = optional leading batch dims, shared by all inputs):

* linear attention: q, k ``[..., L, H, f]``, v ``[..., L, H, hd]``;
  state S ``[..., H, D, hd]`` (feature-major, D = 1 + f + f*f, rows ordered
  [1 | x_i | x_i x_j row-major]), z ``[..., H, D]``.  The exact symmetric layout
  (D = 1 + f + f(f+1)/2, rows [x_i x_j, i <= j | x_i | 1], constants on the query
  side) is converted to and from this one by symmetric_to_full_state /
  full_to_symmetric_state; its features are symmetric_feature_maps.
* sliding-window attention / RoPE: ``[..., L, H, hd]``; positions are 1-D.
* short conv: a ``[..., L, C]`` (channels last), weight ``[C, 1, K]``,
  tail ``[..., K-1, C]`` = the last K-1 inputs, oldest first.

Model decode state (:class:`ReferenceState`): ``pos`` (tokens consumed, equal for
all sequences) and one dict per layer:
  "la":   {"S": [B, H, D, hd] acc, "z": [B, H, D] acc}
  "swa":  {"k": [B, w+1, H, hd] post-RoPE, "v": [B, w+1, H, hd], "pos": [w+1] int64}
          a ring buffer: token at absolute position p lives in slot p % (w+1);
          "pos" holds each slot's absolute position, -1 when empty.
  "conv": {"tail": [B, 2, 2d]} the last two conv inputs a, oldest first (zeros
          before the start).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .safetensors_io import TensorEntry, entry_to_float, load_file

EMB_KEY = "transformer.embeddings.word_embeddings.weight"
HEAD_KEY = "lm_head.weight"


def _acc(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (the authors' fp32 reductions)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# =============================================================================
# ops
# =============================================================================

def taylor_feature_map(x: torch.Tensor, feature_dim: Optional[int] = None) -> torch.Tensor:
    """TaylorExp: [..., f] -> [..., 1 + f + f^2] = [1, x/f^(1/4), x_i x_j/(sqrt2 sqrt f)].

    ``feature_dim`` is the constant f (config ``feature_map.input_dim``); it
    defaults to x.shape[-1].  phi(q).phi(k) = 1 + s + s^2/2 with s = q.k/sqrt(f).
    """
    f = float(feature_dim if feature_dim is not None else x.shape[-1])
    ones = torch.ones(x.shape[:-1] + (1,), dtype=x.dtype, device=x.device)
    second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (math.sqrt(2.0) * math.sqrt(f))
    return torch.cat([ones, x / f ** 0.25, second], dim=-1)


def _state_feature_width(D: int, full: bool) -> int:
    """The feature width n of a state with D rows (full: 1 + n + n^2; else 1 + n + n(n+1)/2)."""
    # solve the quadratic in n, then check, so that a wrong D is an error, not a wrong n
    disc = 4 * D - 3 if full else 8 * D + 1
    n = (math.isqrt(disc) - (1 if full else 3)) // 2
    if n < 0 or D != (1 + n + n * n if full else 1 + n + n * (n + 1) // 2):
        raise ValueError(f"{D} rows is not a {'full' if full else 'symmetric'} linear-attention state size")
    return n


def _symmetric_map(n: int, f: float, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """For every full-layout row r (1 + n + n^2 of them): the symmetric row it comes from and the
    factor, so that full[r] = sym[src[r]] * scale[r] exactly (SPEC 2.1 "Optional compression")."""
    P = n * (n + 1) // 2
    iu, ju = torch.triu_indices(n, n, device=device)  # row-major upper triangle: the pair order
    pair = torch.empty(n, n, dtype=torch.int64, device=device)
    pair[iu, ju] = torch.arange(P, device=device)
    pair[ju, iu] = pair[iu, ju]  # x_i x_j and x_j x_i share one symmetric row
    src = torch.cat([torch.tensor([P + n], device=device),       # row 0: the count
                     torch.arange(P, P + n, device=device),        # rows 1 + i: x_i
                     pair.flatten()])                              # rows 1 + n + n*i + j
    # float64 constants: callers cast to their acc dtype
    scale = torch.cat([torch.ones(1, dtype=torch.float64), torch.full((n,), f ** -0.25, dtype=torch.float64),
                       torch.full((n * n,), 1.0 / (math.sqrt(2.0) * math.sqrt(f)), dtype=torch.float64)])
    return src, scale.to(device)


def symmetric_feature_maps(x: torch.Tensor, feature_dim: Optional[int] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The exact symmetric form of TaylorExp: [..., n] -> (phi_q, phi_k), each [..., 1 + n + n(n+1)/2].

    Rows [0, P), P = n(n+1)/2, are the pairs i <= j in row-major order of the
    upper triangle (i = 0: j = 0..n-1; i = 1: j = 1..n-1; ...); rows P + i are
    x_i; row P + n is 1.  The key side keeps the products unscaled (x_i x_j,
    x_i, 1), which is what the symmetric state sums; every constant moves to the
    query side: x_i x_j / f (i < j), x_i^2 / (2f), x_i / sqrt(f), 1.  Then
    phi_q(q).phi_k(k) = 1 + s + s^2/2 with s = q.k/sqrt(f), exactly
    taylor_feature_map(q).taylor_feature_map(k), with fewer rows (153 for n = 16).
    ``feature_dim`` is the constant f as in taylor_feature_map (default n).
    """
    n = x.shape[-1]
    f = float(feature_dim if feature_dim is not None else n)
    iu, ju = torch.triu_indices(n, n, device=x.device)
    prod = x[..., iu] * x[..., ju]
    ones = torch.ones(x.shape[:-1] + (1,), dtype=x.dtype, device=x.device)
    # an off-diagonal pair stands for both x_i x_j and x_j x_i of the full form
    w = torch.full(iu.shape, 1.0 / f, dtype=torch.float64, device=x.device)
    w[iu == ju] = 0.5 / f
    w = w.to(x.dtype)
    phi_q = torch.cat([prod * w, x / math.sqrt(f), ones], dim=-1)
    phi_k = torch.cat([prod, x, ones], dim=-1)
    return phi_q, phi_k


def symmetric_to_full_state(S: torch.Tensor, z: torch.Tensor, feature_dim: Optional[int] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A symmetric-layout LA state (S [..., Ds, hd], z [..., Ds], see symmetric_feature_maps) in
    the full TaylorExp layout (D = 1 + n + n^2): every full row is one symmetric row times its
    constant (x_i x_j and x_j x_i both get the pair (min, max)).  Exact up to that one rounding.
    Returns acc dtype; ``feature_dim`` is f (default n, the width the rows imply).
    """
    if S.shape[-2] != z.shape[-1]:
        raise ValueError(f"S has {S.shape[-2]} rows but z has {z.shape[-1]}")
    n = _state_feature_width(z.shape[-1], full=False)
    src, scale = _symmetric_map(n, float(feature_dim if feature_dim is not None else n), z.device)
    acc = _acc(S, z)
    scale = scale.to(acc)
    return (S.to(acc).index_select(-2, src) * scale.unsqueeze(-1),
            z.to(acc).index_select(-1, src) * scale)


def full_to_symmetric_state(S: torch.Tensor, z: torch.Tensor, feature_dim: Optional[int] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The inverse of symmetric_to_full_state: a full-layout state (D = 1 + n + n^2 rows) in the
    symmetric layout.  A pair row i < j is the mean of the full rows x_i x_j and x_j x_i (equal in
    any state that is a sum of features) over their constant; the other rows are one full row
    over its constant.  Returns acc dtype.
    """
    if S.shape[-2] != z.shape[-1]:
        raise ValueError(f"S has {S.shape[-2]} rows but z has {z.shape[-1]}")
    n = _state_feature_width(z.shape[-1], full=True)
    src, scale = _symmetric_map(n, float(feature_dim if feature_dim is not None else n), z.device)
    acc = _acc(S, z)
    Ds = 1 + n + n * (n + 1) // 2
    count = torch.bincount(src, minlength=Ds).to(acc)  # 2 for off-diagonal pairs, else 1
    inv = 1.0 / (scale.to(acc) * count[src])
    zs = torch.zeros(z.shape[:-1] + (Ds,), dtype=acc, device=z.device)
    Ss = torch.zeros(S.shape[:-2] + (Ds, S.shape[-1]), dtype=acc, device=S.device)
    return (Ss.index_add(-2, src, S.to(acc) * inv.unsqueeze(-1)),
            zs.index_add(-1, src, z.to(acc) * inv))


def linear_attention_prefill(q, k, v, feature_dim=None, state=None, eps=1e-12, chunk=256):
    """Causal Taylor linear attention (diagonal included), parallel form.

    q, k: [..., L, H, f]; v: [..., L, H, hd]; state: optional (S, z) to continue
    from.  Returns (y [..., L, H, hd], S [..., H, D, hd], z [..., H, D]), all in
    acc dtype, where y_t = phi(q_t).S_t / (phi(q_t).z_t + eps) and S_t, z_t sum
    phi(k_j) v_j^T and phi(k_j) over every j <= t (plus the initial state).
    Queries are processed ``chunk`` at a time (quadratic inside a chunk, the
    running state across chunks) only to bound memory; the math is unchanged.
    """
    acc = _acc(q, k, v)
    qh = q.to(acc).transpose(-3, -2)  # [..., H, L, f]
    kh = k.to(acc).transpose(-3, -2)
    vh = v.to(acc).transpose(-3, -2)  # [..., H, L, hd]
    fdim = feature_dim if feature_dim is not None else q.shape[-1]
    D = 1 + q.shape[-1] + q.shape[-1] ** 2
    batch_h = qh.shape[:-2]
    if state is None:
        S = torch.zeros(batch_h + (D, v.shape[-1]), dtype=acc, device=q.device)
        z = torch.zeros(batch_h + (D,), dtype=acc, device=q.device)
    else:
        S, z = state[0].to(acc).clone(), state[1].to(acc).clone()
    L = q.shape[-3]
    ys = []
    for c0 in range(0, L, chunk):
        c1 = min(L, c0 + chunk)
        pq = taylor_feature_map(qh[..., c0:c1, :], fdim)  # [..., H, C, D]
        pk = taylor_feature_map(kh[..., c0:c1, :], fdim)
        vc = vh[..., c0:c1, :]
        A = torch.tril(pq @ pk.transpose(-1, -2))  # kappa(q_t, k_j) for j <= t
        num = A @ vc + pq @ S
        den = A.sum(-1) + (pq @ z.unsqueeze(-1)).squeeze(-1)
        ys.append(num / (den + eps).unsqueeze(-1))
        S = S + pk.transpose(-1, -2) @ vc
        z = z + pk.sum(-2)
    if ys:
        y = torch.cat(ys, dim=-2)
    else:
        y = torch.zeros(batch_h + (0, v.shape[-1]), dtype=acc, device=q.device)
    return y.transpose(-3, -2), S, z


def linear_attention_decode(q, k, v, S, z, feature_dim=None, eps=1e-12):
    """One recurrent step: S += phi(k) v^T, z += phi(k) (first), then read out.

    q, k: [..., H, f]; v: [..., H, hd]; S: [..., H, D, hd]; z: [..., H, D].
    Returns (y [..., H, hd], S_new, z_new) in acc dtype; inputs are not modified.
    """
    acc = _acc(q, k, v, S, z)
    pq = taylor_feature_map(q.to(acc), feature_dim)
    pk = taylor_feature_map(k.to(acc), feature_dim)
    S = S.to(acc) + pk.unsqueeze(-1) * v.to(acc).unsqueeze(-2)
    z = z.to(acc) + pk
    num = (pq.unsqueeze(-1) * S).sum(-2)
    den = (pq * z).sum(-1)
    return num / (den + eps).unsqueeze(-1), S, z


def rope(x, positions, base=10000.0, rotary_dim=None, angle_dtype=None):
    """Rotate-half (GPT-NeoX, non-interleaved) RoPE at absolute positions.

    x: [..., L, H, hd]; positions: int tensor broadcastable to x.shape[:-2]
    (e.g. [L] or [B, L]).  The first ``rotary_dim`` (default hd) features are
    rotated in pairs (i, i + rotary_dim/2) by angle p * base^(-2i/rotary_dim);
    the rest pass through.  Angles are computed in ``angle_dtype`` (default:
    float64 for float64 x, else float32 like flash-attn) and cos/sin are cast
    to x.dtype before the rotation, as the authors do.  Returns x.dtype.
    """
    hd = x.shape[-1]
    rd = hd if rotary_dim is None else int(rotary_dim)
    if rd == 0:
        return x
    if rd % 2 or rd > hd:
        raise ValueError(f"rotary_dim {rd} must be even and <= head dim {hd}")
    adt = angle_dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    inv_freq = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=adt, device=x.device) / rd))
    pos = torch.as_tensor(positions, device=x.device).to(adt)
    ang = pos.unsqueeze(-1) * inv_freq  # [..., L, rd/2]
    cos = torch.cos(ang).to(x.dtype).unsqueeze(-2)  # broadcast over heads
    sin = torch.sin(ang).to(x.dtype).unsqueeze(-2)
    half = rd // 2
    x1, x2, rest = x[..., :half], x[..., half:rd], x[..., rd:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def sliding_window_attention(q, k, v, window, q_positions=None, k_positions=None,
                             scale=None, block=256):
    """Banded causal softmax attention (prefill form); q and k already rotated.

    q: [..., Lq, H, hd]; k, v: [..., Lk, H, hd]; positions: 1-D int tensors
    (defaults: keys 0..Lk-1, queries the last Lq of those).  Query at position p
    attends keys with positions in [p - window, p] (window = W//2 past tokens
    plus the current one), softmax scale hd^-0.5 unless given.  A query with no
    visible key gets zeros.  Returns [..., Lq, H, hd] in acc dtype.
    """
    acc = _acc(q, k, v)
    Lq, Lk, hd = q.shape[-3], k.shape[-3], q.shape[-1]
    scale = hd ** -0.5 if scale is None else scale
    kp = torch.arange(Lk) if k_positions is None else torch.as_tensor(k_positions).reshape(-1)
    qp = torch.arange(Lk - Lq, Lk) if q_positions is None else torch.as_tensor(q_positions).reshape(-1)
    kp, qp = kp.to(q.device, torch.int64), qp.to(q.device, torch.int64)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    outs = []
    for b0 in range(0, Lq, block):
        qpb = qp[b0:b0 + block]
        # only keys that some query of this block can see, to bound memory
        sel = ((kp >= qpb.min() - window) & (kp <= qpb.max())).nonzero().flatten()
        kb, vb, kpb = ka.index_select(-3, sel), va.index_select(-3, sel), kp[sel]
        s = torch.einsum("...qhd,...khd->...hqk", qa[..., b0:b0 + block, :, :], kb) * scale
        ok = (kpb[None, :] <= qpb[:, None]) & (kpb[None, :] >= qpb[:, None] - window)
        s = s.masked_fill(~ok, float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # all-masked rows -> 0
        outs.append(torch.einsum("...hqk,...khd->...qhd", p, vb))
    if not outs:
        return torch.zeros(q.shape, dtype=acc, device=q.device)
    return torch.cat(outs, dim=-3)


def sliding_window_attention_decode(q, k_cache, v_cache, cache_positions, position,
                                    window, scale=None):
    """Decode form: one query per sequence against a cache of post-RoPE keys.

    q: [..., H, hd]; k_cache, v_cache: [..., S, H, hd] (any slot order, e.g. a
    ring buffer); cache_positions: int [..., S] or [S], each slot's absolute
    position, -1 for empty slots; position: the query's absolute position (int
    or [...]).  The current token must already be in the cache.  Attends the
    slots with position in [position - window, position].  Returns acc dtype.
    """
    acc = _acc(q, k_cache, v_cache)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cp = torch.as_tensor(cache_positions, device=q.device)
    p = torch.as_tensor(position, device=q.device)
    p = p.reshape(p.shape + (1,)) if p.dim() else p
    ok = (cp >= 0) & (cp <= p) & (cp >= p - window)  # [..., S]
    s = torch.einsum("...hd,...shd->...hs", q.to(acc), k_cache.to(acc)) * scale
    s = s.masked_fill(~ok.unsqueeze(-2), float("-inf"))
    w = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("...hs,...shd->...hd", w, v_cache.to(acc))


def short_conv(a, weight, tail=None):
    """Causal depthwise conv (cross-correlation, tap K-1 = current token).

    a: [..., L, C]; weight: [C, 1, K] or [C, K]; tail: [..., K-1, C] previous
    inputs oldest first (zeros if None).  c_t = sum_j w[:, j] a_{t-(K-1)+j}.
    Returns (c [..., L, C], new_tail [..., K-1, C]) in acc dtype; new_tail is
    the last K-1 inputs of tail ++ a (still zero-padded when fewer were seen).
    """
    w = weight.reshape(weight.shape[0], -1)
    K = w.shape[-1]
    acc = _acc(a, w)
    if tail is None:
        tail = torch.zeros(a.shape[:-2] + (K - 1, a.shape[-1]), dtype=acc, device=a.device)
    x = torch.cat([tail.to(acc), a.to(acc)], dim=-2)  # [..., L+K-1, C]
    L = a.shape[-2]
    c = sum(x[..., j:j + L, :] * w[:, j].to(acc) for j in range(K))
    return c, x[..., x.shape[-2] - (K - 1):, :]


def short_conv_step(a, weight, tail):
    """Decode form of short_conv: a [..., C] one token; tail [..., K-1, C].

    Returns (c [..., C], new_tail [..., K-1, C]) in acc dtype.
    """
    w = weight.reshape(weight.shape[0], -1)
    acc = _acc(a, w, tail)
    window = torch.cat([tail.to(acc), a.to(acc).unsqueeze(-2)], dim=-2)  # [..., K, C]
    c = (window * w.to(acc).transpose(0, 1)).sum(-2)
    return c, window[..., 1:, :]


def rmsnorm(x, w, eps=1e-5):
    """y = x * rsqrt(mean(x^2) + eps) * w over the last dim, in acc dtype."""
    acc = _acc(x, w)
    xa = x.to(acc)
    return xa * torch.rsqrt(xa.pow(2).mean(-1, keepdim=True) + eps) * w.to(acc)


def swiglu(u):
    """SwiGLU of fc1's output u [..., 2n]: first half value, second half gate.

    Returns value * silu(gate) [..., n] in acc dtype.
    """
    acc = _acc(u)
    n = u.shape[-1] // 2
    return u[..., :n].to(acc) * F.silu(u[..., n:].to(acc))


# =============================================================================
# configuration
# =============================================================================

@dataclass
class ReferenceConfig:
    """The model hyper-parameters, derived from config.json by SPEC 1.5 rules."""

    d_model: int
    n_layer: int
    n_head: int               # SWA heads (always n_head)
    head_dim: int             # d_model // n_head
    n_inner: Optional[int]    # config value; the real width comes from fc2's shape
    vocab_size: int
    pad_vocab_size_multiple: int
    vocab_padded: int
    norm_eps: float
    layer_kinds: List[str]    # "conv" | "la" | "swa" per layer
    la_heads: int
    la_feature_dim: int       # q/k width per head (alt_mixer.feature_dim)
    la_feature_map_dim: int   # f in the TaylorExp constants (feature_map.input_dim)
    la_head_dim: int          # d_model // la_heads
    la_eps: float
    window_size: Optional[int]  # config W
    swa_window: Optional[int]   # W // 2 past tokens attended
    rotary_dim: int
    rope_base: float
    softmax_scale: float        # before the optional per-layer 1/(layer+1)
    scale_by_inverse_layer_idx: bool
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, cfg: Dict[str, Any]) -> "ReferenceConfig":
        d, n_layer, n_head = int(cfg["n_embd"]), int(cfg["n_layer"]), int(cfg["n_head"])
        if d % n_head:
            raise ValueError(f"n_head {n_head} does not divide n_embd {d}")
        if cfg.get("activation_function", "swiglu") != "swiglu":
            raise ValueError("only activation_function 'swiglu' is supported")
        if not cfg.get("rms_norm", True):
            raise ValueError("only rms_norm=true models are supported")
        if cfg.get("n_head_kv") not in (None, n_head):
            raise ValueError("grouped-query SWA (n_head_kv) is not supported")
        if cfg.get("rotary_emb_interleaved", False) or cfg.get("rotary_emb_scale_base") is not None:
            raise ValueError("interleaved / scaled rotary embeddings are not supported")
        swa_layers = set(int(i) for i in (cfg.get("alt_mixer_2_layers") or []))
        la_layers = set(int(i) for i in (cfg.get("alt_mixer_layers") or []))
        # alt_mixer_2 is checked first, exactly like the authors' create_mixer_cls
        kinds = ["swa" if i in swa_layers else "la" if i in la_layers else "conv"
                 for i in range(n_layer)]

        def target(key: str, cls_name: str) -> Dict[str, Any]:
            m = cfg.get(key)
            if not isinstance(m, dict) or not str(m.get("_target_", "")).endswith(cls_name):
                raise ValueError(f"config '{key}' must be a dict with _target_ ...{cls_name}")
            return m

        if "conv" in kinds:
            target("mixer", "BaseConv")
        la = target("alt_mixer", "LinearAttention") if "la" in kinds else (cfg.get("alt_mixer") or {})
        swa = target("alt_mixer_2", "SlidingAttention") if "swa" in kinds else (cfg.get("alt_mixer_2") or {})
        la_heads = int(la.get("num_heads", 16))
        la_fd = int(la.get("feature_dim", 16))
        fmap = la.get("feature_map") or {}
        if fmap and not str(fmap.get("_target_", "TaylorExp")).endswith("TaylorExp"):
            raise ValueError("only the TaylorExp feature map is supported")
        la_fmd = int(fmap.get("input_dim", la_fd))
        impl = str(la.get("parallel_implementation", "quadratic"))
        la_eps = 1e-6 if "fla" in impl else float(la.get("eps", 1e-12))
        W = swa.get("window_size")
        hd = d // n_head
        vocab, mult = int(cfg["vocab_size"]), int(cfg.get("pad_vocab_size_multiple", 1) or 1)
        return cls(
            d_model=d, n_layer=n_layer, n_head=n_head, head_dim=hd,
            n_inner=cfg.get("n_inner"), vocab_size=vocab, pad_vocab_size_multiple=mult,
            vocab_padded=-(-vocab // mult) * mult,
            norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)), layer_kinds=kinds,
            la_heads=la_heads, la_feature_dim=la_fd, la_feature_map_dim=la_fmd,
            la_head_dim=d // la_heads, la_eps=la_eps,
            window_size=None if W is None else int(W), swa_window=None if W is None else int(W) // 2,
            # authors: int(getattr(config, "rotary_emb_fraction", 0.0) * head_dim)
            rotary_dim=int(float(cfg.get("rotary_emb_fraction", 0.0)) * hd),
            rope_base=float(cfg.get("rotary_emb_base", 10000.0)),
            softmax_scale=hd ** -0.5 if cfg.get("scale_attn_weights", True) else 1.0,
            scale_by_inverse_layer_idx=bool(cfg.get("scale_attn_by_inverse_layer_idx", False)),
            bos_token_id=cfg.get("bos_token_id"), eos_token_id=cfg.get("eos_token_id"), raw=dict(cfg))


# =============================================================================
# weights
# =============================================================================

def _to_torch(v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, TensorEntry):
        if v.dtype in ("BF16", "F16", "F32", "F64"):
            arr = entry_to_float(v, np.float32 if v.dtype != "F64" else np.float64)
            return torch.from_numpy(np.array(arr))
        return torch.from_numpy(np.array(v.array))
    return torch.from_numpy(np.array(v))  # copy: memmaps are read-only


def canonical_state_dict(state_dict: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Apply the authors' loader renames (SPEC 3) and resolve the tied weight.

    Strips a leading ``model.``, drops keys containing ``metrics`` and the unused
    ``transformer.decay.decay``; fills whichever of lm_head / word_embeddings is
    missing from the other (they are one tensor).
    """
    out: Dict[str, torch.Tensor] = {}
    for key, val in state_dict.items():
        name = key[len("model."):] if key.startswith("model.") else key
        if "metrics" in name or name == "transformer.decay.decay":
            continue
        out[name] = _to_torch(val)
    if EMB_KEY not in out and HEAD_KEY in out:
        out[EMB_KEY] = out[HEAD_KEY]
    if HEAD_KEY not in out and EMB_KEY in out:
        out[HEAD_KEY] = out[EMB_KEY]
    if EMB_KEY in out and not torch.equal(out[EMB_KEY], out[HEAD_KEY]):
        raise ValueError("lm_head.weight differs from the tied word embedding")
    return out


_LAYER_KEYS = {
    "conv": ["mixer.in_proj.weight", "mixer.in_proj.bias", "mixer.conv.conv.weight",
             "mixer.out_proj.weight", "mixer.out_proj.bias"],
    "la": ["mixer.proj_q.weight", "mixer.proj_k.weight", "mixer.proj_v.weight",
           "mixer.out_proj.weight"],
    "swa": ["mixer.Wqkv.weight", "mixer.out_proj.weight"],
}
_COMMON_KEYS = ["norm1.weight", "norm2.weight", "mlp.fc1.weight", "mlp.fc2.weight"]


@dataclass
class ReferenceState:
    """Decode state of a batch; see the module docstring for the layouts."""

    pos: int
    layers: List[Dict[str, torch.Tensor]]


class ReferenceModel:
    """BASED forward (parallel form), prefill, recurrent step and greedy decode.

    ``dtype`` is the compute dtype of weights and activations (float64 for
    tests, float32, or bfloat16/float16).  The residual stream and the LA state
    use float32 (float64 when dtype is float64).  Logits come back in ``dtype``
    with ``vocab_padded`` columns (padded ids are not masked, like the authors).
    """

    def __init__(self, config: Union[Dict[str, Any], ReferenceConfig],
                 state_dict: Dict[str, Any], dtype: Union[torch.dtype, str] = torch.float64):
        self.config = config if isinstance(config, ReferenceConfig) else ReferenceConfig.from_dict(config)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.acc = torch.float64 if self.dtype == torch.float64 else torch.float32
        sd = canonical_state_dict(state_dict)
        c = self.config
        expected = {EMB_KEY, HEAD_KEY, "transformer.ln_f.weight"}
        for i, kind in enumerate(c.layer_kinds):
            expected |= {f"transformer.layers.{i}.{k}" for k in _COMMON_KEYS + _LAYER_KEYS[kind]}
        missing, unexpected = sorted(expected - sd.keys()), sorted(sd.keys() - expected)
        if missing or unexpected:
            raise KeyError(f"state dict mismatch: missing {missing[:8]} unexpected {unexpected[:8]}")
        self.w = {k: v.to(self.dtype) for k, v in sd.items()}
        emb = self.w[EMB_KEY]
        if tuple(emb.shape) != (c.vocab_padded, c.d_model):
            raise ValueError(f"embedding shape {tuple(emb.shape)} != ({c.vocab_padded}, {c.d_model})")
        for i, kind in enumerate(c.layer_kinds):
            p = f"transformer.layers.{i}."
            hid = self.w[p + "mlp.fc2.weight"].shape[1]
            if self.w[p + "mlp.fc1.weight"].shape != (2 * hid, c.d_model):
                raise ValueError(f"layer {i}: fc1 shape does not match fc2 (hidden {hid})")
            if kind == "la" and self.w[p + "mixer.proj_q.weight"].shape != (c.la_heads * c.la_feature_dim, c.d_model):
                raise ValueError(f"layer {i}: proj_q shape does not match alt_mixer heads x feature_dim")
            if kind == "swa" and c.swa_window is None:
                raise ValueError("alt_mixer_2.window_size is missing")

    # ------------------------------------------------------------------ helpers
    def _p(self, i: int, name: str) -> torch.Tensor:
        return self.w[f"transformer.layers.{i}.{name}"]

    def _scale(self, i: int) -> float:
        c = self.config
        return c.softmax_scale / (i + 1) if c.scale_by_inverse_layer_idx else c.softmax_scale

    def _norm(self, r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # normalise the fp32 residual directly (fused add+norm), output in dtype
        return rmsnorm(r, weight, self.config.norm_eps).to(self.dtype)

    def _mlp(self, i: int, h: torch.Tensor) -> torch.Tensor:
        u = h @ self._p(i, "mlp.fc1.weight").T
        return swiglu(u).to(self.dtype) @ self._p(i, "mlp.fc2.weight").T

    def _new_layer_state(self, i: int, kind: str, batch: int) -> Dict[str, torch.Tensor]:
        c = self.config
        if kind == "la":
            D = 1 + c.la_feature_dim + c.la_feature_dim ** 2
            return {"S": torch.zeros(batch, c.la_heads, D, c.la_head_dim, dtype=self.acc),
                    "z": torch.zeros(batch, c.la_heads, D, dtype=self.acc)}
        if kind == "swa":
            n = c.swa_window + 1
            return {"k": torch.zeros(batch, n, c.n_head, c.head_dim, dtype=self.dtype),
                    "v": torch.zeros(batch, n, c.n_head, c.head_dim, dtype=self.dtype),
                    "pos": torch.full((n,), -1, dtype=torch.int64)}
        K = self._p(i, "mixer.conv.conv.weight").shape[-1]
        C = self._p(i, "mixer.conv.conv.weight").shape[0]
        return {"tail": torch.zeros(batch, K - 1, C, dtype=self.dtype)}

    def init_state(self, batch: int) -> ReferenceState:
        """An empty decode state (no tokens seen) for ``batch`` sequences."""
        return ReferenceState(0, [self._new_layer_state(i, k, batch)
                                  for i, k in enumerate(self.config.layer_kinds)])

    # ------------------------------------------------------- mixers, parallel
    def _conv_mixer(self, i, h, st):
        u = h @ self._p(i, "mixer.in_proj.weight").T + self._p(i, "mixer.in_proj.bias")
        C = u.shape[-1] // 2
        a, g = u[..., :C], u[..., C:]  # first half convolved, second half gate
        if st is None:
            cv, _ = short_conv(a, self._p(i, "mixer.conv.conv.weight"))
        else:
            cv, tail = short_conv(a, self._p(i, "mixer.conv.conv.weight"), st["tail"])
            st["tail"] = tail.to(self.dtype)
        y = F.silu(cv.to(self.dtype)) * g
        return y @ self._p(i, "mixer.out_proj.weight").T + self._p(i, "mixer.out_proj.bias")

    def _la_qkv(self, i, h):
        c = self.config
        q = (h @ self._p(i, "mixer.proj_q.weight").T).unflatten(-1, (c.la_heads, c.la_feature_dim))
        k = (h @ self._p(i, "mixer.proj_k.weight").T).unflatten(-1, (c.la_heads, c.la_feature_dim))
        v = (h @ self._p(i, "mixer.proj_v.weight").T).unflatten(-1, (c.la_heads, c.la_head_dim))
        return q, k, v

    def _la_mixer(self, i, h, st):
        c = self.config
        q, k, v = self._la_qkv(i, h)
        init = None if st is None else (st["S"], st["z"])
        y, S, z = linear_attention_prefill(q, k, v, c.la_feature_map_dim, init, c.la_eps)
        if st is not None:
            st["S"], st["z"] = S, z
        return y.to(self.dtype).flatten(-2) @ self._p(i, "mixer.out_proj.weight").T

    def _swa_qkv(self, i, h, positions):
        c = self.config
        q, k, v = (h @ self._p(i, "mixer.Wqkv.weight").T).unflatten(-1, (3, c.n_head, c.head_dim)).unbind(-3)
        q = rope(q, positions, c.rope_base, c.rotary_dim)
        k = rope(k, positions, c.rope_base, c.rotary_dim)
        return q, k, v

    def _swa_mixer(self, i, h, st, pos0):
        c = self.config
        L = h.shape[-2]
        positions = torch.arange(pos0, pos0 + L)
        q, k, v = self._swa_qkv(i, h, positions)
        kp = positions
        if st is not None and pos0 > 0:  # continue from the ring buffer
            order = torch.argsort(st["pos"])
            order = order[st["pos"][order] >= 0]
            k = torch.cat([st["k"][:, order], k], dim=1)
            v = torch.cat([st["v"][:, order], v], dim=1)
            kp = torch.cat([st["pos"][order], positions])
        o = sliding_window_attention(q, k, v, c.swa_window, positions, kp, self._scale(i))
        if st is not None:
            n = c.swa_window + 1
            keep = slice(max(0, k.shape[1] - n), k.shape[1])
            slots = kp[keep] % n
            st["k"][:, slots], st["v"][:, slots], st["pos"][slots] = k[:, keep], v[:, keep], kp[keep]
        return o.to(self.dtype).flatten(-2) @ self._p(i, "mixer.out_proj.weight").T

    # ------------------------------------------------------------ full passes
    def _run(self, ids: torch.Tensor, state: Optional[ReferenceState]) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.int64)
        if ids.dim() != 2:
            raise ValueError("ids must be [B, L]")
        pos0 = 0 if state is None else state.pos
        r = self.w[EMB_KEY][ids].to(self.acc)  # residual stream, fp32 (or fp64)
        for i, kind in enumerate(self.config.layer_kinds):
            st = None if state is None else state.layers[i]
            h = self._norm(r, self._p(i, "norm1.weight"))
            if kind == "conv":
                y = self._conv_mixer(i, h, st)
            elif kind == "la":
                y = self._la_mixer(i, h, st)
            else:
                y = self._swa_mixer(i, h, st, pos0)
            r = r + y.to(self.acc)
            r = r + self._mlp(i, self._norm(r, self._p(i, "norm2.weight"))).to(self.acc)
        if state is not None:
            state.pos += ids.shape[1]
        return self._norm(r, self.w["transformer.ln_f.weight"]) @ self.w[HEAD_KEY].T

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Parallel form over a whole batch: ids [B, L] -> logits [B, L, V_pad]."""
        return self._run(ids, None)

    __call__ = forward

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, state: Optional[ReferenceState] = None
                ) -> Tuple[torch.Tensor, ReferenceState]:
        """Parallel forms plus state capture: ids [B, L] -> (logits [B, L, V_pad], state).

        With ``state`` given, continues from it (chunked prefill) and updates it
        in place; otherwise starts from an empty state.
        """
        ids = torch.as_tensor(ids, dtype=torch.int64)
        state = self.init_state(ids.shape[0]) if state is None else state
        return self._run(ids, state), state

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: ReferenceState) -> torch.Tensor:
        """One token per sequence with the recurrent forms: ids [B] -> logits [B, V_pad].

        Updates ``state`` in place (state.pos advances by one).
        """
        c = self.config
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        p = state.pos
        r = self.w[EMB_KEY][ids].to(self.acc)  # [B, d]
        for i, kind in enumerate(c.layer_kinds):
            st = state.layers[i]
            h = self._norm(r, self._p(i, "norm1.weight"))
            if kind == "conv":
                u = h @ self._p(i, "mixer.in_proj.weight").T + self._p(i, "mixer.in_proj.bias")
                C = u.shape[-1] // 2
                cv, tail = short_conv_step(u[:, :C], self._p(i, "mixer.conv.conv.weight"), st["tail"])
                st["tail"] = tail.to(self.dtype)
                y = (F.silu(cv.to(self.dtype)) * u[:, C:]) @ self._p(i, "mixer.out_proj.weight").T \
                    + self._p(i, "mixer.out_proj.bias")
            elif kind == "la":
                q, k, v = self._la_qkv(i, h)
                o, st["S"], st["z"] = linear_attention_decode(q, k, v, st["S"], st["z"],
                                                              c.la_feature_map_dim, c.la_eps)
                y = o.to(self.dtype).flatten(-2) @ self._p(i, "mixer.out_proj.weight").T
            else:
                q, k, v = self._swa_qkv(i, h.unsqueeze(1), torch.tensor([p]))
                slot = p % (c.swa_window + 1)  # ring index; RoPE used the absolute p
                st["k"][:, slot], st["v"][:, slot], st["pos"][slot] = k[:, 0], v[:, 0], p
                o = sliding_window_attention_decode(q[:, 0], st["k"], st["v"], st["pos"], p,
                                                    c.swa_window, self._scale(i))
                y = o.to(self.dtype).flatten(-2) @ self._p(i, "mixer.out_proj.weight").T
            r = r + y.to(self.acc)
            r = r + self._mlp(i, self._norm(r, self._p(i, "norm2.weight"))).to(self.acc)
        state.pos += 1
        return self._norm(r, self.w["transformer.ln_f.weight"]) @ self.w[HEAD_KEY].T

    @torch.no_grad()
    def generate_greedy(self, prompt: List[int], n: int) -> List[int]:
        """Greedy decode: prefill ``prompt`` then ``n`` argmax steps; new tokens only.

        Argmax runs over all V_pad columns, as in the authors' sampler.
        """
        if not prompt:
            raise ValueError("prompt must hold at least one token")
        if n <= 0:
            return []
        logits, state = self.prefill(torch.tensor([list(prompt)]))
        tok = int(logits[0, -1].argmax())
        out = [tok]
        while len(out) < n:
            tok = int(self.step(torch.tensor([tok]), state)[0].argmax())
            out.append(tok)
        return out


# =============================================================================
# loading
# =============================================================================

def load_state_dict_from_folder(folder: str) -> Dict[str, Any]:
    """Raw (un-renamed) tensors of a model folder.

    Prefers model.safetensors, then a sharded model.safetensors.index.json, then
    pytorch_model.bin (torch.load with weights_only=True).
    """
    st = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    binf = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(st):
        return dict(load_file(st))
    if os.path.exists(index):
        with open(index) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        out: Dict[str, Any] = {}
        for s in shards:
            out.update(load_file(os.path.join(folder, s)))
        return out
    if os.path.exists(binf):
        return torch.load(binf, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")


def load_reference(folder: str, dtype: Union[torch.dtype, str] = torch.float64) -> ReferenceModel:
    """Build a ReferenceModel from a folder in the authors' released layout."""
    with open(os.path.join(folder, "config.json")) as fh:
        cfg = json.load(fh)
    return ReferenceModel(cfg, load_state_dict_from_folder(folder), dtype)
