"""Where a model prefill's time goes: per-kernel GPU time (CUPTI via
torch.profiler) of Session.prefill for a released model shape.

    python3 bench/profile_prefill.py [--model based-1b] [--batch 2] [--length 4096]

Prints the wall time of prefilling --batch sequences of --length tokens (one
Session.prefill_batch, as M6; --per-slot: one Session.prefill per sequence),
then the kernel time, count and top kernels of one such run.
"""

import argparse
import time

from torch.profiler import ProfilerActivity, profile

import kernel_table
import models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="based-1b")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=0, help="Session prefill_chunk (0: the library default)")
    ap.add_argument("--per-slot", action="store_true", help="one Session.prefill per sequence (no packing)")
    a = ap.parse_args()
    model, cfg = models.build_model(a.model, "cuda")
    prompts = models.random_prompts(a.batch, a.length, cfg["vocab_size"], seed=1)
    s = model.session(max_batch=a.batch, prefill_chunk=a.chunk)

    def run():
        s.reset()
        if a.per_slot:
            for b in range(a.batch):
                s.prefill(b, prompts[b], logits="last")
        else:
            s.prefill_batch(list(range(a.batch)), prompts, logits="last")

    run()  # warm-up
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
    per = kernel_table.add({}, prof)
    total_us, count = kernel_table.totals(per)
    tokens = a.batch * a.length
    print(f"\n{a.model} B={a.batch} L={a.length} chunk={a.chunk or 'default'}{' per-slot' if a.per_slot else ''}: {wall * 1e3:.2f} ms wall ({tokens / (wall * 1e3):.1f} tok/ms), "
          f"kernel time {total_us / 1e3:.2f} ms, {count:.0f} kernels")
    kernel_table.print_top(per, a.top, time_div=1e3, count_div=1, unit="ms")


if __name__ == "__main__":
    main()
