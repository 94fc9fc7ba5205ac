"""Runs each based_core.ops kernel on fresh random inputs and compares it with
the PyTorch reference in float64. Shared by the CPU tests (float32) and the
gpu-marked CUDA tests (bfloat16, float16, float32)."""

import math

import numpy as np
import torch

import based_core
from based_core import reference as R

DT = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Relative-to-max tolerances by activation dtype (inputs are rounded before the
# reference sees them, so this is the kernel's own rounding and accumulation).
TOL = {"float32": 2e-4, "float16": 6e-3, "bfloat16": 3e-2}


def out(t):
    """A based_core result as a float64 CPU torch tensor."""
    return torch.from_numpy(np.asarray(based_core.to_numpy(t), dtype=np.float64))


def close(got, want, dtype, what):
    got = got.double().cpu()
    want = want.double().cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    scale = want.abs().max().item() + 1e-6
    err = (got - want).abs().max().item() / scale
    assert err <= TOL[dtype], f"{what}: max error {err:.3g} x max|ref| > {TOL[dtype]}"
    return err


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand(shape, g, dtype, device, scale=1.0):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(DT[dtype]).to(device)


def state_rows(f, symmetric):
    """D of ops.h's LinearAttentionShape: the full TaylorExp layout or the exact symmetric one."""
    return 1 + f + f * (f + 1) // 2 if symmetric else 1 + f + f * f


def to_op_layout(S, z, symmetric):
    """A full-layout reference state (fp64) as the op's fp32 state of the chosen layout."""
    if symmetric:
        S, z = R.full_to_symmetric_state(S, z)
    return S.float(), z.float()


def to_full_layout(S, z, symmetric):
    """An op's state (any device) as a full-layout fp64 CPU state, to compare with the reference."""
    S, z = S.cpu().double(), z.cpu().double()
    return R.symmetric_to_full_state(S, z) if symmetric else (S, z)


def check_la(device, dtype, T, H, hd, f=16, split=None, seed=0, symmetric=False):
    """LA prefill (optionally in two calls) vs the fp64 parallel form, state included.
    symmetric: the op keeps the symmetric state, compared after conversion to the full layout."""
    g = gen(seed)
    q, k = rand((T, H, f), g, dtype, device, 0.5), rand((T, H, f), g, dtype, device, 0.5)
    v = rand((T, H, hd), g, dtype, device)
    D = state_rows(f, symmetric)
    S = torch.zeros(H, D, hd, dtype=torch.float32, device=device)  # a fresh state is zeros in both layouts
    z = torch.zeros(H, D, dtype=torch.float32, device=device)

    def la(a, b):  # tokens [a, b), continuing from S, z
        return out(based_core.ops.la_prefill(q[a:b], k[a:b], v[a:b], S, z, symmetric=symmetric))

    y = torch.cat([la(0, split), la(split, T)]) if split else la(0, T)
    yr, Sr, zr = R.linear_attention_prefill(q.cpu().double(), k.cpu().double(), v.cpu().double(), feature_dim=f)
    tag = " symmetric" if symmetric else ""
    close(y, yr, dtype, f"la_prefill{tag} y T={T} hd={hd}")
    # the state is fp32 whatever the activation dtype
    Sf, zf = to_full_layout(S, z, symmetric)
    close(Sf, Sr, "float32" if dtype == "float32" else "float16", f"la_prefill{tag} S")
    close(zf, zr, "float32" if dtype == "float32" else "float16", f"la_prefill{tag} z")


def check_la_batched(device, dtype, B, T, H, hd, f=16, seed=0, strided=False, hist=5, symmetric=False):
    """Batched LA prefill (q, k [B, T, H, f], v [B, T, H, hd], states [B, H, D, *]) continuing from
    per-sequence states: vs the fp64 parallel form and vs one call per sequence. strided: q, k are
    token-dim slices of wider tensors and v is a [T, B, H, hd] tensor seen as [B, T, H, hd] (no copies).
    symmetric: the op keeps the symmetric state (the histories converted to it, its result back)."""
    g = gen(seed)
    if strided:
        q = rand((B, T + 3, H, f), g, dtype, device, 0.5)[:, 2:T + 2]
        k = rand((B, T + 1, H, f), g, dtype, device, 0.5)[:, 1:]
        v = rand((T, B, H, hd), g, dtype, device).transpose(0, 1)
    else:
        q, k = rand((B, T, H, f), g, dtype, device, 0.5), rand((B, T, H, f), g, dtype, device, 0.5)
        v = rand((B, T, H, hd), g, dtype, device)
    # a different history per sequence: the states to continue from
    hq, hk = rand((B, hist, H, f), g, dtype, "cpu", 0.5), rand((B, hist, H, f), g, dtype, "cpu", 0.5)
    hv = rand((B, hist, H, hd), g, dtype, "cpu")
    _, S0, z0 = R.linear_attention_prefill(hq.double(), hk.double(), hv.double(), feature_dim=f)
    # a history state is a sum of features, hence symmetric: exactly convertible
    S0op, z0op = to_op_layout(S0, z0, symmetric)
    # the reference continues from the fp32 values the op gets (rounding in the conversion included)
    S0r, z0r = to_full_layout(S0op, z0op, symmetric)
    S, z = S0op.clone().to(device), z0op.clone().to(device)  # the op updates them in place
    y = out(based_core.ops.la_prefill(q, k, v, S, z, symmetric=symmetric))
    assert y.shape == (B, T, H, hd)
    yr, Sr, zr = R.linear_attention_prefill(q.cpu().double(), k.cpu().double(), v.cpu().double(), feature_dim=f,
                                            state=(S0r, z0r))
    tag = " symmetric" if symmetric else ""
    close(y, yr, dtype, f"la_prefill batched{tag} y B={B} T={T} hd={hd}")
    st = "float32" if dtype == "float32" else "float16"
    Sf, zf = to_full_layout(S, z, symmetric)
    close(Sf, Sr, st, f"la_prefill batched{tag} S")
    close(zf, zr, st, f"la_prefill batched{tag} z")
    for b in range(B):  # one sequence per call (3-D form, strided token dim kept), same layout
        Sb, zb = S0op[b].clone().to(device), z0op[b].clone().to(device)
        yb = out(based_core.ops.la_prefill(q[b], k[b], v[b], Sb, zb, symmetric=symmetric))
        close(yb, y[b], dtype, f"la_prefill per-sequence vs batched y b={b}")
        close(Sb.cpu(), S[b].cpu(), st, f"la_prefill per-sequence vs batched S b={b}")
        close(zb.cpu(), z[b].cpu(), st, f"la_prefill per-sequence vs batched z b={b}")


def check_la_decode(device, dtype, B, H, hd, slots=None, f=16, steps=3, seed=0, symmetric=False):
    """LA decode over `steps` tokens for B rows in scattered slots vs fp64 recurrence.
    symmetric: the op keeps the symmetric state; the random initial state is drawn in that layout
    (a random full state is not symmetric, so it has no symmetric form) and given to the
    reference converted to the full one."""
    g = gen(seed)
    n_slots = B * 2 + 1
    slot_ids = torch.randperm(n_slots, generator=g)[:B].to(torch.int32)
    D = state_rows(f, symmetric)
    S0 = (torch.randn(n_slots, H, D, hd, generator=g, dtype=torch.float64) * 0.1).float()
    z0 = (torch.rand(n_slots, H, D, generator=g, dtype=torch.float64) + 1).float()
    S, z = S0.clone().to(device), z0.clone().to(device)
    Sr, zr = to_full_layout(S0[slot_ids.long()], z0[slot_ids.long()], symmetric)
    tag = " symmetric" if symmetric else ""
    for _ in range(steps):
        q, k = rand((B, H, f), g, dtype, device, 0.5), rand((B, H, f), g, dtype, device, 0.5)
        v = rand((B, H, hd), g, dtype, device)
        y = out(based_core.ops.la_decode(q, k, v, S, z, slot_ids.to(device), symmetric=symmetric))
        yr, Sr, zr = R.linear_attention_decode(q.cpu().double(), k.cpu().double(), v.cpu().double(), Sr, zr, f)
        close(y, yr, dtype, f"la_decode{tag} B={B} hd={hd}")
    Sc = S.cpu().double()
    Sf, zf = to_full_layout(Sc[slot_ids.long()], z.cpu()[slot_ids.long()], symmetric)
    close(Sf, Sr, "float32", f"la_decode{tag} S")
    close(zf, zr, "float32", f"la_decode{tag} z")
    untouched = torch.ones(n_slots, dtype=torch.bool)
    untouched[slot_ids.long()] = False
    assert torch.equal(Sc[untouched], S0.double()[untouched]), "la_decode wrote a slot it was not given"


def check_la_layouts_agree(device, dtype, T, H, hd, split, f=16, steps=3, seed=0):
    """The symmetric and the full state layout give the same y from the same inputs: a prefill in
    two calls (the second continuing from the state), then `steps` decode steps. Both compute in
    fp32, so they may differ by fp32 rounding, plus one rounding of y to the activation dtype
    (a value near a rounding boundary can round either way)."""
    g = gen(seed)
    q, k = rand((T + steps, H, f), g, dtype, device, 0.5), rand((T + steps, H, f), g, dtype, device, 0.5)
    v = rand((T + steps, H, hd), g, dtype, device)
    ys, states = {}, {}
    for symmetric in (False, True):
        D = state_rows(f, symmetric)
        S = torch.zeros(H, D, hd, dtype=torch.float32, device=device)
        z = torch.zeros(H, D, dtype=torch.float32, device=device)
        y = [out(based_core.ops.la_prefill(q[a:b], k[a:b], v[a:b], S, z, symmetric=symmetric))
             for a, b in ((0, split), (split, T))]
        slot = torch.zeros(1, dtype=torch.int32, device=device)
        for t in range(T, T + steps):  # the prefill's state seen as a decode state of one slot
            y.append(out(based_core.ops.la_decode(q[t:t + 1], k[t:t + 1], v[t:t + 1], S[None], z[None], slot,
                                                  symmetric=symmetric)))
        ys[symmetric], states[symmetric] = torch.cat(y), to_full_layout(S, z, symmetric)
    a, b = ys[True], ys[False]
    assert a.shape == b.shape == (T + steps, H, hd)
    ulp = {"float32": 0.0, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]  # relative spacing, at most
    limit = ulp * torch.maximum(a.abs(), b.abs()) + 1e-5 * b.abs().max()
    worst = ((a - b).abs() - limit).max().item()
    assert worst <= 0, f"la symmetric vs full y T={T} hd={hd}: differ by more than rounding ({worst:.3g} over)"
    for name, x, y in zip("Sz", states[True], states[False]):
        assert (x - y).abs().max() <= 1e-5 * y.abs().max(), f"la symmetric vs full {name} T={T} hd={hd}"


def check_swa(device, dtype, T, H, hd, window, start=0, split=None, seed=0):
    """SWA prefill (optionally continuing from a ring) vs fp64 banded attention with RoPE."""
    g = gen(seed)
    total = start + T
    qkv = rand((total, 3, H, hd), g, dtype, device)
    R_ = window + 1
    rk = torch.zeros(R_, H, hd, dtype=DT[dtype], device=device)
    rv = torch.zeros_like(rk)
    outs = []
    cuts = [0] + ([start] if start else []) + ([start + split] if split else []) + [total]
    for a, b in zip(cuts[:-1], cuts[1:]):
        outs.append(out(based_core.ops.swa_prefill(qkv[a:b].contiguous(), rk, rv, window=window, start_pos=a)))
    got = torch.cat(outs)[start:]
    x = qkv.cpu().double()
    pos = torch.arange(total)
    q = R.rope(x[:, 0], pos)
    k = R.rope(x[:, 1], pos)
    want = R.sliding_window_attention(q, k, x[:, 2], window)[start:]
    close(got, want, dtype, f"swa_prefill T={T} hd={hd} w={window} start={start}")
    # ring rows hold the last positions' rotated keys at row p % R
    for p in range(max(0, total - R_), total):
        close(rk[p % R_].cpu(), k[p], dtype, f"swa ring key at position {p}")


def swa_decode_inputs(g, dtype, device, B, H, hd, window):
    """(slots, lens on the CPU; rings k, v and qkv on `device`) for a swa_decode step of B rows
    in distinct slots of B + 3, each continuing a sequence of random length and history."""
    n_slots, R_ = B + 3, window + 1
    slots = torch.randperm(n_slots, generator=g)[:B].to(torch.int32)
    lens = torch.randint(0, 3 * R_, (B,), generator=g)
    rk = rand((n_slots, R_, H, hd), g, dtype, device)
    rv = rand((n_slots, R_, H, hd), g, dtype, device)
    qkv = rand((B, 3, H, hd), g, dtype, device)
    return slots, lens, rk, rv, qkv


def check_swa_decode(device, dtype, B, H, hd, window, seed=0):
    g = gen(seed)
    R_ = window + 1
    slots, lens, rk, rv, qkv = swa_decode_inputs(g, dtype, device, B, H, hd, window)
    rk_before, rv_before = rk.cpu().double(), rv.cpu().double()
    got = out(based_core.ops.swa_decode(qkv, rk, rv, slots.to(device), lens.to(torch.int32).to(device), window=window))
    x = qkv.cpu().double()
    for i in range(B):
        p = int(lens[i])
        s = int(slots[i])
        q = R.rope(x[i, 0][None], torch.tensor([p]))[0]
        k = R.rope(x[i, 1][None], torch.tensor([p]))[0]
        kc, vc = rk_before[s].clone(), rv_before[s].clone()
        kc[p % R_], vc[p % R_] = k, x[i, 2]
        cpos = torch.full((R_,), -1, dtype=torch.int64)
        for j in range(max(0, p - R_ + 1), p + 1):
            cpos[j % R_] = j
        want = R.sliding_window_attention_decode(q, kc, vc, cpos, p, window)
        close(got[i], want, dtype, f"swa_decode row {i} pos {p}")


def check_swa_decode_grid_orders(monkeypatch, hd, window, B=64, H=16, seed=5):
    """swa_decode in both CUDA grid orders (BASED_CORE_SWA_GRID: heads of a row adjacent, the
    default, or rows adjacent): each (row, head) is one CTA either way, so output and rings
    must be equal bit for bit."""
    slots, lens, rk, rv, qkv = swa_decode_inputs(gen(seed), "bfloat16", "cuda", B, H, hd, window)
    slots, lens = slots.to("cuda"), lens.to(torch.int32).to("cuda")
    res = {}
    for order in ("rows-inner", "heads-inner"):
        monkeypatch.setenv("BASED_CORE_SWA_GRID", order)
        k, v = rk.clone(), rv.clone()
        y = out(based_core.ops.swa_decode(qkv, k, v, slots, lens, window=window))
        res[order] = (y, k.cpu(), v.cpu())
    a, b = res["rows-inner"], res["heads-inner"]
    assert torch.isfinite(a[0]).all()
    assert torch.equal(a[0], b[0]), "swa_decode output differs between grid orders"
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]), "ring rows differ between grid orders"
    assert not torch.equal(a[1], rk.cpu()), "the step wrote no ring row"


