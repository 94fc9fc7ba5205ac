"""LA prefill op kernels side by side (PERFORMANCE.md M1): GPU kernel time (CUPTI) of
based_core.ops.la_prefill on [B, T, H, *] bf16 inputs for each kernel variant the library has
(BASED_CORE_LA_PREFILL: the Hopper wgmma kernel by default, "mma" the mma.sync kernel), with
the relative error of sequence 0 vs the fp64 reference.

    python3 bench/profile_la_prefill.py [--configs 16x8192x64 1x8192x64] [--iters 20]
    python3 bench/profile_la_prefill.py --once 16x8192x64   # one call of each kernel (for ncu)
    python3 bench/profile_la_prefill.py --per-kernel --configs 1x8192x64   # each kernel of a call

--per-kernel prints, for the default (wgmma) path, the median duration of each kernel of a call
(a short batch runs delta pass, scan and output pass), their sum, the union of their intervals
(what M1 reports) and the span from the first start to the last end.
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
    ap.add_argument("--per-kernel", action="store_true")
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

        if a.per_kernel:
            setenv("")
            per_kernel(c, call, a.iters)
            continue
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


def short_name(kernel: str) -> str:
    """'void ns::(anonymous namespace)::la_wg_kernel<T, 1, 1>(ChunkArgs)' -> 'la_wg_kernel<T, 1, 1>'."""
    k = kernel.replace("(anonymous namespace)", "anon").split(" ", 1)[-1] if kernel.startswith("void ") else kernel
    k = k.split("(")[0]
    base = k.split("<")[0].split("::")[-1]
    return base + ("<" + k.split("<", 1)[1].replace("__nv_bfloat16", "bf16") if "<" in k else "")


def per_kernel(c, call, iters):
    for _ in range(5):
        call()
    calls = common.kernels_per_call(call, iters, skip_names=())
    med = lambda xs: sorted(xs)[len(xs) // 2]
    each = [med([cl[j][1] for cl in calls]) for j in range(len(calls[0]))]
    union = med([common.busy_us([(t, d) for t, d, _ in cl]) for cl in calls])
    span = med([max(t + d for t, d, _ in cl) - cl[0][0] for cl in calls])
    names = [short_name(k[2]) for k in calls[0]]
    print(f"{c:>12} " + ", ".join(f"{nm} {us:.1f}" for nm, us in zip(names, each)) +
          f" | sum {sum(each):.1f} union {union:.1f} span {span:.1f} us", flush=True)


if __name__ == "__main__":
    main()
