"""M7: the largest number of based-1b sequences held at context 2048 on one GPU.

A BASED sequence's state does not grow with its length: Session.state_bytes_per_slot
(LA S and z in fp32, SWA rings of W+1 rows, conv tails). From the free memory
after loading the model we size a Session, allocate it for real, prefill slot 0
with 2048 tokens, copy that state into every slot (copy_slot) and run one
decode step over all of them; on MemoryError the count shrinks by 5% and we try
again. Gate: the big step's logits for the first and last slot (same state,
same token) against a 1-slot session's decode of the same token (0.02).
Limit: (total memory - weights) / state bytes per slot (no workspace, no logits).
Peer: llama-1.3b at context 2048, computed (not allocated): (total - weights) /
KV-cache bytes per sequence (24 layers x 2 x 2048 x 2048 x bf16 = 403 MB).
"""

from __future__ import annotations

import time

import common
from common import result
import torch

import llama_peer
import models


def run(args):
    ctx = common.Ctx(args, "m7_memory.py")
    name, L = ("tiny", 64) if ctx.dry else ("based-1b", 2048)
    sec = ctx.section("M7", f"Largest batch of {name} sequences at context {L}", "sequences held", "seqs", "higher", [
        "based_core: a Session of that many slots allocated, every slot at position 2048, one decode step over all.",
        "limit: (device memory - weights) / state bytes per slot. Peer: computed KV-cache capacity, not allocated.",
    ])
    e = common.entry(sec, f"{name} context {L}", dict(model=name, context=L), None, "", ">= 2,000 on 80 GB")
    total = torch.cuda.mem_get_info()[1] if ctx.cuda else 16 << 30
    # ---- peer, computed
    peer = llama_peer.SHAPES[llama_peer.PEER_OF[name]]
    kv = 2 * peer["n_layer"] * L * peer["d"] * 2
    per = 4 * peer["d"] ** 2 + 3 * peer["d"] * peer["hidden"]
    peer_w = (peer["n_layer"] * per + 50264 * peer["d"]) * 2
    result(ctx, e, f"{llama_peer.PEER_OF[name]} KV cache (computed)", "peer", "ok", [int((total - peer_w) // kv)],
           message=f"{kv / 1e6:.0f} MB per sequence; not allocated")
    # ---- based_core
    label = "based_core Session"
    why = ctx.skip_reason(30)
    if why:
        result(ctx, e, label, "based_core", "skipped", message=why)
        return
    if common.based_core is None or (ctx.cuda and not common.based_core.cuda_available()):
        result(ctx, e, label, "based_core", "error", message="based_core (CUDA backend) not available")
        return
    try:
        model, cfg, w = models.build(name, ctx.device)
        del w
        common.free_memory(ctx.cuda)
        V = int(model.config.vocab_padded)
        ids = models.random_prompts(1, L + 1, 1000 if ctx.dry else 50257, seed=5)[0]
        one = model.session(max_batch=1)
        per_slot = one.state_bytes_per_slot
        one.prefill(0, ids[:L], logits="none")
        want = torch.from_dlpack(one.decode([0], [ids[L]])).float().cpu()
        del one
        e["limit"] = (total - model.weight_bytes) / per_slot
        e["limit_note"] = f"({total / 2**30:.1f} GiB - weights) / {per_slot / 1e6:.2f} MB per slot"
        free = torch.cuda.mem_get_info()[0] if ctx.cuda else 0
        # a decode step of n rows also needs ~2 fp32 logits rows each (step buffer + returned copy)
        n = max(1, int((free - (1 << 30)) / (per_slot + 2 * V * 4 + (64 << 10)))) if ctx.cuda else 8
        tries = []
        while True:
            s = None
            try:
                t0 = time.perf_counter()
                s = model.session(max_batch=n)
                s.prefill(0, ids[:L], logits="none")
                for i in range(1, n):
                    s.copy_slot(0, i)
                t1 = time.perf_counter()
                logits = torch.from_dlpack(s.decode(list(range(n)), [ids[L]] * n))
                t2 = time.perf_counter()
                rows = logits[[0, n - 1]].float().cpu()
                del logits
                break
            except Exception as ex:
                tries.append(f"{n}: {type(ex).__name__}")
                del s
                common.free_memory(ctx.cuda)
                if not common.is_oom(ex) or len(tries) >= 8:
                    raise
                n = int(n * 0.95)
        del s
        err = max(common.rel_err(rows[0:1], want), common.rel_err(rows[1:2], want))
        gt = common.gate(err, 0.02, "first/last slot of the big step vs a 1-slot decode")
        result(ctx, e, label, "based_core", "ok" if gt["ok"] else "FAIL", [n], gate=gt,
               extra={"state_MB_per_slot": per_slot / 1e6, "free_GB_before": free / 1e9,
                      "setup_s": t1 - t0, "step_ms": (t2 - t1) * 1e3, "oom_retries": tries,
                      "weights_GB": model.weight_bytes / 1e9})
    except Exception as ex:
        result(ctx, e, label, "based_core", "error", message=ctx.failed(ex))


if __name__ == "__main__":
    raise SystemExit(common.main_guard(run, common.parser(__doc__).parse_args()))
