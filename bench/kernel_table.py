"""Per-kernel GPU time from a torch.profiler run, and the decode-step measurements, shared by
the profile_* scripts, decode_wall.py and bounds.py."""

import time
from typing import Dict, List, Tuple

KernelTimes = Dict[str, Tuple[float, float]]  # kernel name -> (microseconds, launches)


def add(per: KernelTimes, prof, sign: float = 1.0) -> KernelTimes:
    """Adds (sign = -1: subtracts) each kernel's self device time and count in `prof` to `per`."""
    for e in prof.key_averages():
        if e.device_type is not None and e.self_device_time_total > 0:
            t, c = per.get(e.key, (0.0, 0.0))
            per[e.key] = (t + sign * e.self_device_time_total, c + sign * e.count)
    return per


def totals(per: KernelTimes) -> Tuple[float, float]:
    """(microseconds, launches) over all kernels."""
    return sum(t for t, _ in per.values()), sum(c for _, c in per.values())


def print_top(per: KernelTimes, top: int, time_div: float, count_div: float, unit: str) -> None:
    """The `top` kernels by time: time / time_div in `unit`, launches / count_div."""
    for key, (t, c) in sorted(per.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {t / time_div:9.2f} {unit}  {c / count_div:7.1f}x  {key[:110]}")


def profile_kernels(fn) -> KernelTimes:
    """Per-kernel (us, launches) of one call of fn; none without CUDA (CPU smoke runs)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        fn()
        return {}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
    return add({}, prof)


def decode_kernels(session, prompts, steps: int) -> KernelTimes:
    """Kernel time of the decode steps alone: generate(steps) minus generate(1) (the prefill
    and first sample), per kernel name, over steps - 1 steps."""
    per = profile_kernels(lambda: session.generate(prompts, max_new_tokens=steps))
    for k, (t, c) in profile_kernels(lambda: session.generate(prompts, max_new_tokens=1)).items():
        t0, c0 = per.get(k, (0.0, 0.0))
        per[k] = (t0 - t, c0 - c)
    return per


def decode_wall_us(session, prompts, steps: int, reps: int) -> List[float]:
    """Wall time per decode step, one sample per rep: (t(generate steps) - t(generate 1)) /
    (steps - 1), in microseconds (call once before, so graphs are captured)."""
    out = []
    for _ in range(reps):
        t = {}
        for n in (1, steps):
            t0 = time.perf_counter()
            session.generate(prompts, max_new_tokens=n)
            t[n] = time.perf_counter() - t0
        out.append((t[steps] - t[1]) / (steps - 1) * 1e6)
    return out
