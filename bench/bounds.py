"""What bounds a decode step or a prefill of a released model shape: the GPU kernel time
of each class of kernels next to the bytes (or tensor FLOPs) that class must move (or
compute), its achieved rate, and the time it would take at the physical limit
(PERFORMANCE.md section 1: 3.0 TB/s, 790 TFLOP/s). Evidence for the rows that miss
their target (M4/M5: decode; M6: prefill).

    python3 bench/bounds.py decode  [--model based-1b] [--batch 1 16 64 128] [--prompt 1024] [--steps 64]
    python3 bench/bounds.py prefill [--model based-1b] [--batch 2] [--length 4096]
    ... [--json FILE] [--md FILE]   also write the tables as JSON / append them as markdown

Decode: the steps alone (a generate of --steps tokens minus a generate of 1 token, per
kernel name; wall time the same way, median of --reps). Prefill: one
Session.prefill_batch of --batch prompts of --length tokens, as M6.
Kernel time per class is CUPTI's (torch.profiler); "between kernels" is wall time minus
the summed kernel time (launch gaps and host work). Bytes and FLOPs are modelled from the
weight shapes and the config (bench/models.py), not measured: the limit column is what
the class would take if it streamed its modelled bytes at 3.0 TB/s (or ran its tensor
FLOPs at 790 TFLOP/s, whichever is larger).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from typing import Dict, List, Optional, Tuple

import common
import kernel_table
import models

# (class, pattern over kernel names): first match wins; kernels of no pattern are cuBLASLt's
# (nvjet / cutlass / xmma names) unless they match nothing GEMM-like ("other").
CLASSES: List[Tuple[str, str]] = [
    ("LA decode", r"(?<![a-z])la_decode_kernel"),
    ("LA prefill", r"(?<![a-z])la_(wg|tc|prefill|prefill_z|chunk_scan)_kernel"),
    ("SWA decode", r"swa_decode_kernel"),
    ("SWA prefill", r"swa_(prefill|prefill_tc|ring_write)_kernel"),
    ("conv", r"conv_(decode|prefill)_kernel"),
    ("GEMV (1 row)", r"(?<![a-z0-9])gemv_kernel"),
    ("split-K reduce", r"splitKreduce|split_k_reduce"),
    ("rmsnorm", r"rmsnorm_(reg_)?kernel"),
    ("swiglu", r"swiglu_kernel"),
    ("bias add", r"add_bias_kernel"),
    ("embedding", r"embedding_kernel"),
    ("argmax / sampling", r"(?<![a-z])(argmax|argmax_split|sample)_kernel"),
    ("cuBLASLt GEMM", r"nvjet|cutlass|xmma|gemm|sm90_|sm80_"),
]
# Classes that together stream the weights (decode) or run the weight GEMMs (prefill).
GEMM_CLASSES = ("GEMV (1 row)", "cuBLASLt GEMM", "split-K reduce")


def classify(kernel: str) -> str:
    for name, pat in CLASSES:
        if re.search(pat, kernel):
            return name
    return "other"


def by_class(per: Dict[str, Tuple[float, float]]) -> Dict[str, Tuple[float, float]]:
    """kernel name -> (us, launches) summed into class -> (us, launches)."""
    out: Dict[str, Tuple[float, float]] = {}
    for k, (t, c) in per.items():
        cls = classify(k)
        t0, c0 = out.get(cls, (0.0, 0.0))
        out[cls] = (t0 + t, c0 + c)
    return out


# ---------------------------------------------------------------- modelled work
def _dims(cfg: Dict) -> Dict:
    la = cfg["alt_mixer"]
    d, hid = int(cfg["n_embd"]), int(cfg["n_inner"])
    mult = int(cfg["pad_vocab_size_multiple"])
    heads = int(cfg["n_head"])
    return dict(d=d, hid=hid, v_pad=-(-int(cfg["vocab_size"]) // mult) * mult,
                n_layer=int(cfg["n_layer"]), n_la=len(cfg["alt_mixer_layers"]), n_swa=len(cfg["alt_mixer_2_layers"]),
                la_heads=int(la["num_heads"]), f=int(la["feature_dim"]), heads=heads, hd=d // heads,
                w=int(cfg["alt_mixer_2"]["window_size"]) // 2)


def weight_bytes(cfg: Dict, elem: int = 2) -> float:
    """Bytes of every projection matrix a decode step streams: all 2-D weights but the
    embedding table (a step reads B of its rows), the LM head included."""
    shapes = models.weight_shapes(cfg)
    return float(sum(s[0] * s[1] for k, s in shapes.items() if len(s) == 2 and k != models.EMB) * elem)


def gemm_params(cfg: Dict) -> float:
    """Multiply-adds per token of the layers' weight GEMMs (no embedding, no LM head)."""
    shapes = models.weight_shapes(cfg)
    return float(sum(s[0] * s[1] for k, s in shapes.items() if len(s) == 2 and k not in (models.EMB, models.HEAD)))


