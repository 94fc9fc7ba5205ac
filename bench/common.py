"""Shared machinery of the benchmark rows: timing, statistics, the environment
record, result records and their JSON file, and graceful failure.

Timing methods (PERFORMANCE.md section 5):
- `time_events`: CUDA events around each call on torch's current stream; for
  peers (PyTorch, Triton), whose work runs on that stream.
- `time_kernels`: based_core ops run on the library's own non-blocking stream
  and synchronize before returning, so events on torch's stream cannot bracket
  them, and host-side wall time adds ~10-50 us of checks, allocation and sync.
  We read the GPU's own kernel timestamps (CUPTI, through torch.profiler) and
  sum each call's kernel durations: device busy time, the figure comparable to
  a peer's event time. Falls back to `time_wall` when the profiler fails.
- `time_wall`: perf_counter around each (synchronizing) call.
- Bandwidth-bound ops flush the 50 MB L2 before every timed call (`flush_l2`),
  outside the timed region.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

try:  # the installed package; in a source tree without an install, python/
    import based_core  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(REPO, "python"))
    try:
        import based_core  # noqa: F401
    except ImportError:
        based_core = None  # rows record the import error

import torch

# Ceilings measured on the project's H100 (PERFORMANCE.md top).
HBM_BPS = 3.0e12
TENSOR_FLOPS = 790e12


# ---------------------------------------------------------------- arguments
def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--out", required=True, help="JSON file to write (rewritten after every measurement)")
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU smoke test: tiny shapes, based_core CPU backend, CUDA-only peers marked n/a")
    p.add_argument("--deadline", type=float, default=0.0, help="epoch seconds after which no new config starts")
    return p


class Ctx:
    """What a row script needs: device, dtypes, budget and the report."""

    def __init__(self, args, script: str):
        self.args = args
        self.dry = bool(args.dry_run)
        self.quick = bool(args.quick) or self.dry
        self.cuda = (not self.dry) and torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        # the CPU backend's ops take float32 only
        self.act = torch.bfloat16 if self.cuda else torch.float32
        self.deadline = args.deadline or (time.time() + 3600)
        self.dead = ""  # set once the CUDA context is lost: later work cannot run
        self.doc = {"script": script, "mode": "dry-run" if self.dry else ("quick" if self.quick else "full"),
                    "env": env_info(self.cuda), "sections": []}
        self.path = args.out
        self.save()

    def section(self, row: str, title: str, metric: str, unit: str, better: str, notes: List[str]) -> Dict:
        s = {"row": row, "title": title, "metric": metric, "unit": unit, "better": better,
             "notes": notes, "entries": []}
        self.doc["sections"].append(s)
        self.save()
        return s

    def time_left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".partial"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1, default=_json_default)
        os.replace(tmp, self.path)

    def skip_reason(self, need_s: float = 0.0) -> str:
        """Why a measurement must not start now ('' when it may)."""
        if self.dead:
            return f"skipped: CUDA context lost earlier ({self.dead})"
        if self.time_left() < need_s:
            return "skipped: time budget of this run spent"
        return ""

    def failed(self, exc: BaseException) -> str:
        """Formats an exception; notes a lost CUDA context (sticky errors poison the process)."""
        msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400]
        if self.cuda and not cuda_alive():
            self.dead = msg
        return msg


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def entry(section: Dict, config: str, params: Dict, limit: Optional[float] = None, limit_note: str = "",
          target: str = "") -> Dict:
    """One configuration of a row: its physical limit (in the row's unit) and candidates' results."""
    e = {"config": config, "params": params, "limit": limit, "limit_note": limit_note, "target": target,
         "results": []}
    section["entries"].append(e)
    return e


def result(ctx: Ctx, e: Dict, name: str, role: str, status: str, samples=None, message: str = "",
           gate: Optional[Dict] = None, extra: Optional[Dict] = None) -> Dict:
    """Adds one candidate's result to an entry and saves. role: 'based_core' or 'peer'.
    status: ok | FAIL (correctness gate) | error | n/a (peer missing) | skipped."""
    r = {"name": name, "role": role, "status": status, "message": message, "gate": gate, "extra": extra or {}}
    if samples is not None and len(samples):
        r.update(summarize(samples))
    e["results"].append(r)
    ctx.save()
    tag = f"{r.get('median', float('nan')):.4g}" if "median" in r else ""
    print(f"  [{e['config']}] {name}: {status} {tag} {message}".rstrip(), flush=True)
    return r


# ---------------------------------------------------------------- statistics
def summarize(samples) -> Dict[str, float]:
    a = np.asarray([float(x) for x in samples], dtype=np.float64)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
            "p90": float(np.percentile(a, 90)), "n": int(a.size)}


def rel_err(got, want) -> float:
    """max |got - want| / max |want|, in float64 (the tests' relative-to-max metric)."""
    g = torch.as_tensor(got).detach().double().cpu()
    w = torch.as_tensor(want).detach().double().cpu()
    if g.shape != w.shape:
        raise ValueError(f"shape {tuple(g.shape)} != {tuple(w.shape)}")
    if not torch.isfinite(g).all():
        return float("inf")
    return float((g - w).abs().max() / (w.abs().max() + 1e-30))


def gate(err: float, tol: float, what: str = "") -> Dict:
    return {"err": err, "tol": tol, "ok": bool(err <= tol), "what": what}


# ---------------------------------------------------------------- timing
_FLUSH: Dict[str, torch.Tensor] = {}


def flush_l2() -> None:
    """Overwrites 256 MB (5x the H100's L2) on torch's stream so the next call reads from HBM."""
    if not torch.cuda.is_available():
        return
    if "buf" not in _FLUSH:
        _FLUSH["buf"] = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    _FLUSH["buf"].zero_()


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def time_events(fn: Callable, cuda: bool, warmup: int = 10, iters: int = 20,
                before: Optional[Callable] = None) -> List[float]:
    """Milliseconds per call of fn, CUDA events (perf_counter on CPU); before() runs untimed."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    if not cuda:
        return time_wall(fn, False, 0, iters, before)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for s, e in ev:
        if before:
            before()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in ev]


def time_wall(fn: Callable, cuda: bool, warmup: int = 10, iters: int = 20,
              before: Optional[Callable] = None) -> List[float]:
    """Milliseconds per call by the host clock, the device idle before each call."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    out = []
    for _ in range(iters):
        if before:
            before()
        sync(cuda)
        t0 = time.perf_counter()
        fn()
        sync(cuda)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def busy_us(kernels) -> float:
    """GPU time covered by (start, duration) kernel intervals: their union, so that kernels
    overlapping under programmatic dependent launch count once (the sum when none overlap)."""
    total, end = 0.0, float("-inf")
    for t, d in sorted(kernels):
        if t + d > end:
            total += t + d - max(t, end)
            end = t + d
    return total


def kernels_per_call(fn: Callable, iters: int, before: Optional[Callable] = None, skip_names=("at::native",)):
    """[[(start us, duration us, name), ...] per call] of `iters` synchronized calls of fn, from
    a CUPTI trace (torch.profiler). Kernels whose name contains one of skip_names are left out;
    calls are told apart by counting (every call launches the same kernels)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")  # one cycle is all we use
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            if before:
                before()
            torch.cuda.synchronize()
            fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    ks = sorted((float(e["ts"]), float(e.get("dur", 0.0)), e.get("name", "")) for e in events
                if e.get("cat") == "kernel" and not any(s in e.get("name", "") for s in skip_names))
    if not ks or len(ks) % iters:
        raise RuntimeError(f"{len(ks)} kernels for {iters} calls")
    k = len(ks) // iters
    return [ks[i * k:(i + 1) * k] for i in range(iters)]


def time_kernels(fn: Callable, cuda: bool, warmup: int = 10, iters: int = 20,
                 before: Optional[Callable] = None, skip_names=("at::native",)):
    """(ms per call, method): each call's GPU kernel time from CUPTI (the union of its kernels'
    intervals: gaps between kernels excluded, overlapping kernels counted once).

    Kernels whose name contains one of skip_names (torch's own, e.g. the L2
    flush in before()) are left out. Calls are told apart by counting: every
    call launches the same kernels. Falls back to wall time.
    """
    for _ in range(warmup):
        if before:
            before()
        fn()
    if not cuda:
        return time_wall(fn, False, 0, iters, before), "wall"
    try:
        calls = kernels_per_call(fn, iters, before, skip_names)
        k = len(calls[0])
        per = [busy_us([(t, d) for t, d, _ in c]) / 1e3 for c in calls]
        return per, f"cupti ({k} kernel{'s' if k > 1 else ''}/call)"
    except Exception as e:  # profiler missing or confused: the host clock still works
        print(f"  kernel timing unavailable ({type(e).__name__}: {e}); using wall time", flush=True)
        return time_wall(fn, cuda, 0, iters, before), "wall"


def cuda_graph(fn: Callable, warmup: int = 3):
    """(graph, static output): fn captured after warm-up calls on a side stream
    (compilation, cuBLAS handles and workspaces happen outside the capture)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


def cuda_alive() -> bool:
    """False after a sticky CUDA error (illegal address etc.), which poisons the context."""
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
        return True
    except Exception:
        return False


def free_memory(cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    s = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, MemoryError) or "out of memory" in s or "outofmemory" in s


# ---------------------------------------------------------------- environment
def _version(dist: str, module: str) -> Optional[str]:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        pass
    try:
        return getattr(__import__(module), "__version__", "unknown")
    except Exception:
        return None


def env_info(cuda: bool) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "triton": _version("triton", "triton"), "fla": _version("fla-core", "fla"),
    }
    try:
        info["based_core"] = based_core.build_info() if based_core else "import failed"
    except Exception as e:
        info["based_core"] = f"build_info failed: {e}"
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, sm_count=p.multi_processor_count, device_mem_gib=round(p.total_memory / 2**30, 1))
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            info["driver_clocks"] = out.stdout.strip()
        except Exception:
            pass
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}), dry run"
    return info


def need_based_core(ctx: Ctx, e: Dict, name: str) -> bool:
    """Records an error result when based_core (or its CUDA backend) cannot be used."""
    if based_core is None:
        result(ctx, e, name, "based_core", "error", message="import based_core failed")
        return False
    if ctx.cuda and not based_core.cuda_available():
        result(ctx, e, name, "based_core", "error", message="based_core CUDA backend not available in this build")
        return False
    return True


def main_guard(fn: Callable, ctx_args) -> int:
    """Runs a row's main; an unexpected exception is printed, never hidden."""
    try:
        fn(ctx_args)
        return 0
    except Exception:
        traceback.print_exc()
        return 1


def fmt_bytes(n: float) -> str:
    for u in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or u == "TB":
            return f"{n:.1f} {u}"
        n /= 1000.0
    return str(n)


def isfinite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
