"""Where a decode step's time goes: per-kernel GPU time (CUPTI via
torch.profiler) of greedy generation for a released model shape.

    python3 bench/profile_decode.py [--model based-1b] [--batch 1] [--steps 32]

Prints the wall time per step (prefill included), then the decode steps' own
kernel time, kernel count and top kernels (a run of 1 token subtracted from a
run of --steps tokens, per kernel name).
"""

import argparse
import time

import kernel_table
import models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="based-1b")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--top", type=int, default=16)
    a = ap.parse_args()
    model, cfg = models.build_model(a.model, "cuda")
    for B in a.batch:
        prompts = models.random_prompts(B, 16, cfg["vocab_size"], seed=B)
        s = model.session(max_batch=B)
        s.generate(prompts, max_new_tokens=a.steps)  # warm-up: graphs captured
        t0 = time.perf_counter()
        s.generate(prompts, max_new_tokens=a.steps)
        wall = time.perf_counter() - t0
        per = kernel_table.decode_kernels(s, prompts, a.steps)
        steps = a.steps - 1
        total_us, count = kernel_table.totals(per)
        print(f"\n{a.model} B={B}: {wall / a.steps * 1e3:.3f} ms per step (wall, incl. prefill), "
              f"decode-only kernel time {total_us / steps / 1e3:.3f} ms per step, {count / steps:.0f} kernels per step")
        kernel_table.print_top(per, a.top, time_div=steps, count_div=steps, unit="us/step")

if __name__ == "__main__":
    main()