def la_state_rows(f: int, symmetric: bool) -> int:
    """Rows of one head's LA state: 1 + f + f^2 (TaylorExp) or 1 + f + f(f+1)/2 (symmetric)."""
    return 1 + f + (f * (f + 1) // 2 if symmetric else f * f)


def swa_keys(position: int, w: int) -> int:
    """Keys a token at absolute `position` attends to: w past tokens plus itself, clipped at 0."""
    return min(position, w) + 1


def decode_work(cfg: Dict, batch: int, positions: List[int], symmetric: bool = True) -> Dict[str, Dict]:
    """Modelled bytes per decode step by class, averaged over the steps' positions.
    Activations 16-bit, the residual stream and LA state fp32 (SPEC / session.h)."""
    m = _dims(cfg)
    d, hid, B = m["d"], m["hid"], batch
    dv = d // m["la_heads"]
    rows = la_state_rows(m["f"], symmetric)
    keys = statistics.fmean(swa_keys(p, m["w"]) for p in positions)
    n_conv = m["n_layer"] - m["n_la"] - m["n_swa"]
    return {
        "weights": {"bytes": weight_bytes(cfg), "classes": list(GEMM_CLASSES),
                    "note": "every projection and the LM head read once"},
        "LA decode": {"bytes": m["n_la"] * B * m["la_heads"] * rows * (dv + 1) * 4 * 2,
                      "note": f"fp32 state {rows} x ({dv} + 1) per head, read and written"},
        "SWA decode": {"bytes": m["n_swa"] * B * m["heads"] * keys * m["hd"] * 2 * 2,
                       "note": f"K and V ring rows, {keys:.0f} keys on average"},
        "conv": {"bytes": n_conv * B * (4 * d + 2 * d + 2 * 2 * (2 * d)) * 2,
                 "note": "4d in, 2d out, 2 tail taps of 2d channels read and written"},
        "rmsnorm": {"bytes": (2 * m["n_layer"] + 1) * B * d * (4 + 2), "note": "fp32 residual in, 16-bit out"},
        "swiglu": {"bytes": m["n_layer"] * B * 3 * hid * 2, "note": "2 x hidden in, hidden out"},
        "argmax / sampling": {"bytes": B * m["v_pad"] * 4, "note": "fp32 logits rows"},
    }


def prefill_work(cfg: Dict, lengths: List[int]) -> Dict[str, Dict]:
    """Modelled tensor FLOPs and bytes of a prefill of sequences of `lengths` tokens
    (logits of each sequence's last token only), by class."""
    m = _dims(cfg)
    d, hid = m["d"], m["hid"]
    n = sum(lengths)
    dv = d // m["la_heads"]
    C, D, f = 64, la_state_rows(m["f"], False), m["f"]  # M1's formula: 64-token chunks, 273 features
    n_conv = m["n_layer"] - m["n_la"] - m["n_swa"]
    swa_flops = sum(m["heads"] * 4 * m["hd"] * sum(swa_keys(p, m["w"]) for p in range(L)) for L in lengths)
    return {
        "weights": {"flops": 2.0 * n * gemm_params(cfg) + 2.0 * len(lengths) * m["v_pad"] * d,
                    "bytes": weight_bytes(cfg), "classes": list(GEMM_CLASSES),
                    "note": "2 x params FLOP per token, LM head on the last rows (bytes: weights only)"},
        "LA prefill": {"flops": m["n_la"] * n * m["la_heads"] * (2 * C * f + 2 * C * dv + 4 * D * dv),
                       "bytes": m["n_la"] * n * m["la_heads"] * 2 * (2 * f + 2 * dv), "note": "M1's model (273 features)"},
        "SWA prefill": {"flops": m["n_swa"] * swa_flops, "bytes": m["n_swa"] * n * d * 2 * 4,
                        "note": "band QK^T and PV; q, k, v in, o out"},
        "conv": {"bytes": n_conv * n * 2 * d * 2 * 2, "note": "16-bit channels in and out"},
        "rmsnorm": {"bytes": 2 * m["n_layer"] * n * d * (4 + 2), "note": "fp32 residual in, 16-bit out"},
        "swiglu": {"bytes": m["n_layer"] * n * 3 * hid * 2, "note": "2 x hidden in, hidden out"},
        "embedding": {"bytes": n * d * (2 + 4), "note": "rows in, fp32 residual out"},
    }


def limit_us(work: Dict) -> float:
    """Time of a class at the physical limit: max(bytes / 3.0 TB/s, tensor FLOPs / 790 TFLOP/s)."""
    return max(work.get("bytes", 0.0) / common.HBM_BPS, work.get("flops", 0.0) / common.TENSOR_FLOPS) * 1e6


def table(classes: Dict[str, Tuple[float, float]], work: Dict[str, Dict], div: float, wall_us: float) -> Dict:
    """Rows per class (us and launches divided by `div`, steps or 1) joined with the modelled
    work, largest first, plus the totals: kernel time, wall, between kernels, the limit."""
    rows = []
    taken = set()
    for name, w in work.items():
        members = w.get("classes", [name])
        us = sum(classes.get(c, (0.0, 0.0))[0] for c in members) / div
        launches = sum(classes.get(c, (0.0, 0.0))[1] for c in members) / div
        taken.update(members)
        if launches <= 0 and us <= 0:
            continue
        lim = limit_us(w)
        rows.append(dict(name=name, us=us, launches=launches, limit_us=lim, bytes=w.get("bytes", 0.0),
                         flops=w.get("flops", 0.0), note=w["note"]))
    for name, (t, c) in classes.items():  # kernels no work model covers (counted, limit 0)
        if name not in taken and (t > 0 or c > 0):
            rows.append(dict(name=name, us=t / div, launches=c / div, limit_us=0.0, bytes=0.0, flops=0.0,
                             note="latency-bound small kernels (no modelled limit)"))
    rows.sort(key=lambda r: -r["us"])
    kernel_us = sum(r["us"] for r in rows)
    limit_total = sum(r["limit_us"] for r in rows)
    return dict(rows=rows, kernel_us=kernel_us, wall_us=wall_us, between_us=max(0.0, wall_us - kernel_us),
                limit_us=limit_total, launches=sum(r["launches"] for r in rows))


def markdown(title: str, t: Dict) -> str:
    """The table as markdown: per class time, launches, modelled work, achieved rate, limit, excess."""
    out = [f"### {title}", "",
           f"wall {t['wall_us'] / 1e3:.3f} ms = kernels {t['kernel_us'] / 1e3:.3f} ms ({t['launches']:.0f} launches) "
           f"+ between kernels {t['between_us'] / 1e3:.3f} ms; sum of class limits {t['limit_us'] / 1e3:.3f} ms "
           f"({100 * t['limit_us'] / t['wall_us']:.0f}% of wall)" if t["wall_us"] > 0 else "", "",
           "| class | us | launches | us/launch | modelled | achieved | at limit (us) | over limit (us) | share of wall |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        work, rate = [], []
        if r["bytes"]:
            work.append(common.fmt_bytes(r["bytes"]))
            if r["us"] > 0:
                rate.append(f"{r['bytes'] / r['us'] / 1e6:.2f} TB/s")
        if r["flops"]:
            work.append(f"{r['flops'] / 1e9:.1f} GFLOP")
            if r["us"] > 0:
                rate.append(f"{r['flops'] / r['us'] / 1e6:.0f} TFLOP/s")
        per = r["us"] / r["launches"] if r["launches"] else 0.0
        share = 100 * r["us"] / t["wall_us"] if t["wall_us"] > 0 else 0.0
        out.append(f"| {r['name']} | {r['us']:.1f} | {r['launches']:.1f} | {per:.2f} | {', '.join(work) or '-'} | "
                   f"{', '.join(rate) or '-'} | {r['limit_us']:.1f} | {r['us'] - r['limit_us']:.1f} | {share:.1f}% |")
    if t["wall_us"] > 0:
        out.append(f"| between kernels | {t['between_us']:.1f} | | | | | 0 | {t['between_us']:.1f} | "
                   f"{100 * t['between_us'] / t['wall_us']:.1f}% |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- measurement (GPU)
def measure_decode(model, cfg: Dict, batch: int, prompt: int, steps: int, reps: int) -> Dict:
    prompts = models.random_prompts(batch, prompt, cfg["vocab_size"], seed=batch)
    s = model.session(max_batch=batch)
    s.generate(prompts, max_new_tokens=8)  # graphs captured, workspaces allocated
    walls = kernel_table.decode_wall_us(s, prompts, steps, reps)
    per = kernel_table.decode_kernels(s, prompts, steps)
    # The decode steps of generate(steps) beyond generate(1) run at positions prompt .. prompt + steps - 2.
    positions = list(range(prompt, prompt + steps - 1))
    work = decode_work(cfg, batch, positions, symmetric=s.symmetric_state)
    return table(by_class(per), work, steps - 1, statistics.median(walls))


def measure_prefill(model, cfg: Dict, batch: int, length: int) -> Dict:
    prompts = models.random_prompts(batch, length, cfg["vocab_size"], seed=1)
    s = model.session(max_batch=batch)

    def run():
        s.reset()
        s.prefill_batch(list(range(batch)), prompts, logits="last")

    run()  # warm-up
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        walls.append((time.perf_counter() - t0) * 1e6)
    return table(by_class(kernel_table.profile_kernels(run)), prefill_work(cfg, [length] * batch), 1.0, statistics.median(walls))


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["decode", "prefill"])
    ap.add_argument("--model", default="based-1b", choices=sorted(models.SHAPES))
    ap.add_argument("--batch", type=int, nargs="+", default=None)
    ap.add_argument("--prompt", type=int, default=1024, help="decode: prompt length (M4: 1024)")
    ap.add_argument("--steps", type=int, default=64, help="decode: tokens generated per measured run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script (no kernel times)")
    ap.add_argument("--length", type=int, default=4096, help="prefill: tokens per prompt")
    ap.add_argument("--json", default=None, help="also write the tables to this JSON file")
    ap.add_argument("--md", default=None, help="also append the tables (with device and date) to this markdown file")
    a = ap.parse_args(argv)
    model, cfg = models.build_model(a.model, a.device)
    env = common.env_info(a.device == "cuda")
    records = []
    bc = env.get("based_core")
    if isinstance(bc, dict):
        bc = f"{bc.get('version')} (git {bc.get('git_sha')}, CUDA {bc.get('cuda_version')})"
    md = [f"## {a.model} {a.mode}", "", f"{env.get('device')} · {env['date']} · torch {env['torch']} · based_core {bc}", ""]
    for B in a.batch or ([1, 16, 64, 128] if a.mode == "decode" else [2]):
        if a.mode == "decode":
            t = measure_decode(model, cfg, B, a.prompt, a.steps, a.reps)
            title = f"{a.model} decode step, B={B}, prompt {a.prompt}, {a.steps - 1} steps"
        else:
            t = measure_prefill(model, cfg, B, a.length)
            title = f"{a.model} prefill, B={B} x L={a.length} (one prefill_batch)"
        print(markdown(title, t), flush=True)
        md.append(markdown(title, t))
        records.append(dict(title=title, mode=a.mode, model=a.model, batch=B, **t))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(env=env, tables=records), fh, indent=1)
    if a.md:
        with open(a.md, "a") as fh:
            fh.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
