"""Wall time per decode step of greedy generation, for quick A/B comparisons of
decode-path changes (environment switches such as BASED_CORE_PREFETCH=0):

    python3 bench/decode_wall.py [--model based-1b] [--batch 1 16 64 128] [--steps 256] [--prompt 1024]

Prints, per batch size, the median over --reps of (generate(steps) - generate(1))
/ (steps - 1): the decode steps alone, prefill and first token excluded. Prompts are
--prompt tokens long (default 1024, as M4), so the sliding window is full from the first step.
Random weights of the released shape (models.py); not a RESULTS.md row.
"""

import argparse
import statistics

import kernel_table
import models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="based-1b")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64, 128])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=1024, help="prompt length (M4: 1024)")
    a = ap.parse_args()
    model, cfg = models.build_model(a.model, "cuda")
    for B in a.batch:
        prompts = models.random_prompts(B, a.prompt, cfg["vocab_size"], seed=B)
        s = model.session(max_batch=B)
        s.generate(prompts, max_new_tokens=8)  # graphs captured, workspaces allocated
        per_step = [us / 1e6 for us in kernel_table.decode_wall_us(s, prompts, a.steps, a.reps)]
        ms = statistics.median(per_step) * 1e3
        print(f"{a.model} B={B}: {ms:.3f} ms per decode step, {B / ms * 1e3:,.0f} tok/s "
              f"(reps {', '.join(f'{x * 1e3:.3f}' for x in per_step)})", flush=True)
        del s


if __name__ == "__main__":
    main()
