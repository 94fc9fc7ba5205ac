"""M1: the linear-attention (Taylor, f=16) prefill op, B x H heads, bf16 in/out, fp32 state.

Candidates (all on [B, T, H, *] inputs, PERFORMANCE.md section 5):
- based_core, batched (headline): one based_core.ops.la_prefill call on the
  [B, T, H, f] / [B, T, H, dv] tensors themselves (FLA's layout, zero-copy: the
  op reads the strides), states [B, H, D, dv] / [B, H, D]; no layout transposes.
- based_core, per sequence: B calls on [T, H, *] views, one per sequence and state;
  GPU kernel time (the union of the kernels' intervals, as for every based_core op).
- FLA 0.6.0 `parallel_based` and `fused_chunk_based` (Triton), keyword arguments.
- PyTorch SDPA, causal softmax attention at head dim 64 ([B, H, T, 64], flash
  backend): an attention-class reference (a different op: no gate).
Correctness gate: sequence 0 of each candidate's output vs the fp64 parallel
form (reference.linear_attention_prefill) on the same inputs, relative-to-max
error <= 3e-2 (bf16). based_core's final state is checked too (fp32, 6e-3).
"""

from __future__ import annotations

import common
from common import result
import torch

from based_core import reference as R

F_DIM = 16


def bound_ms(B, T, H, dv, f=F_DIM, C=64):
    """PERFORMANCE.md 1a: max(tensor FLOPs / 790 TFLOP/s, HBM bytes / 3.0 TB/s)."""
    D = 1 + f + f * f
    flops = B * T * H * (2 * C * f + 2 * C * dv + 4 * D * dv)
    nbytes = B * T * H * 2 * (2 * f + 2 * dv) + B * H * D * (dv + 1) * 4
    return max(flops / common.TENSOR_FLOPS, nbytes / common.HBM_BPS) * 1e3


def configs(ctx):
    if ctx.dry:
        return [(2, 128, 2, 64), (1, 256, 2, 64)]
    full = [(16, 2048, 16, 64), (16, 4096, 16, 64), (16, 8192, 16, 64), (1, 8192, 16, 64), (16, 8192, 16, 112)]
    quick = [(16, 2048, 16, 64), (16, 8192, 16, 64), (1, 8192, 16, 64), (16, 8192, 16, 112)]
    return quick if ctx.quick else full


def fla_fns():
    try:
        from fla.ops.based import fused_chunk_based, parallel_based
    except Exception as e:
        return None, f"FLA not available ({type(e).__name__}: {e})"[:300]
    return {"FLA parallel_based": parallel_based, "FLA fused_chunk_based": fused_chunk_based}, ""


