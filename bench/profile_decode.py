"""Where a decode step's time goes: per-kernel GPU time (CUPTI via
torch.profiler) of greedy generation for a released model shape.

    python3 bench/profile_decode.py [--model based-1b] [--batch 1] [--steps 32]

Prints the step time, the sum of kernel time per step, the kernel count per
step and the top kernels; the gap between the first two is launch/idle time.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="based-1b")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--steps", type=int, default=32)
    a = ap.parse_args()
    model, cfg, w = models.build(a.model, "cuda")
    del w
    torch.cuda.empty_cache()
    for B in a.batch:
        prompts = models.random_prompts(B, 16, cfg["vocab_size"], seed=B)
        s = model.session(max_batch=B)
        s.generate(prompts, max_new_tokens=a.steps)  # warm-up: graphs captured
        t0 = time.perf_counter()
        s.generate(prompts, max_new_tokens=a.steps)
        wall = time.perf_counter() - t0
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            s.generate(prompts, max_new_tokens=a.steps)
        evs = [e for e in prof.key_averages() if e.device_type is not None and e.self_device_time_total > 0]
        total_us = sum(e.self_device_time_total for e in evs)
        count = sum(e.count for e in evs)
        print(f"\n{a.model} B={B}: {wall / a.steps * 1e3:.3f} ms per step (wall, incl. prefill), "
              f"kernel time {total_us / a.steps / 1e3:.3f} ms per step, {count / a.steps:.0f} kernels per step")
        for e in sorted(evs, key=lambda e: -e.self_device_time_total)[:14]:
            print(f"  {e.self_device_time_total / a.steps:9.1f} us/step  {e.count / a.steps:6.1f}x  {e.key[:110]}")


if __name__ == "__main__":
    main()
