"""M3: sliding-window attention, windows of 64 and 128 past tokens (band
[p - W, p]), rotate-half RoPE inside, bf16.

Prefill (per sequence [T, 3, H, hd], ring of W+1 rows):
- based_core.ops.swa_prefill, one call per sequence (the op takes one), summed
  GPU kernel time (CUPTI).
- FlexAttention with a sliding-window block mask over the batch: RoPE, layout
  changes and attention in one torch.compile'd function ('flex + RoPE'), and
  the compiled attention alone on pre-rotated [B, H, T, hd] inputs ('flex only').
Decode (one query per sequence at position 2047, B sequences), peers in CUDA
graphs (PERFORMANCE.md section 5: graphs for every decode candidate):
- based_core.ops.swa_decode on a ring of W+1 rows per sequence (CUPTI).
- FlexAttention decode over a static 2048-position KV cache with a
  sliding-window block mask (RoPE and cache write included).
- PyTorch: RoPE, ring write, SDPA over the W+1 ring rows.
Gates: sequence 0 (prefill) or every row (decode) vs the fp64 reference
(reference.rope + sliding_window_attention[_decode]), relative-to-max <= 3e-2.
"""

from __future__ import annotations

import common
from common import result
import torch

from based_core import reference as R

CTX = 2048  # decode position 2047: a Transformer-style cache of 2048 rows


def rope_tables(n, hd, dev, dtype, base=10000.0):
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    ang = torch.arange(n, device=dev, dtype=torch.float32)[:, None] * inv
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return torch.cat([x[..., :h] * cos - x[..., h:] * sin, x[..., h:] * cos + x[..., :h] * sin], dim=-1)


