"""M2: one linear-attention decode step of one layer: H=16, f=16 (D=273), dv=64,
fp32 state S [B, H, D, dv] and z [B, H, D], bf16 q/k/v/y, B = 1/16/64/256.

Candidates:
- based_core.ops.la_decode (slots = 0..B-1): GPU kernel time from CUPTI.
- PyTorch eager step of the same math (feature map, in-place rank-1 state
  update with baddbmm_, read-out with bmm): CUDA events.
- The same PyTorch step captured in a CUDA graph and replayed: CUDA events.
The L2 is flushed before every timed call (the state at B=16 is 18 MB).
Gate: one step from a random state vs the fp64 recurrence
(reference.linear_attention_decode): y within 3e-2, S and z within 2e-4.
Traffic: S and z read + written (the floor), q/k/v read, y written.
Entries "B* sym": based_core with the exact symmetric state (D=153, the Session
default; SPEC 2.1) from a random symmetric state, gated the same way through
reference.symmetric_to_full_state; its limit counts its own (44% smaller) traffic.
"""

from __future__ import annotations

import math

import common
from common import result
import torch

from based_core import reference as R

H, F_DIM = 16, 16
D = 1 + F_DIM + F_DIM * F_DIM
D_SYM = 1 + F_DIM + F_DIM * (F_DIM + 1) // 2


def traffic_bytes(B, dv, act_bytes=2, rows=D):
    return B * H * rows * (dv + 1) * 4 * 2 + B * H * (2 * F_DIM + 2 * dv) * act_bytes


def feature_map(x):
    """Taylor feature map [1, x / f^(1/4), (x_i x_j) / (sqrt(2) sqrt(f))] in fp32."""
    x = x.float()
    f = x.shape[-1]
    outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (math.sqrt(2.0) * math.sqrt(f))
    return torch.cat([torch.ones_like(x[..., :1]), x / f ** 0.25, outer], dim=-1)


def inputs(dev, act, B, dv, rows):
    """q, k, v of one step and a random state S0 [B, H, rows, dv], z0 (> 0) to start from."""
    g = torch.Generator(device=dev).manual_seed(B)
    q = (0.5 * torch.randn(B, H, F_DIM, generator=g, device=dev)).to(act)
    k = (0.5 * torch.randn(B, H, F_DIM, generator=g, device=dev)).to(act)
    v = torch.randn(B, H, dv, generator=g, device=dev).to(act)
    S0 = 0.1 * torch.randn(B, H, rows, dv, generator=g, device=dev)
    z0 = torch.rand(B, H, rows, generator=g, device=dev) + 1
    return q, k, v, S0, z0


def torch_step(q, k, v, S, z, eps=1e-12):
    """One step, update then read out; S, z updated in place (fp32)."""
    B, Hh, dv = v.shape
    fq, fk = feature_map(q).view(B * Hh, 1, D), feature_map(k).view(B * Hh, D, 1)
    S3 = S.view(B * Hh, D, dv)
    S3.baddbmm_(fk, v.float().view(B * Hh, 1, dv))
    z.add_(fk.view(B, Hh, D))
    num = torch.bmm(fq, S3).view(B, Hh, dv)
    den = (fq.view(B, Hh, D) * z).sum(-1, keepdim=True)
    return (num / (den + eps)).to(v.dtype)


