"""Per-kernel GPU time from a torch.profiler run, shared by the profile_* scripts."""

from typing import Dict, Tuple

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
