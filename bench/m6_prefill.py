"""M6: whole-model prefill throughput, random bf16 weights.

Configurations: based-1b B2 L4096, based-360m B2 L16384, and B16 L1024 for
both (quick: the first two and 1b B16 L1024).
based_core: one Session.prefill_batch(slots, prompts, logits="last") (the
prompts are packed into forward passes of the default prefill_chunk: on CUDA as
many rows as fit in 1 GiB of workspace, 32768 for based-360m, 16384 for based-1b;
each mixer still runs per sequence);
tokens/ms = B*L / total time (the call synchronizes before returning).
The prompts are int32 numpy arrays built before the timer starts, as the peer's
token tensor is; the time with Python lists of ints (their conversion included)
is recorded as the extra `list_input_tok_ms`.
Peer: the Llama-style Transformer of the same size (llama_peer.py) running the
whole batch in one causal forward pass (SDPA), last-token logits only.
Gates: as M4 (based_core vs the fp32 reference model; the peer vs itself).
"""

from __future__ import annotations

import time

import common
import numpy as np
from common import result
import torch

import llama_peer
import models


def run(args):
    ctx = common.Ctx(args, "m6_prefill.py")
    if ctx.dry:
        cfgs = [("tiny", 2, 64)]
    elif ctx.quick:
        cfgs = [("based-1b", 2, 4096), ("based-360m", 2, 16384), ("based-1b", 16, 1024)]
    else:
        cfgs = [("based-1b", 2, 4096), ("based-360m", 2, 16384), ("based-1b", 16, 1024), ("based-360m", 16, 1024)]
    reps = (1 if ctx.dry else 3) if ctx.quick else 5
    sec = ctx.section("M6", "Model prefill throughput (logits of the last token)", "prefill tokens/ms", "tok/ms",
                      "higher", [
        "based_core: one Session.prefill_batch over the B prompts (packed into passes of the default prefill_chunk: "
        "on CUDA the rows that fit in 1 GiB of workspace, 32768 for 360m, 16384 for 1b), wall time incl. the final sync; "
        "prompts as int32 arrays built before timing (as the peer's token tensor); list_input_tok_ms: the same call "
        "with Python lists of ints.",
        "peer: one batched causal forward of the same-size Llama (SDPA), CUDA events.",
        "limit: 790 TFLOP/s / (2 * parameters) per token (PERFORMANCE.md 1d; excludes attention/LA FLOPs).",
        f"median of {reps} runs after one warm-up run.",
    ])
    entries = {}
    for name, B, L in cfgs:
        target = {("based-1b", 2, 4096): ">= 200 tok/ms (paper 161.7)",
                  ("based-360m", 2, 16384): ">= 700 tok/ms"}.get((name, B, L), "")
        entries[(name, B, L)] = common.entry(sec, f"{name} B{B} L{L}", dict(model=name, B=B, L=L),
                                             models.prefill_ceiling(models.config(name)), "2*params FLOP/token",
                                             target)
    vocab = 1000 if ctx.dry else 50264  # the peer's (padded) embedding rows
    tok_vocab = 1000 if ctx.dry else 50257  # prompt ids: real tokens only
    for name in dict.fromkeys(n for n, _, _ in cfgs):
        todo = [(B, L) for n, B, L in cfgs if n == name]
        peer_name = llama_peer.PEER_OF[name]
        label = f"{peer_name} (PyTorch forward)"
        try:
            llama = llama_peer.Llama(peer_name, ctx.device, vocab)
            pg = llama.gate()
        except Exception as ex:
            llama, pg = None, {"ok": False, "error": ctx.failed(ex)}
        for B, L in todo:
            e = entries[(name, B, L)]
            why = ctx.skip_reason(20)
            if why or llama is None or not pg["ok"]:
                result(ctx, e, label, "peer", "skipped" if why else "FAIL" if llama else "error",
                       message=why or pg.get("error", ""), gate=pg if llama else None)
                continue
            try:
                ids = torch.tensor(models.random_prompts(B, L, tok_vocab), device=ctx.device)
                ms = common.time_events(lambda: llama.forward(ids, last_only=True), ctx.cuda, 1, reps)
                result(ctx, e, label, "peer", "ok", [B * L / m for m in ms], gate=pg)
            except Exception as ex:
                result(ctx, e, label, "peer", "error", message=ctx.failed(ex))
            common.free_memory(ctx.cuda)
        del llama
        common.free_memory(ctx.cuda)

        label = "based_core Session.prefill_batch"
        model = None
        try:
            if common.based_core is None or (ctx.cuda and not common.based_core.cuda_available()):
                raise RuntimeError("based_core (CUDA backend) not available")
            model, cfg, w = models.build(name, ctx.device)
            bg = models.gate(model, cfg, w, n_prompt=64 if ctx.dry else 600)
            del w
        except Exception as ex:
            bg = {"ok": False, "error": ctx.failed(ex)}
        common.free_memory(ctx.cuda)
        for B, L in todo:
            e = entries[(name, B, L)]
            why = ctx.skip_reason(20)
            if why or model is None or not bg["ok"]:
                result(ctx, e, label, "based_core", "skipped" if why else "FAIL" if model else "error",
                       message=why or bg.get("error", ""), gate=bg if model else None)
                continue
            s = None
            try:
                s = model.session(max_batch=B)
                lists = models.random_prompts(B, L, tok_vocab)
                arrays = [np.asarray(p, dtype=np.int32) for p in lists]

                def once(prompts):
                    t = time.perf_counter()
                    s.prefill_batch(list(range(B)), prompts, logits="last")
                    dt = time.perf_counter() - t
                    s.reset()
                    return dt * 1e3

                once(arrays)  # warm-up: workspaces, cuBLAS heuristics
                ms = [once(arrays) for _ in range(reps)]
                ms_lists = [once(lists) for _ in range(reps)]
                result(ctx, e, label, "based_core", "ok", [B * L / m for m in ms], gate=bg,
                       extra={"list_input_tok_ms": round(B * L / float(np.median(ms_lists)), 1)})
            except Exception as ex:
                result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))
            finally:
                del s
                common.free_memory(ctx.cuda)
        del model
        common.free_memory(ctx.cuda)


if __name__ == "__main__":
    raise SystemExit(common.main_guard(run, common.parser(__doc__).parse_args()))
