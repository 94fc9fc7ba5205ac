"""Decode-batch weight GEMMs: how close based_core.ops.gemm gets to HBM
bandwidth for the released models' projection shapes at small batch (m rows).

    python3 bench/gemm_decode.py [--model based-1b] [--m 1 16 64 128] [--paths default cublaslt]

A decode step is weight-bandwidth-bound: each projection streams its weight
(n x k bf16) once per step. Prints, per shape and m, the GPU kernel time
(CUPTI, L2 flushed before every call) and the weight bandwidth in TB/s for
based_core's default path, based_core forced onto cuBLASLt
(BASED_CORE_GEMM=gemv|cublaslt) and torch.nn.functional.linear (cuBLAS) for
scale.
A diagnostic for choosing kernels, not a RESULTS.md row.
"""

import argparse
import os

import torch
import torch.nn.functional as F

import common
from based_core import ops

SHAPES = {  # name: (n, k, bias, fp32 accumulate into the residual)
    "based-1b": {"conv in_proj": (7168, 1792, True, False), "swa Wqkv": (5376, 1792, False, False),
                 "la proj_q": (256, 1792, False, False), "out_proj": (1792, 1792, False, True),
                 "fc1": (7168, 1792, False, False), "fc2": (1792, 3584, False, True)},
    "based-360m": {"conv in_proj": (4096, 1024, True, False), "out_proj": (1024, 1024, False, True),
                   "fc1": (4096, 1024, False, False), "fc2": (1024, 2048, False, True)},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="based-1b", choices=sorted(SHAPES))
    ap.add_argument("--m", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 128, 256])
    ap.add_argument("--paths", nargs="+", default=["default", "gemv", "cublaslt"])
    ap.add_argument("--iters", type=int, default=30)
    a = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    print(f"{torch.cuda.get_device_name()}  {a.model}: us per call (TB/s of weight traffic)")
    print(f"{'shape':>14} {'m':>4} " + " ".join(f"{p:>18}" for p in a.paths + ["torch"]))
    for name, (n, k, has_bias, acc) in SHAPES[a.model].items():
        w = torch.randn(n, k, device=dev, dtype=dt) / k ** 0.5
        bias = torch.randn(n, device=dev, dtype=dt) if has_bias else None
        wbytes = n * k * 2
        for m in a.m:
            x = torch.randn(m, k, device=dev, dtype=dt)
            want = x.double() @ w.double().T + (bias.double() if has_bias else 0)
            cells = []
            for path in a.paths:
                if path == "default":
                    os.environ.pop("BASED_CORE_GEMM", None)
                else:
                    os.environ["BASED_CORE_GEMM"] = path
                y = torch.zeros(m, n, device=dev, dtype=torch.float32) if acc else None  # fp32 residual
                s = torch.cuda.current_stream().cuda_stream

                def call():
                    if acc:
                        ops.gemm(x, w, bias, out=y, stream=s)
                    else:
                        return ops.gemm(x, w, bias, stream=s)
                if acc:
                    call()
                    got = y
                else:
                    got = torch.from_dlpack(call())
                err = common.rel_err(got.double(), want)
                if err > 2e-2:
                    cells.append(f"{'FAIL ' + format(err, '.2g'):>18}")
                    continue
                t, _ = common.time_kernels(call, True, 5, a.iters, common.flush_l2)
                us = common.summarize(t)["median"] * 1e3
                cells.append(f"{us:9.1f} ({wbytes / us / 1e6:5.2f})")
            os.environ.pop("BASED_CORE_GEMM", None)
            tt = common.time_events(lambda: F.linear(x, w, bias), True, 5, a.iters, common.flush_l2)
            us = common.summarize(tt)["median"] * 1e3
            cells.append(f"{us:9.1f} ({wbytes / us / 1e6:5.2f})")
            print(f"{name:>14} {m:>4} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