def check_conv(device, dtype, T, C, split=None, seed=0):
    g = gen(seed)
    u = rand((T, 2 * C), g, dtype, device)
    w = rand((C, 3), g, dtype, device, 0.5)
    tail = torch.zeros(2, C, dtype=torch.float32, device=device)
    if split:
        y = torch.cat([out(based_core.ops.conv_prefill(u[:split].contiguous(), w, tail)),
                       out(based_core.ops.conv_prefill(u[split:].contiguous(), w, tail))])
    else:
        y = out(based_core.ops.conv_prefill(u, w, tail))
    x = u.cpu().double()
    c, new_tail = R.short_conv(x[:, :C], w.cpu().double())
    want = torch.nn.functional.silu(c) * x[:, C:]
    close(y, want, dtype, f"conv_prefill T={T}")
    close(tail.cpu(), new_tail, dtype, "conv tail")


def check_conv_decode(device, dtype, B, C, seed=0):
    g = gen(seed)
    n_slots = B + 2
    slots = torch.randperm(n_slots, generator=g)[:B].to(torch.int32)
    tail0 = torch.randn(n_slots, 2, C, generator=g).float()
    tail = tail0.clone().to(device)
    u = rand((B, 2 * C), g, dtype, device)
    w = rand((C, 3), g, dtype, device, 0.5)
    y = out(based_core.ops.conv_decode(u, w, tail, slots.to(device)))
    x = u.cpu().double()
    c, nt = R.short_conv_step(x[:, :C], w.cpu().double(), tail0.double()[slots.long()])
    close(y, torch.nn.functional.silu(c) * x[:, C:], dtype, "conv_decode")
    close(tail.cpu()[slots.long()], nt, dtype, "conv_decode tail")