def run(args):
    ctx = common.Ctx(args, "m2_la_decode.py")
    sec = ctx.section("M2", "Linear-attention decode step, one layer (H16 f16 dv64, fp32 state)", "time", "us", "lower", [
        "limit: state S and z read + written, plus q/k/v/y, at 3.0 TB/s. extra.GBps = that traffic / median time.",
        "based_core: GPU kernel time from CUPTI (the op also copies the slot ids to the host to check them and "
        "syncs: extra.wall_us_median is the host-side call time). Peers: CUDA events.",
        "L2 flushed (256 MB write) before every timed call, outside the timed region.",
    ])
    dev, act = ctx.device, ctx.act
    dv = 64
    batches = [1, 4] if ctx.dry else [1, 16, 64, 256]
    warm, iters = (2, 3) if ctx.dry else (10, 100)
    before = common.flush_l2 if ctx.cuda else None
    tol = 3e-2 if ctx.cuda else 2e-4
    for B in batches:
        nbytes = traffic_bytes(B, dv, 2 if ctx.cuda else 4)
        target = "<= 5 us" if B == 1 else (">= 80% of HBM bandwidth" if B >= 64 else "")
        e = common.entry(sec, f"B{B}", dict(B=B, H=H, f=F_DIM, dv=dv, state_MB=B * H * D * (dv + 1) * 4 / 1e6),
                         nbytes / common.HBM_BPS * 1e6, f"{common.fmt_bytes(nbytes)} at 3.0 TB/s", target)
        why = ctx.skip_reason(10)
        if why:
            result(ctx, e, "based_core", "based_core", "skipped", message=why)
            continue
        q, k, v, S0, z0 = inputs(dev, act, B, dv, D)
        y_ref, S_ref, z_ref = R.linear_attention_decode(q.double(), k.double(), v.double(), S0.double(),
                                                        z0.double(), F_DIM)

        def check(y, S, z):
            return common.gate(max(common.rel_err(y, y_ref), common.rel_err(S, S_ref) * tol / 2e-4,
                                   common.rel_err(z, z_ref) * tol / 2e-4), tol,
                               "one step vs fp64 (y; state scaled to its 2e-4 tolerance)")

        def gbps(samples_ms):
            return nbytes / (common.summarize(samples_ms)["median"] * 1e-3) / 1e9

        # ---- peers: eager, then CUDA-graphed
        S, z = S0.clone(), z0.clone()
        try:
            gt = check(torch_step(q, k, v, S, z), S, z)
            if gt["ok"]:
                s = common.time_events(lambda: torch_step(q, k, v, S, z), ctx.cuda, warm, iters, before)
                result(ctx, e, "PyTorch eager step", "peer", "ok", [x * 1e3 for x in s], gate=gt,
                       extra={"GBps": gbps(s)})
            else:
                result(ctx, e, "PyTorch eager step", "peer", "FAIL", gate=gt)
        except Exception as ex:
            result(ctx, e, "PyTorch eager step", "peer", "error", message=ctx.failed(ex))
        if ctx.cuda:
            try:
                S.copy_(S0)
                z.copy_(z0)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    torch_step(q, k, v, S.clone(), z.clone())  # warm-up off the capture
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    y_static = torch_step(q, k, v, S, z)
                graph.replay()
                gt = check(y_static, S, z)
                if gt["ok"]:
                    s = common.time_events(graph.replay, True, warm, iters, before)
                    result(ctx, e, "PyTorch step, CUDA graph", "peer", "ok", [x * 1e3 for x in s], gate=gt,
                           extra={"GBps": gbps(s)})
                else:
                    result(ctx, e, "PyTorch step, CUDA graph", "peer", "FAIL", gate=gt)
                del graph
            except Exception as ex:
                result(ctx, e, "PyTorch step, CUDA graph", "peer", "error", message=ctx.failed(ex))
        else:
            result(ctx, e, "PyTorch step, CUDA graph", "peer", "n/a", message="dry run: needs CUDA")

        # ---- based_core
        label = "based_core la_decode"
        if not common.need_based_core(ctx, e, label):
            continue
        ops = common.based_core.ops
        try:
            S.copy_(S0)
            z.copy_(z0)
            slots = torch.arange(B, dtype=torch.int32, device=dev)
            common.sync(ctx.cuda)  # based_core's stream does not wait for torch's
            y = torch.from_dlpack(ops.la_decode(q, k, v, S, z, slots))
            gt = check(y, S, z)
            if not gt["ok"]:
                result(ctx, e, label, "based_core", "FAIL", gate=gt)
                continue
            call = lambda: ops.la_decode(q, k, v, S, z, slots)
            s, how = common.time_kernels(call, ctx.cuda, warm, iters, before)
            wall = common.time_wall(call, ctx.cuda, 0, 20, before)
            result(ctx, e, label, "based_core", "ok", [x * 1e3 for x in s], gate=gt,
                   extra={"timing": how, "GBps": gbps(s), "fraction_of_3TBps": gbps(s) / 3000,
                          "wall_us_median": common.summarize(wall)["median"] * 1e3})
        except Exception as ex:
            result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))
        del S, z, S0, z0
        common.free_memory(ctx.cuda)
        run_symmetric(ctx, sec, B, dv, warm, iters, before, tol)


def run_symmetric(ctx, sec, B, dv, warm, iters, before, tol):
    """based_core la_decode on the 153-row symmetric state (the Session default)."""
    dev, act = ctx.device, ctx.act
    nbytes = traffic_bytes(B, dv, 2 if ctx.cuda else 4, D_SYM)
    target = "<= 5 us" if B == 1 else (">= 80% of HBM bandwidth" if B >= 64 else "")
    e = common.entry(sec, f"B{B} sym", dict(B=B, H=H, f=F_DIM, dv=dv, D=D_SYM,
                                            state_MB=B * H * D_SYM * (dv + 1) * 4 / 1e6),
                     nbytes / common.HBM_BPS * 1e6, f"{common.fmt_bytes(nbytes)} at 3.0 TB/s", target)
    label = "based_core la_decode (symmetric state)"
    why = ctx.skip_reason(10)
    if why:
        result(ctx, e, label, "based_core", "skipped", message=why)
        return
    if not common.need_based_core(ctx, e, label):
        return
    q, k, v, S0, z0 = inputs(dev, act, B, dv, D_SYM)
    Sf, zf = R.symmetric_to_full_state(S0.double(), z0.double(), F_DIM)
    y_ref, S_ref, z_ref = R.linear_attention_decode(q.double(), k.double(), v.double(), Sf, zf, F_DIM)
    try:
        S, z = S0.clone(), z0.clone()
        slots = torch.arange(B, dtype=torch.int32, device=dev)
        common.sync(ctx.cuda)
        ops = common.based_core.ops
        y = torch.from_dlpack(ops.la_decode(q, k, v, S, z, slots, symmetric=True))
        Sx, zx = R.symmetric_to_full_state(S.double(), z.double(), F_DIM)
        gt = common.gate(max(common.rel_err(y, y_ref), common.rel_err(Sx, S_ref) * tol / 2e-4,
                             common.rel_err(zx, z_ref) * tol / 2e-4), tol,
                         "one step vs fp64 (y; state expanded to 273 rows, scaled to its 2e-4 tolerance)")
        if not gt["ok"]:
            result(ctx, e, label, "based_core", "FAIL", gate=gt)
            return
        call = lambda: ops.la_decode(q, k, v, S, z, slots, symmetric=True)
        s, how = common.time_kernels(call, ctx.cuda, warm, iters, before)
        gbps = nbytes / (common.summarize(s)["median"] * 1e-3) / 1e9
        result(ctx, e, label, "based_core", "ok", [x * 1e3 for x in s], gate=gt,
               extra={"timing": how, "GBps": gbps, "fraction_of_3TBps": gbps / 3000})
    except Exception as ex:
        result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))
    common.free_memory(ctx.cuda)


if __name__ == "__main__":
    raise SystemExit(common.main_guard(run, common.parser(__doc__).parse_args()))
