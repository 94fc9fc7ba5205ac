"""Runs the benchmark rows (each in its own process, so a crash or a lost CUDA
context in one row cannot take the others down), then regenerates RESULTS.md
from every results JSON present (rows not run keep their last results, each
with its own device and date).

    python3 bench/run_all.py                      # all rows, full sizes
    python3 bench/run_all.py --quick --rows M1,M2,M4
    python3 bench/run_all.py --report-only        # RESULTS.md from bench/results/*.json
    python3 bench/run_all.py --dry-run            # CPU smoke test into a temporary folder
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {"M1": "m1_la_prefill.py", "M2": "m2_la_decode.py", "M3": "m3_swa.py", "M4": "m4_m5_decode.py",
           "M5": "m4_m5_decode.py", "M6": "m6_prefill.py", "M7": "m7_memory.py"}
# wall-clock caps per script (quick, full), seconds: the GPU machine allows 10 minutes per command
CAPS = {"m1_la_prefill.py": (100, 200), "m2_la_decode.py": (60, 120), "m3_swa.py": (150, 300),
        "m4_m5_decode.py": (300, 560), "m6_prefill.py": (120, 240), "m7_memory.py": (90, 150)}


def run_rows(a) -> None:
    rows = [r.strip().upper() for r in a.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in SCRIPTS]
    if bad:
        raise SystemExit(f"unknown rows {bad}; choose from {sorted(SCRIPTS)}")
    jobs = {}  # script -> rows, in the order given
    for r in rows:
        jobs.setdefault(SCRIPTS[r], []).append(r)
    logs = os.path.join(a.results_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    deadline = a.deadline or (time.time() + (a.budget or 1e6))
    for script, rs in jobs.items():
        left = deadline - time.time()
        cap = min(CAPS[script][0 if (a.quick or a.dry_run) else 1], left)
        tag = "_".join(rs)
        out = os.path.join(a.results_dir, f"{tag}.json")
        log = os.path.join(logs, f"{tag}.log")
        if cap < 15:
            print(f"== {tag}: not started ({left:.0f} s left in the budget)", flush=True)
            continue
        cmd = [sys.executable, "-u", os.path.join(HERE, script), "--out", out,
               "--deadline", str(time.time() + cap - min(30, cap / 4))]
        cmd += ["--quick"] * a.quick + ["--dry-run"] * a.dry_run
        if script == "m4_m5_decode.py":
            cmd += ["--parts", ",".join(rs)]
        print(f"== {tag}: {script} (cap {cap:.0f} s) -> {out}", flush=True)
        t0 = time.time()
        with open(log, "w") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE)
            try:
                rc = p.wait(timeout=cap)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # the row's own process group, started above
                p.wait()
                rc = "killed at its time cap"
        with open(log) as f:
            tail = f.read().splitlines()[-12:]
        print("\n".join("   " + t for t in tail))
        print(f"== {tag}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        status = {"rc": rc, "seconds": round(time.time() - t0, 1), "log": os.path.relpath(log, a.results_dir),
                  "log_tail": tail, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        stat_path = os.path.join(a.results_dir, "runs.json")
        runs = json.load(open(stat_path)) if os.path.exists(stat_path) else {}
        runs[tag] = status
        with open(stat_path, "w") as f:
            json.dump(runs, f, indent=1)


# ------------------------------------------------------------------ report
def num(x, unit=""):
    if x is None:
        return "–"
    s = f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return f"{s} {unit}".strip()


def clean(s, n=160):
    s = str(s).replace("|", "/").replace("\n", " ")
    return s if len(s) <= n else s[:n - 1] + "…"


def load_sections(results_dir):
    """Newest section per (row, title) across the JSON files, with its file's env and mode."""
    best = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        if path.endswith("runs.json"):
            continue
        try:
            doc = json.load(open(path))
        except Exception as e:
            print(f"skipping unreadable {path}: {e}")
            continue
        mtime = os.path.getmtime(path)
        for s in doc.get("sections", []):
            key = (s["row"], s["title"].split(":")[0])
            if key not in best or best[key][0] < mtime:
                best[key] = (mtime, dict(s, env=doc.get("env", {}), mode=doc.get("mode", "?")))
    return [v[1] for _, v in sorted(best.items(), key=lambda kv: (kv[0][0], kv[1][0]))]