def check_dense(device, dtype, M, N, K, seed=0):
    """gemm (+bias, +accumulate), rmsnorm, swiglu, embedding, argmax."""
    g = gen(seed)
    x, w, b = rand((M, K), g, dtype, device), rand((N, K), g, dtype, device, K ** -0.5), rand((N,), g, dtype, device)
    xd, wd, bd = x.cpu().double(), w.cpu().double(), b.cpu().double()
    close(out(based_core.ops.gemm(x, w, bias=b)), xd @ wd.T + bd, dtype, f"gemm {M}x{N}x{K}")
    acc = torch.randn(M, N, generator=g).float().to(device)
    acc0 = acc.cpu().double()
    based_core.ops.gemm(x, w, out=acc)
    close(acc.cpu(), acc0 + xd @ wd.T, "float32" if dtype == "float32" else dtype, "gemm accumulate fp32")
    # + bias into an fp32 output: a bias in x's dtype (a separate kernel on the GPU) or an
    # fp32 one (fused into the cuBLASLt epilogue; the GEMV reads it as is)
    for bias in (b, b.float()):
        acc = torch.randn(M, N, generator=g).float().to(device)
        acc0 = acc.cpu().double()
        based_core.ops.gemm(x, w, bias=bias, out=acc)
        close(acc.cpu(), acc0 + xd @ wd.T + bd, "float32" if dtype == "float32" else dtype,
              f"gemm accumulate fp32 + {bias.dtype} bias")
    r = torch.randn(M, K, generator=g).float().to(device)
    nw = rand((K,), g, dtype, device)
    close(out(based_core.ops.rmsnorm(r, nw, eps=1e-5)), R.rmsnorm(r.cpu().double(), nw.cpu().double()), dtype, "rmsnorm")
    u = rand((M, 2 * K), g, dtype, device)
    close(out(based_core.ops.swiglu(u)), R.swiglu(u.cpu().double()), dtype, "swiglu")
    table = rand((N, K), g, dtype, device)
    ids = torch.randint(0, N, (M,), generator=g).to(torch.int32).to(device)
    close(out(based_core.ops.embedding(ids, table)), table.cpu().double()[ids.cpu().long()], "float32", "embedding")
    logits = torch.randn(M, N, generator=g).float().to(device)
    am = based_core.to_numpy(based_core.ops.argmax(logits))
    assert (am == logits.cpu().argmax(-1).numpy()).all(), "argmax"


