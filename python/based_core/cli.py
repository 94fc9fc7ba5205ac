"""The `based-core` command line: generate, demo, info, convert, bench."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def _parse_tokens(s: str) -> list:
    try:
        return [int(t) for t in s.replace(",", " ").split()]
    except ValueError:
        raise SystemExit(f"--tokens: expected comma- or space-separated integers, got {s!r}")


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", type=str, default="", help="stop token ids, comma-separated")


def _sampling_kwargs(a) -> dict:
    return dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                seed=a.seed, stop_tokens=_parse_tokens(a.stop) if a.stop else ())


def cmd_generate(a) -> int:
    import based_core

    t0 = time.perf_counter()
    model = based_core.load(a.model, device=a.device, dtype=a.dtype, tokenizer=a.tokenizer)
    t_load = time.perf_counter() - t0
    if a.tokens:
        prompts = [_parse_tokens(x) for x in a.tokens]
    elif a.prompt:
        if model.tokenizer is None:
            raise SystemExit("--prompt needs a tokenizer: pass --tokenizer path/to/tokenizer.json (GPT-2's for BASED), "
                             "or give token ids with --tokens")
        prompts = [model.tokenizer.encode(p) for p in a.prompt]
    else:
        raise SystemExit("give --prompt TEXT or --tokens IDS (repeat either for a batch)")
    t1 = time.perf_counter()
    outs = model.generate(prompts, **_sampling_kwargs(a))
    dt = time.perf_counter() - t1
    for p, o in zip(prompts, outs):
        if model.tokenizer is not None:
            print(json.dumps({"prompt": model.tokenizer.decode(p), "completion": model.tokenizer.decode(o), "tokens": o}))
        else:
            print(json.dumps({"prompt_tokens": p, "tokens": o}))
    n = sum(len(o) for o in outs)
    print(f"# {model.device} {model.dtype}: loaded in {t_load:.2f} s; {len(prompts)} prompt(s), {n} new tokens in "
          f"{dt:.3f} s ({n / max(dt, 1e-9):.1f} tok/s incl. prefill)", file=sys.stderr)
    return 0


def cmd_demo(a) -> int:
    """The README's main job: make a small random BASED model, load it, generate, report throughput."""
    import based_core
    from based_core.testing import make_random_model

    device = a.device or ("cuda" if based_core.cuda_available() else "cpu")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        make_random_model(d, d_model=a.d_model, n_head=a.d_model // 64, n_layer=a.layers, window_size=128,
                          vocab_size=50257, dtype="float32", seed=0)
        t_make = time.perf_counter() - t0
        model = based_core.load(d, device=device, dtype=a.dtype, progress=False)
        print(f"model: random BASED, {model.config.summary()}")
        print(f"       {model.weight_bytes / 2**20:.1f} MiB of weights on {model.device} as {model.dtype} "
              f"(written in {t_make:.2f} s)")
        import numpy as np

        rng = np.random.default_rng(0)
        prompts = [list(map(int, rng.integers(0, 50257, size=n))) for n in rng.integers(8, a.prompt_len + 1, size=a.batch)]
        t1 = time.perf_counter()
        logits = model.logits([prompts[0]])
        t_prefill = time.perf_counter() - t1
        print(f"prefill: {len(prompts[0])} tokens -> logits {tuple(logits.shape)} in {t_prefill * 1e3:.1f} ms")
        t2 = time.perf_counter()
        outs = model.generate(prompts, max_new_tokens=a.new_tokens)
        dt = time.perf_counter() - t2
        n = sum(len(o) for o in outs)
        print(f"generate: {len(prompts)} ragged prompts ({', '.join(str(len(p)) for p in prompts)} tokens), "
              f"{a.new_tokens} new tokens each, greedy")
        for i, o in enumerate(outs[:3]):
            print(f"  sequence {i}: {o[:12]}{' ...' if len(o) > 12 else ''}")
        print(f"throughput: {n} tokens in {dt:.3f} s = {n / max(dt, 1e-9):.1f} tok/s (prefill included)")
        alone = model.generate([prompts[-1]], max_new_tokens=a.new_tokens)[0]
        same = alone == outs[-1]
        print(f"check: last prompt alone gives the same tokens as in the batch: {same}")
        return 0 if same else 1