def headline(e):
    return next((r for r in e["results"] if r["role"] == "based_core" and r["status"] == "ok"), None)


def ratio(sec, base, r):
    if not base or r["status"] != "ok" or not r.get("median") or not base.get("median"):
        return None
    return r["median"] / base["median"] if sec["better"] == "lower" else base["median"] / r["median"]


def of_limit(sec, e, r):
    """Fraction of the physical limit. The limits are BASED's: a model-level peer
    (M4-M7: a Transformer) or a different op (SDPA in M1) gets none."""
    lim, m = e.get("limit"), r.get("median")
    if not lim or not m or r["status"] != "ok":
        return None
    if r["role"] == "peer" and (sec["row"] not in ("M1", "M2", "M3") or r.get("extra", {}).get("different_op")
                                or "different op" in r.get("message", "")):
        return None
    return lim / m if sec["better"] == "lower" else m / lim


def value_cell(r, unit):
    if r["status"] == "ok":
        return num(r.get("median"), unit)
    g = r.get("gate") or {}
    why = r.get("message") or (f"err {g.get('err', 0):.3g} > tol {g.get('tol')}" if g else "")
    return f"**{r['status']}** {clean(why)}".strip()


def gate_cell(r):
    g = r.get("gate") or {}
    if "err" not in g:
        return "–"
    return f"{'ok' if g.get('ok') else 'FAIL'} {g['err']:.2g}"


def env_line(env, mode):
    bc = env.get("based_core") or {}
    bcs = (f"based_core {bc.get('version')} (git {bc.get('git_sha')}, CUDA {bc.get('cuda_version')}, "
           f"archs {bc.get('cuda_archs')})") if isinstance(bc, dict) else f"based_core: {bc}"
    return (f"{env.get('device', '?')} · {env.get('date', '?')} · {mode} mode · torch {env.get('torch')} "
            f"(CUDA {env.get('torch_cuda')}) · triton {env.get('triton')} · fla {env.get('fla')} · {bcs}")