# --- sampling: a plain Python statement of ops::SampleParams, same RNG ---------
M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def sample_uniform(seed, seq, step):
    h = splitmix64(seed ^ splitmix64(((seq << 32) | step) & M64))
    return (h >> 11) / float(1 << 53)


def sample_reference(row, temperature, top_k, top_p, u):
    x = np.asarray(row, np.float64)
    order = np.argsort(-x, kind="stable")
    keep = np.ones(len(x), bool)
    if 0 < top_k < len(x):
        keep = x >= x[order[top_k - 1]]  # ties at the k-th value are kept
    w = np.where(keep, np.exp((x - x.max()) / temperature), 0.0)
    if top_p < 1.0:
        vals = np.unique(x[keep])[::-1]  # distinct kept logits, descending
        target, acc = top_p * w.sum(), 0.0
        for v in vals:
            acc += w[x == v].sum()
            if acc >= target:
                keep &= x >= v
                break
    w = np.where(keep, w, 0.0)
    c = np.cumsum(w)
    return int(np.searchsorted(c, u * c[-1], side="right").clip(max=np.flatnonzero(keep)[-1]))


def check_sample(device, rows, vocab, temperature, top_k, top_p, seed=5):
    g = gen(seed)
    logits = (torch.randn(rows, vocab, generator=g) * 3).float()
    seqs = torch.randint(0, 1000, (rows,), generator=g).to(torch.int32)
    steps = torch.randint(0, 1000, (rows,), generator=g).to(torch.int32)
    got = based_core.to_numpy(based_core.ops.sample(logits.to(device), seqs.to(device), steps.to(device),
                                                    temperature=temperature, top_k=top_k, top_p=top_p, seed=seed))
    want = [sample_reference(logits[i].numpy(), temperature, top_k, top_p,
                             sample_uniform(seed, int(seqs[i]), int(steps[i]))) for i in range(rows)]
    same = float(np.mean(np.asarray(got) == np.asarray(want)))
    assert same >= 0.98, f"sample: only {same:.2%} of draws match the reference"
    if top_k > 0:  # never outside the top-k support
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1]
        assert all(logits[i, got[i]] >= kth[i] for i in range(rows))
