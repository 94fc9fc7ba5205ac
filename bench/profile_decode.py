"""Where a decode step's time goes: per-kernel GPU time (CUPTI via
torch.profiler) of greedy generation for a released model shape.

    python3 bench/profile_decode.py [--model based-1b] [--batch 1] [--steps 32]

Prints the wall time per step (prefill included), then the decode steps' own
kernel time, kernel count and top kernels (a run of 1 token subtracted from a
run of --steps tokens, per kernel name).
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
    ap.add_argument("--top", type=int, default=16)
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
        # Kernel time of the decode steps alone: generate(steps) minus generate(1) (the
        # prefill and first sample), per kernel name, over steps - 1 steps.
        per = {}
        for sign, n in ((1.0, a.steps), (-1.0, 1)):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                s.generate(prompts, max_new_tokens=n)
            for e in prof.key_averages():
                if e.device_type is not None and e.self_device_time_total > 0:
                    t, c = per.get(e.key, (0.0, 0.0))
                    per[e.key] = (t + sign * e.self_device_time_total, c + sign * e.count)
        steps = a.steps - 1
        total_us = sum(t for t, _ in per.values())
        count = sum(c for _, c in per.values())
        print(f"\n{a.model} B={B}: {wall / a.steps * 1e3:.3f} ms per step (wall, incl. prefill), "
              f"decode-only kernel time {total_us / steps / 1e3:.3f} ms per step, {count / steps:.0f} kernels per step")
        for key, (t, c) in sorted(per.items(), key=lambda kv: -kv[1][0])[:a.top]:
            print(f"  {t / steps:9.1f} us/step  {c / steps:6.1f}x  {key[:110]}")

if __name__ == "__main__":
    main()