def write_report(results_dir, md_path) -> str:
    secs = load_sections(results_dir)
    runs_path = os.path.join(results_dir, "runs.json")
    runs = json.load(open(runs_path)) if os.path.exists(runs_path) else {}
    L = ["# based_core benchmark results", "",
         "Generated by `python3 bench/run_all.py` from `bench/results/*.json`; do not edit by hand. "
         "Targets, limits and peers: PERFORMANCE.md. Method: CUDA events for PyTorch/Triton peers, CUPTI "
         "kernel time for based_core ops (they run on the library's own stream and synchronize; the union of a "
         "call's kernel intervals: gaps excluded, kernels overlapping under PDL counted once), wall time "
         "for whole-model runs; >= 10 warm-up and >= 20 timed calls (100 for microsecond ops); median with "
         "p10-p90 spread; every timed configuration passes its correctness gate first (else FAIL, not timed).",
         "", "Speedup = based_core's headline figure over the peer's (> 1: based_core faster). "
         "% of limit = the figure's fraction of BASED's physical limit (PERFORMANCE.md section 1), shown for "
         "based_core and for peers that compute the same op.", "",
         "## Summary", "", "| row | config | based_core | best peer | speedup | % of limit | target |",
         "|---|---|---|---|---|---|---|"]
    for s in secs:
        for e in s["entries"]:
            b = headline(e)
            peers = [r for r in e["results"] if r["role"] == "peer" and r["status"] == "ok"]
            same = [r for r in peers if not (r.get("extra", {}).get("different_op") or "different op" in r["message"])]
            peers = same or peers  # a peer computing the same op first (SDPA in M1 is another op)
            rat = [(ratio(s, b, p), p) for p in peers]
            rat = [x for x in rat if x[0] is not None]
            best = min(rat, key=lambda x: x[0]) if rat else None  # the peer closest to (or beating) based_core
            if b:
                bc = num(b["median"], s["unit"])
            else:
                first = next((r for r in e["results"] if r["role"] == "based_core"), None)
                bc = value_cell(first, s["unit"]) if first else "not run"
            pk = f"{best[1]['name']}: {num(best[1]['median'], s['unit'])}" if best else (
                f"{peers[0]['name']}: {num(peers[0]['median'], s['unit'])}" if peers else "–")
            fr = of_limit(s, e, b) if b else None
            L.append(f"| {s['row']} | {e['config']} | {clean(bc, 90)} | {clean(pk, 90)} | "
                     f"{f'{best[0]:.2f}x' if best else '–'} | {f'{100 * fr:.0f}%' if fr else '–'} | "
                     f"{e.get('target') or ''} |")
    for s in secs:
        L += ["", f"## {s['row']}: {s['title']}", "", env_line(s["env"], s["mode"]), ""]
        L += [f"- {n}" for n in s.get("notes", [])]
        L += ["", f"| config | candidate | median ({s['unit']}) | p10–p90 | n | gate (err) | speedup | limit | "
                  f"% of limit | target |", "|---|---|---|---|---|---|---|---|---|---|"]
        for e in s["entries"]:
            b = headline(e)
            first = True
            for r in e["results"]:
                spread = f"{num(r['p10'])}–{num(r['p90'])}" if r["status"] == "ok" and "p10" in r else "–"
                rt = ratio(s, b, r) if r["role"] == "peer" else None
                fr = of_limit(s, e, r)
                lim = f"{num(e.get('limit'), s['unit'])}" if first and e.get("limit") else ""
                L.append(f"| {e['config'] if first else ''} | {clean(r['name'], 60)} | {value_cell(r, '')} | "
                         f"{spread} | {r.get('n', '–')} | {gate_cell(r)} | {f'{rt:.2f}x' if rt else '–'} | "
                         f"{lim} | {f'{100 * fr:.1f}%' if fr else '–'} | {(e.get('target') or '') if first else ''} |")
                first = False
            if not e["results"]:
                L.append(f"| {e['config']} | (nothing recorded) | | | | | | | | |")
            ex = [f"{r['name']}: " + ", ".join(f"{k}={num(v) if isinstance(v, (int, float)) else clean(v, 60)}"
                                               for k, v in r.get("extra", {}).items()) for r in e["results"]
                  if r.get("extra")]
            if ex:
                L.append(f"| | *details* | {clean('; '.join(ex), 600)} | | | | | | | |")
    if runs:
        L += ["", "## Last run of each script", "", "| rows | exit | seconds | finished | last log line |",
              "|---|---|---|---|---|"]
        for tag, st in sorted(runs.items()):
            last = next((t for t in reversed(st.get("log_tail", [])) if t.strip()), "")
            L.append(f"| {tag} | {st['rc']} | {st['seconds']} | {st['finished']} | {clean(last, 120)} |")
    text = "\n".join(L) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="M1,M2,M3,M4,M5,M6,M7")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke test (results go to a temporary folder)")
    p.add_argument("--budget", type=float, default=0, help="seconds for the whole run")
    p.add_argument("--deadline", type=float, default=0, help="epoch seconds by which the run must end")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--md", default=None, help="report path (default bench/RESULTS.md)")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.results_dir is None:
        a.results_dir = (os.path.join(tempfile.gettempdir(), "based_core_bench_dry") if a.dry_run
                         else os.path.join(HERE, "results"))
    if a.md is None:
        a.md = os.path.join(a.results_dir, "RESULTS.md") if a.dry_run else os.path.join(HERE, "RESULTS.md")
    os.makedirs(a.results_dir, exist_ok=True)
    if not a.report_only:
        run_rows(a)
    text = write_report(a.results_dir, a.md)
    summary = text.split("## Summary", 1)[-1].split("\n## ", 1)[0]
    print(f"\nSummary{summary}\nresults: {a.results_dir}/*.json, report: {a.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
