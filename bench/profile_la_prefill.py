"""LA prefill op kernels side by side (PERFORMANCE.md M1): GPU kernel time (CUPTI) of
based_core.ops.la_prefill on [B, T, H, *] bf16 inputs for each kernel variant the library has
(BASED_CORE_LA_PREFILL: the Hopper wgmma kernel by default, "mma" the mma.sync kernel), with
the relative error of sequence 0 vs the fp64 reference.

    python3 bench/profile_la_prefill.py [--configs 16x8192x64 1x8192x64] [--iters 20]
    python3 bench/profile_la_prefill.py --once 16x8192x64   # one call of each kernel (for ncu)
"""

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
from based_core import reference as R  # noqa: E402

F = 16
VARIANTS = [("wgmma", ""), ("mma.sync", "mma")]


def parse(c):
    B, T, dv = (int(x) for x in c.split("x"))
    return B, T, dv


def setenv(kernel):
    os.environ["BASED_CORE_LA_PREFILL"] = kernel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["16x8192x64", "1x8192x64", "16x8192x112", "16x2048x64"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--once", default="")
    a = ap.parse_args()
    ops = common.based_core.ops
    H, dev = 16, "cuda"
    for c in ([a.once] if a.once else a.configs):
        B, T, dv = parse(c)
        g = torch.Generator(device=dev).manual_seed(B * T + dv)
        q = (0.5 * torch.randn(B, T, H, F, generator=g, device=dev)).bfloat16()
        k = (0.5 * torch.randn(B, T, H, F, generator=g, device=dev)).bfloat16()
        v = torch.randn(B, T, H, dv, generator=g, device=dev).bfloat16()
        D = 1 + F + F * F
        S = torch.zeros(B, H, D, dv, device=dev)
        z = torch.zeros(B, H, D, device=dev)

        def call():
            torch.cuda.synchronize()
            return ops.la_prefill(q, k, v, S, z)

        if a.once:
            for _, kern in VARIANTS:
                setenv(kern)
                call()
            continue
        y_ref, S_ref, _ = R.linear_attention_prefill(q[0].double(), k[0].double(), v[0].double(), F)
        for name, kern in VARIANTS:
            setenv(kern)
            S.zero_()
            z.zero_()
            y = torch.from_dlpack(call())[0]
            err = f"{max(common.rel_err(y, y_ref), common.rel_err(S[0], S_ref)):.2e}"
            ms, how = common.time_kernels(call, True, 3, a.iters, skip_names=())
            med = common.summarize(ms)["median"]
            print(f"{c:>12} {name:<32} {med:8.4f} ms  {err:>9}  ({how})", flush=True)
        del q, k, v, S, z
        common.free_memory(True)
    setenv("")


if __name__ == "__main__":
    main()