def run(args):
    ctx = common.Ctx(args, "m1_la_prefill.py")
    sec = ctx.section("M1", "Linear-attention prefill op (f=16, bf16 in/out, fp32 state)", "time", "ms", "lower", [
        "based_core 'batched' (headline): one la_prefill call on the [B, T, H, *] tensors (no copies, no "
        "transposes); 'per sequence': B calls on [T, H, *] views. A segmented call (short batches) is 3 kernels "
        "chained by PDL: their overlap counts once.",
        "based_core times are GPU kernel time from CUPTI (the op runs on its own stream and syncs); "
        "peers: CUDA events. No L2 flush: inputs are 24 MB (B=1) to 400 MB.",
        "limit: max(tensor FLOPs / 790 TFLOP/s, bytes / 3.0 TB/s), PERFORMANCE.md 1a (273-dim state).",
        "SDPA is causal softmax attention at hd 64: a different op, shown for scale (no gate).",
    ])
    fla, fla_err = fla_fns()
    warm, iters = (2, 3) if ctx.dry else (10, 20 if ctx.quick else 30)
    dev, act = ctx.device, ctx.act
    for (B, T, H, dv) in configs(ctx):
        name = f"B{B} H{H} L{T} dv{dv}"
        target = "<= 0.45 ms" if (B, T, dv) == (16, 8192, 64) else ("B1 per-token rate >= 50% of B16's" if B == 1 else "")
        e = common.entry(sec, name, dict(B=B, T=T, H=H, f=F_DIM, dv=dv), bound_ms(B, T, H, dv),
                         "max(FLOP/peak, bytes/BW)", target)
        why = ctx.skip_reason(20)
        if why:
            result(ctx, e, "based_core", "based_core", "skipped", message=why)
            continue
        g = torch.Generator(device=dev).manual_seed(B * T + dv)
        q = (0.5 * torch.randn(B, T, H, F_DIM, generator=g, device=dev)).to(act)
        k = (0.5 * torch.randn(B, T, H, F_DIM, generator=g, device=dev)).to(act)
        v = torch.randn(B, T, H, dv, generator=g, device=dev).to(act)
        D = 1 + F_DIM + F_DIM * F_DIM
        # fp64 reference of sequence 0 (on the GPU: seconds, not minutes)
        y_ref, S_ref, z_ref = R.linear_attention_prefill(q[0].double(), k[0].double(), v[0].double(), F_DIM)
        tol = 3e-2 if ctx.cuda else 2e-4

        # ---- peers first: a based_core crash cannot take their figures with it
        if fla is None:
            for n in ("FLA parallel_based", "FLA fused_chunk_based"):
                result(ctx, e, n, "peer", "n/a", message=fla_err)
        else:
            for n, fn in fla.items():
                try:
                    call = lambda fn=fn: fn(q=q, k=k, v=v, scale=F_DIM ** -0.5, use_norm=True)
                    gt = common.gate(common.rel_err(call()[0], y_ref), tol, "seq 0 vs fp64")
                    if not gt["ok"]:
                        result(ctx, e, n, "peer", "FAIL", gate=gt)
                        continue
                    result(ctx, e, n, "peer", "ok", common.time_events(call, ctx.cuda, warm, iters), gate=gt)
                except Exception as ex:
                    result(ctx, e, n, "peer", "error", message=ctx.failed(ex))
        if dv == 64:
            try:
                qs = torch.randn(B, H, T, 64, generator=g, device=dev).to(act)
                ks, vs = torch.randn_like(qs), torch.randn_like(qs)
                sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
                try:
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                        s = common.time_events(sdpa, ctx.cuda, warm, iters)
                    label = "SDPA causal hd64 (flash)"
                except Exception:
                    s, label = common.time_events(sdpa, ctx.cuda, warm, iters), "SDPA causal hd64 (default backend)"
                result(ctx, e, label, "peer", "ok", s, message="different op: softmax attention",
                       extra={"different_op": True})
                del qs, ks, vs
            except Exception as ex:
                result(ctx, e, "SDPA causal hd64", "peer", "error", message=ctx.failed(ex))

        # ---- based_core
        if not common.need_based_core(ctx, e, "based_core"):
            continue
        ops = common.based_core.ops
        for variant in (("batched", "per sequence") if B > 1 else ("one sequence",)):
            label = f"based_core la_prefill ({variant})"
            why = ctx.skip_reason(5)
            if why:
                result(ctx, e, label, "based_core", "skipped", message=why)
                continue
            try:
                if variant == "per sequence":
                    S = torch.zeros(B, H, D, dv, device=dev)
                    z = torch.zeros(B, H, D, device=dev)

                    def call():
                        common.sync(ctx.cuda)  # based_core's stream does not wait for torch's
                        return [ops.la_prefill(q[b], k[b], v[b], S[b], z[b]) for b in range(B)]

                    y0 = lambda ys: torch.from_dlpack(ys[0])
                    S0, z0 = (lambda: S[0]), (lambda: z[0])
                else:  # one call on [B, T, H, *] (B = 1: the single sequence)
                    S = torch.zeros(B, H, D, dv, device=dev)
                    z = torch.zeros(B, H, D, device=dev)

                    def call():
                        common.sync(ctx.cuda)  # based_core's stream does not wait for torch's
                        return ops.la_prefill(q, k, v, S, z)

                    y0 = lambda y: torch.from_dlpack(y)[0]
                    S0, z0 = (lambda: S[0]), (lambda: z[0])
                S.zero_()
                z.zero_()
                out = call()
                err = max(common.rel_err(y0(out), y_ref), common.rel_err(S0(), S_ref), common.rel_err(z0(), z_ref))
                gt = common.gate(err, tol, "seq 0 output and final state vs fp64")
                del out
                if not gt["ok"]:
                    result(ctx, e, label, "based_core", "FAIL", gate=gt)
                    continue
                # every kernel of the call counts
                samples, how = common.time_kernels(call, ctx.cuda, warm, iters, skip_names=())
                wall = common.summarize(common.time_wall(call, ctx.cuda, 0, max(3, iters // 4)))["median"]
                result(ctx, e, label, "based_core", "ok", samples, gate=gt,
                       extra={"timing": how, "wall_ms_median": wall,
                              "per_token_head_ns": None if not samples else
                              1e6 * common.summarize(samples)["median"] / (B * T * H)})
            except Exception as ex:
                result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))
        del q, k, v
        common.free_memory(ctx.cuda)


if __name__ == "__main__":
    raise SystemExit(common.main_guard(run, common.parser(__doc__).parse_args()))