def get_flex(ctx):
    """(flex_attention, create_block_mask, compile, error). Dry runs do not compile:
    uncompiled flex is a slow math path, enough to check the code on the CPU."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as e:
        return None, None, None, f"FlexAttention not available: {e}"
    compile_ = (lambda f: f) if ctx.dry else (lambda f: torch.compile(f, dynamic=False))
    return flex_attention, create_block_mask, compile_, ""


def timed_based(ctx, e, label, call, got_fn, want, tol, warm, iters, before=None, unit_scale=1.0):
    try:
        common.sync(ctx.cuda)  # based_core's stream does not wait for torch's
        gt = common.gate(common.rel_err(got_fn(call()), want), tol, "vs fp64 reference")
        if not gt["ok"]:
            return result(ctx, e, label, "based_core", "FAIL", gate=gt)
        s, how = common.time_kernels(call, ctx.cuda, warm, iters, before)
        result(ctx, e, label, "based_core", "ok", [x * unit_scale for x in s], gate=gt, extra={"timing": how})
    except Exception as ex:
        result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))


def timed_peer(ctx, e, label, fn, want_fn, tol, warm, iters, before=None, unit_scale=1.0, gate_what="vs fp64",
               graph=False):
    try:
        if graph and ctx.cuda:
            g, out = common.cuda_graph(fn)
            g.replay()
            fn, label = g.replay, label + ", CUDA graph"
        else:
            out = fn()
        gt = common.gate(common.rel_err(*want_fn(out)), tol, gate_what)
        if not gt["ok"]:
            return result(ctx, e, label, "peer", "FAIL", gate=gt)
        s = common.time_events(fn, ctx.cuda, warm, iters, before)
        result(ctx, e, label, "peer", "ok", [x * unit_scale for x in s], gate=gt)
    except Exception as ex:
        result(ctx, e, label, "peer", "error", message=ctx.failed(ex))


def run(args):
    ctx = common.Ctx(args, "m3_swa.py")
    dev, act = ctx.device, ctx.act
    tol = 3e-2 if ctx.cuda else 2e-4
    warm, iters = (1, 2) if ctx.dry else (10, 20)
    flex_raw, make_mask, compile_, flex_err = get_flex(ctx)
    flex = None if flex_raw is None else compile_(flex_raw)
    win = torch.tensor(0, device=dev)  # a tensor, so both windows share one compiled kernel

    def band(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= win)

    windows = [8, 16] if ctx.dry else [64, 128]
    pre_shapes = [(2, 64, 2, 64)] if ctx.dry else ([(4, 4096, 16, 64)] if ctx.quick else [(4, 4096, 16, 64), (4, 4096, 16, 112)])
    sec = ctx.section("M3", "Sliding-window attention prefill (RoPE inside)", "time", "ms", "lower", [
        "based_core: one swa_prefill call per sequence, summed GPU kernel time (CUPTI); peers: CUDA events.",
        "limit: max(band FLOPs 4*(W+1)*hd per token-head / 790 TFLOP/s, qkv + out bytes / 3.0 TB/s).",
    ])
    for (B, T, H, hd) in pre_shapes:
        cos, sin = rope_tables(T, hd, dev, act)
        cos4, sin4 = cos.view(1, T, 1, -1), sin.view(1, T, 1, -1)
        for W in windows:
            flops = B * T * H * 4 * (W + 1) * hd
            nbytes = B * T * H * hd * 4 * (2 if ctx.cuda else 4)
            e = common.entry(sec, f"B{B} L{T} H{H} hd{hd} W{W}", dict(B=B, T=T, H=H, hd=hd, window=W),
                             max(flops / common.TENSOR_FLOPS, nbytes / common.HBM_BPS) * 1e3,
                             "max(FLOP/peak, bytes/BW)", "faster than FlexAttention")
            why = ctx.skip_reason(30)
            if why:
                result(ctx, e, "based_core", "based_core", "skipped", message=why)
                continue
            g = torch.Generator(device=dev).manual_seed(W + hd)
            qkv = torch.randn(B, T, 3, H, hd, generator=g, device=dev).to(act)
            x0 = qkv[0].double()
            pos = torch.arange(T, device=dev)
            want = R.sliding_window_attention(R.rope(x0[:, 0], pos), R.rope(x0[:, 1], pos), x0[:, 2], W)
            if flex is None:
                result(ctx, e, "FlexAttention", "peer", "n/a", message=flex_err)
            else:
                try:
                    win.fill_(W)
                    bm = make_mask(band, None, None, T, T, device=dev)

                    def flex_rope_eager():
                        q = rope(qkv[:, :, 0], cos4, sin4).transpose(1, 2)
                        k = rope(qkv[:, :, 1], cos4, sin4).transpose(1, 2)
                        v = qkv[:, :, 2].transpose(1, 2)
                        return flex_raw(q, k, v, block_mask=bm).transpose(1, 2).contiguous()

                    flex_rope = compile_(flex_rope_eager)  # RoPE and transposes fused by inductor
                    timed_peer(ctx, e, "FlexAttention + RoPE", flex_rope, lambda o: (o[0], want), tol, warm, iters)
                    qf = rope(qkv[:, :, 0], cos4, sin4).transpose(1, 2).contiguous()
                    kf = rope(qkv[:, :, 1], cos4, sin4).transpose(1, 2).contiguous()
                    vf = qkv[:, :, 2].transpose(1, 2).contiguous()
                    timed_peer(ctx, e, "FlexAttention only", lambda: flex(qf, kf, vf, block_mask=bm),
                               lambda o: (o[0].transpose(0, 1), want), tol, warm, iters)
                    del qf, kf, vf, bm
                except Exception as ex:
                    result(ctx, e, "FlexAttention", "peer", "error", message=ctx.failed(ex))
            if common.need_based_core(ctx, e, "based_core swa_prefill"):
                ops = common.based_core.ops
                rk = torch.zeros(B, W + 1, H, hd, device=dev, dtype=act)
                rv = torch.zeros_like(rk)
                call = lambda: [ops.swa_prefill(qkv[b], rk[b], rv[b], window=W, start_pos=0) for b in range(B)]
                timed_based(ctx, e, "based_core swa_prefill (per sequence)", call,
                            lambda outs: torch.from_dlpack(outs[0]), want, tol, warm, iters)
            del qkv
            common.free_memory(ctx.cuda)

    # ------------------------------------------------------------------ decode
    sec = ctx.section("M3", "Sliding-window attention decode (one token per sequence at position 2047)",
                      "time", "us", "lower", [
        "based_core: ring of W+1 rows per sequence, GPU kernel time (CUPTI); peers: CUDA events. "
        "L2 flushed before every timed call.",
        "limit: ring K/V read + qkv read + out write at 3.0 TB/s.",
    ])
    H, hd = (2, 64) if ctx.dry else (16, 64)
    P = 40 if ctx.dry else CTX - 1
    batches = [3] if ctx.dry else ([64] if ctx.quick else [1, 64, 256])
    before = common.flush_l2 if ctx.cuda else None
    cosP, sinP = (t[P:P + 1] for t in rope_tables(P + 1, hd, dev, act))
    for B in batches:
        for W in windows:
            Rr = W + 1
            ab = 2 if ctx.cuda else 4
            nbytes = B * H * hd * ab * (2 * Rr + 4)
            e = common.entry(sec, f"B{B} H{H} hd{hd} W{W}", dict(B=B, H=H, hd=hd, window=W, position=P),
                             nbytes / common.HBM_BPS * 1e6, f"{common.fmt_bytes(nbytes)} at 3.0 TB/s",
                             "faster than FlexAttention")
            why = ctx.skip_reason(20)
            if why:
                result(ctx, e, "based_core", "based_core", "skipped", message=why)
                continue
            g = torch.Generator(device=dev).manual_seed(B + W)
            hist_k = torch.randn(B, P, H, hd, generator=g, device=dev).to(act)  # post-RoPE keys
            hist_v = torch.randn(B, P, H, hd, generator=g, device=dev).to(act)
            qkv = torch.randn(B, 3, H, hd, generator=g, device=dev).to(act)
            ring_pos = torch.arange(P - W, P, device=dev)
            ring_k = torch.zeros(B, Rr, H, hd, device=dev, dtype=act)
            ring_v = torch.zeros_like(ring_k)
            ring_k[:, ring_pos % Rr], ring_v[:, ring_pos % Rr] = hist_k[:, ring_pos], hist_v[:, ring_pos]
            # fp64 reference: the ring after the step's write, every row
            x = qkv.double()
            qr = R.rope(x[:, 0].unsqueeze(1), torch.tensor([P]))[:, 0]
            kr = R.rope(x[:, 1].unsqueeze(1), torch.tensor([P]))[:, 0]
            kc, vc = ring_k.double().clone(), ring_v.double().clone()
            kc[:, P % Rr], vc[:, P % Rr] = kr, x[:, 2]
            cpos = torch.full((Rr,), -1, dtype=torch.int64)
            for p in range(P - W, P + 1):
                cpos[p % Rr] = p
            want = R.sliding_window_attention_decode(qr, kc, vc, cpos, P, W)

            def rot():
                return rope(qkv[:, 0], cosP, sinP), rope(qkv[:, 1], cosP, sinP)

            if flex is None:
                result(ctx, e, "FlexAttention decode", "peer", "n/a", message=flex_err)
            else:
                try:
                    win.fill_(W)
                    pos_t = torch.tensor(P, device=dev)
                    bm = make_mask(lambda b, h, q, kv: (kv <= pos_t) & (pos_t - kv <= win), None, None, 1, P + 1,
                                   device=dev)
                    kcache = torch.zeros(B, H, P + 1, hd, device=dev, dtype=act)
                    vcache = torch.zeros_like(kcache)
                    kcache[:, :, :P], vcache[:, :, :P] = hist_k.transpose(1, 2), hist_v.transpose(1, 2)

                    def flex_dec():
                        q, k = rot()
                        kcache[:, :, P], vcache[:, :, P] = k, qkv[:, 2]
                        return flex(q.unsqueeze(2), kcache, vcache, block_mask=bm)[:, :, 0]

                    timed_peer(ctx, e, "FlexAttention decode (2048-row cache)", flex_dec, lambda o: (o, want),
                               tol, warm, iters * 5, before, 1e3, graph=True)
                    del kcache, vcache, bm
                except Exception as ex:
                    result(ctx, e, "FlexAttention decode", "peer", "error", message=ctx.failed(ex))
            rk2, rv2 = ring_k.clone(), ring_v.clone()

            def sdpa_ring():
                q, k = rot()
                rk2[:, P % Rr], rv2[:, P % Rr] = k, qkv[:, 2]
                return torch.nn.functional.scaled_dot_product_attention(
                    q.unsqueeze(2), rk2.transpose(1, 2), rv2.transpose(1, 2))[:, :, 0]

            timed_peer(ctx, e, "PyTorch ring + SDPA", sdpa_ring, lambda o: (o, want), tol, warm, iters * 5,
                       before, 1e3, graph=True)
            if common.need_based_core(ctx, e, "based_core swa_decode"):
                ops = common.based_core.ops
                slots = torch.arange(B, dtype=torch.int32, device=dev)
                positions = torch.full((B,), P, dtype=torch.int32, device=dev)
                call = lambda: ops.swa_decode(qkv, ring_k, ring_v, slots, positions, window=W)
                timed_based(ctx, e, "based_core swa_decode", call, torch.from_dlpack, want, tol, warm, iters * 5,
                            before, 1e3)
            del hist_k, hist_v, ring_k, ring_v, rk2, rv2
            common.free_memory(ctx.cuda)


if __name__ == "__main__":
    raise SystemExit(common.main_guard(run, common.parser(__doc__).parse_args()))
