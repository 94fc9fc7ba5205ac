"""M4 / M5: whole-model greedy generation, based-360m and based-1b shapes with
random bf16 weights, against the Llama-style PyTorch peer of the same size.

M4: prompt 1024 + 1024 generated, B = 1/16/64/128/256 (quick: one run each, full: three).
    Metric: decode tokens/s = B * (N - 1) / (time of generate(N) - time of
    generate(1)); generate(1) is the prefill plus the first token. Each prompt
    is prefilled alone by based_core (its Session.generate); the peer prefills
    the batch at once. Prefill time and end-to-end tokens/s are in `extra`.
M5: no prompt (1 token), 1024 generated, B = 128: end-to-end tokens/ms (the paper's figure).
based_core: Model.session(max_batch=B).generate, CUDA-graphed decode and greedy
argmax on the device inside the library. Peer: llama_peer.Llama (static KV
cache, SDPA, one CUDA graph per 256 positions, argmax on the device).
Gates: based_core prefill (600 tokens) + 4 decode steps vs the fp32 reference
model (0.15 relative-to-max); the peer's graphed steps vs its own full forward.
"""

from __future__ import annotations

import time

import common
from common import result
import torch

import llama_peer
import models


def plan(ctx):
    if ctx.dry:
        return ["tiny"], [1, 2], (16, 8), (2, 8)
    batches = [1, 16, 64, 128, 256]
    return ["based-1b", "based-360m"], batches, (1024, 1024), (128, 1024)