def cmd_info(a) -> int:
    import based_core

    info = {"build": based_core.build_info(), "devices": based_core.device_info()}
    if a.model:
        from based_core import _core

        with open(os.path.join(a.model, "config.json"), encoding="utf-8") as f:
            cfg = _core.ModelConfig.from_json(f.read())
        info["model"] = {"summary": cfg.summary(), "layers": cfg.layers}
        st = os.path.join(a.model, "model.safetensors")
        if os.path.isfile(st):
            from based_core.safetensors_io import read_header

            hdr, _ = read_header(st)
            info["model"]["tensors"] = len([k for k in hdr if k != "__metadata__"])
            info["model"]["file_bytes"] = os.path.getsize(st)
    print(json.dumps(info, indent=2))
    return 0


def cmd_convert(a) -> int:
    """pytorch_model.bin -> model.safetensors (the authors' keys, prefix and metrics dropped)."""
    from based_core.model import _read_bin
    from based_core.safetensors_io import save_file

    src = os.path.join(a.folder, "pytorch_model.bin")
    dst = a.out or os.path.join(a.folder, "model.safetensors")
    if not os.path.isfile(src):
        raise SystemExit(f"convert: no pytorch_model.bin in {a.folder!r}")
    if os.path.exists(dst) and not a.force:
        raise SystemExit(f"convert: {dst!r} exists (use --force to overwrite)")
    sd = _read_bin(src)
    out = {}
    for k, v in sd.items():
        name = k[len("model."):] if k.startswith("model.") else k
        if "metrics" in name:
            continue
        out[name] = v
    tmp = dst + ".partial"
    save_file(out, tmp, metadata={"format": "pt", "converted_by": "based_core"})
    os.replace(tmp, dst)
    print(f"wrote {dst}: {len(out)} tensors, {os.path.getsize(dst) / 2**20:.1f} MiB")
    return 0


def cmd_bench(a) -> int:
    """Runs the headline benchmark rows through bench/run_all.py of a source checkout."""
    import subprocess

    root = os.path.abspath(a.repo or os.getcwd())
    while not os.path.isfile(os.path.join(root, "bench", "run_all.py")):
        if os.path.dirname(root) == root:
            raise SystemExit("bench: no bench/run_all.py here or above; run from a based_core checkout or pass --repo")
        root = os.path.dirname(root)
    cmd = [sys.executable, os.path.join(root, "bench", "run_all.py"), "--rows", a.rows]
    return subprocess.call(cmd + ["--quick"] * a.quick + ["--dry-run"] * a.dry_run)  # run_all prints where results went


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="based-core", description="Run BASED language models with based_core.")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="generate from a model folder")
    g.add_argument("--model", required=True, help="folder with config.json + model.safetensors or pytorch_model.bin")
    g.add_argument("--prompt", action="append", help="text prompt (needs --tokenizer); repeat for a batch")
    g.add_argument("--tokens", action="append", help="prompt token ids, e.g. 464,3139,286; repeat for a batch")
    g.add_argument("--tokenizer", default=None, help="tokenizer.json (GPT-2's for BASED)")
    g.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    g.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    _add_sampling(g)
    g.set_defaults(fn=cmd_generate)

    d = sub.add_parser("demo", help="make a small random model, generate, print throughput (no downloads)")
    d.add_argument("--device", default=None)
    d.add_argument("--dtype", default="float32", choices=["bfloat16", "float16", "float32"])
    d.add_argument("--d-model", type=int, default=256)
    d.add_argument("--layers", type=int, default=6)
    d.add_argument("--batch", type=int, default=4)
    d.add_argument("--prompt-len", type=int, default=48)
    d.add_argument("--new-tokens", type=int, default=32)
    d.set_defaults(fn=cmd_demo)

    i = sub.add_parser("info", help="build facts, devices, and a model folder's config")
    i.add_argument("model", nargs="?", default=None)
    i.set_defaults(fn=cmd_info)

    c = sub.add_parser("convert", help="convert pytorch_model.bin to model.safetensors (needs torch)")
    c.add_argument("folder")
    c.add_argument("--out", default=None)
    c.add_argument("--force", action="store_true")
    c.set_defaults(fn=cmd_convert)

    b = sub.add_parser("bench", help="run the headline benchmark rows (bench/run_all.py of a source checkout)")
    b.add_argument("--rows", default="M1,M2,M4", help="rows of PERFORMANCE.md, e.g. M1,M2,M4 (default) or M1,...,M7")
    b.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    b.add_argument("--dry-run", action="store_true", help="CPU smoke test at toy sizes (results in a temporary folder)")
    b.add_argument("--repo", default=None, help="the checkout (default: the current folder or a parent)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, IndexError, MemoryError, RuntimeError, FileNotFoundError) as e:
        print(f"based-core {args.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