def run(args):
    ctx = common.Ctx(args, "m4_m5_decode.py")
    parts = set(args.parts.split(","))
    names, batches, (P, N), (B5, N5) = plan(ctx)
    reps = 1 if ctx.quick else 3
    configs = []  # (section key, model, B, prompt, new)
    secs = {}
    if "M4" in parts:
        secs["M4"] = ctx.section("M4", f"Model decode: prompt {P} + {N} generated, greedy, random weights",
                                 "decode tokens/s", "tok/s", "higher", [
            "decode tok/s = B*(N-1) / (t(generate N) - t(generate 1)); extra: prefill_ms = t(generate 1), e2e_tok_s.",
            "limit: B / ((weights + B * state bytes per step) / 3.0 TB/s), PERFORMANCE.md 1b.",
            "peer: Llama-style Transformer of the same size (llama_peer.py), bf16, static KV cache, SDPA, "
            "CUDA graph per 256 positions; 'n/a' where its KV cache does not fit.",
            f"median of {reps} run(s); p10/p90 over runs.",
        ])
        configs += [("M4", n, b, P, N) for n in names for b in batches]
    if "M5" in parts:
        secs["M5"] = ctx.section("M5", f"Paper point: no prompt (1 token), {N5} generated, B={B5}",
                                 "end-to-end tokens/ms", "tok/ms", "higher", [
            "tokens/ms = B * N / t(generate N), prefill of the 1-token prompts included.",
            "limit: the decode ceiling of PERFORMANCE.md 1b at this batch (tok/s / 1000).",
            "paper (H100): based-1b 24.28, based-360m 47.23 tok/ms; targets >= 40 and >= 100.",
        ])
        configs += [("M5", n, B5, 1, N5) for n in names]
    entries = {}
    for key, name, B, p, n in configs:
        ceil = models.decode_ceiling(name, B)
        target = {("M5", "based-1b"): ">= 40 tok/ms", ("M5", "based-360m"): ">= 100 tok/ms"}.get((key, name), "")
        if key == "M4" and name == "based-1b":
            target = {1: ">= 770", 16: ">= 10,300", 64: ">= 27,300", 128: ">= 37,600"}.get(B, "")
        entries[(key, name, B)] = common.entry(
            secs[key], f"{name} B{B}", dict(model=name, B=B, prompt=p, new=n),
            None if ceil is None else (ceil if key == "M4" else ceil / 1e3), "decode ceiling at 3.0 TB/s", target)

    def metric(key, B, n, t1_ms, tn_ms):
        return B * (n - 1) / ((tn_ms - t1_ms) / 1e3) if key == "M4" else B * n / tn_ms

    vocab = 1000 if ctx.dry else 50264
    for name in names:
        todo = [c for c in configs if c[1] == name]
        # ---------------- peer first: a based_core crash cannot take its figures with it
        peer_name = llama_peer.PEER_OF[name]
        try:
            llama = llama_peer.Llama(peer_name, ctx.device, vocab)
            pg = llama.gate()
        except Exception as ex:
            llama, pg = None, {"ok": False, "error": ctx.failed(ex)}
        for key, _, B, p, n in todo:
            e, label = entries[(key, name, B)], f"{peer_name} (PyTorch, graphs)"
            why = ctx.skip_reason(30)
            if why or llama is None or not pg["ok"]:
                st = "skipped" if why else ("error" if llama is None else "FAIL")
                result(ctx, e, label, "peer", st, message=why or pg.get("error", ""), gate=pg if llama else None)
                continue
            try:
                common.free_memory(ctx.cuda)
                max_len = llama_peer.BUCKET * -(-(p + n - 1) // llama_peer.BUCKET)
                need = llama.kv_bytes(B, max_len)
                free = torch.cuda.mem_get_info()[0] if ctx.cuda else 1 << 62
                if need + (4 << 30) > free:
                    result(ctx, e, label, "peer", "n/a", gate=pg,
                           message=f"KV cache {need / 1e9:.1f} GB + 4 GB does not fit in {free / 1e9:.1f} GB free")
                    continue
                llama.allocate(B, max_len, n)
                llama.capture(p, p + n - 2)
                prompts = torch.tensor(models.random_prompts(B, p, 50257 if not ctx.dry else vocab), device=ctx.device)
                llama.forward(prompts[:1], last_only=True)  # SDPA / cuBLAS choices for this length, untimed
                samples, pre = [], []
                for _ in range(reps):
                    _, pre_ms, dec_ms = llama.generate(prompts, n)
                    pre.append(pre_ms)
                    samples.append(metric(key, B, n, pre_ms, pre_ms + dec_ms))
                result(ctx, e, label, "peer", "ok", samples, gate=pg,
                       extra={"prefill_ms": min(pre), "kv_cache_GB": need / 1e9})
            except Exception as ex:
                result(ctx, e, label, "peer", "error", message=ctx.failed(ex))
            finally:
                if llama is not None:
                    llama.allocate(1, 1, 1)  # drop this batch's cache and graphs
        del llama
        common.free_memory(ctx.cuda)

        # ---------------- based_core
        label = "based_core generate"
        model = None
        try:
            if common.based_core is None or (ctx.cuda and not common.based_core.cuda_available()):
                raise RuntimeError("based_core (CUDA backend) not available")
            t0 = time.time()
            model, cfg, w = models.build(name, ctx.device)
            built_s = time.time() - t0
            bg = models.gate(model, cfg, w)
            del w
        except Exception as ex:
            bg = {"ok": False, "error": ctx.failed(ex)}
        common.free_memory(ctx.cuda)
        for key, _, B, p, n in todo:
            e = entries[(key, name, B)]
            why = ctx.skip_reason(30)
            if why or model is None or not bg["ok"]:
                st = "skipped" if why else ("error" if model is None else "FAIL")
                result(ctx, e, label, "based_core", st, message=why or bg.get("error", ""),
                       gate=bg if model is not None else None)
                continue
            s = None
            try:
                s = model.session(max_batch=B)
                s.generate(models.random_prompts(B, 8, 50000 if not ctx.dry else vocab, seed=1), 3)  # graphs, workspaces
                prompts = models.random_prompts(B, p, 50257 if not ctx.dry else 1000)
                t = time.perf_counter()
                s.generate(prompts, 1)
                t1 = (time.perf_counter() - t) * 1e3
                samples = []
                for _ in range(reps):
                    t = time.perf_counter()
                    out = s.generate(prompts, n)
                    tn = (time.perf_counter() - t) * 1e3
                    if any(len(o) != n for o in out):
                        raise RuntimeError(f"generate returned {sorted({len(o) for o in out})} tokens, not {n}")
                    samples.append(metric(key, B, n, t1, tn))
                result(ctx, e, label, "based_core", "ok", samples, gate=bg,
                       extra={"prefill_ms": t1, "e2e_tok_s": B * n / (tn / 1e3), "build_s": built_s,
                              "state_MB_per_slot": s.state_bytes_per_slot / 1e6})
            except Exception as ex:
                result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))
            finally:
                del s
                common.free_memory(ctx.cuda)
        del model
        common.free_memory(ctx.cuda)


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--parts", default="M4,M5", help="which of M4, M5 to run")
    raise SystemExit(common.main_guard(run, p.parse_args()))
