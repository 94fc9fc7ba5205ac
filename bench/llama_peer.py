"""The model-level peer: a Llama-style Transformer of BASED's sizes in plain
PyTorch, as PERFORMANCE.md section 2 measured it: bf16 weights (random), RMSNorm,
rotate-half RoPE, SwiGLU MLP, tied embedding, a static KV cache, PyTorch SDPA,
greedy argmax on the device, and one CUDA graph per 256-position bucket of the
KV length (the graph attends cache[:bucket] under a mask of positions <= pos).
A decode step is bound by kernel count at small batch even inside a graph, so
it is written with few kernels: fused F.rms_norm, RoPE of q and k together in
three kernels, residual adds folded into the GEMMs (addmm).

    llama-360m: d 1024, 24 layers, 16 x 64 heads, MLP 2816  (~360 M parameters)
    llama-1.3b: d 2048, 24 layers, 32 x 64 heads, MLP 5632  (~1.34 B)
"""

from __future__ import annotations

import math
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F

SHAPES = {
    "llama-360m": dict(d=1024, n_layer=24, n_head=16, hidden=2816),
    "llama-1.3b": dict(d=2048, n_layer=24, n_head=32, hidden=5632),
    "tiny": dict(d=128, n_layer=2, n_head=2, hidden=256),
}
PEER_OF = {"based-360m": "llama-360m", "based-1b": "llama-1.3b", "tiny": "tiny"}
BUCKET = 256


def rmsnorm(x, w, eps=1e-5):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def rope(x, cos, sin_signed):
    """Rotate-half RoPE: x * [cos, cos] + roll(x, hd/2) * [-sin, sin]; tables [..., hd]."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)


class Llama:
    def __init__(self, name: str, device: str, vocab: int, dtype=torch.bfloat16, seed: int = 0):
        s = SHAPES[name]
        self.name, self.device, self.dtype, self.vocab = name, device, dtype, vocab
        self.d, self.L, self.H, self.hid = s["d"], s["n_layer"], s["n_head"], s["hidden"]
        self.hd = self.d // self.H
        g = torch.Generator(device=device).manual_seed(seed)

        def lin(o, i, gain=1.0):
            return (torch.randn(o, i, generator=g, device=device) * (gain / math.sqrt(i))).to(dtype)

        def norm(n):
            return (1 + 0.1 * torch.randn(n, generator=g, device=device)).to(dtype)

        self.emb = (torch.randn(vocab, self.d, generator=g, device=device) * (2 / math.sqrt(self.d))).to(dtype)
        self.wqkv = [lin(3 * self.d, self.d) for _ in range(self.L)]
        self.wo = [lin(self.d, self.d, 0.5) for _ in range(self.L)]
        self.w13 = [lin(2 * self.hid, self.d) for _ in range(self.L)]
        self.w2 = [lin(self.d, self.hid, 0.5) for _ in range(self.L)]
        self.n1 = [norm(self.d) for _ in range(self.L)]
        self.n2 = [norm(self.d) for _ in range(self.L)]
        self.nf = norm(self.d) * (torch.randint(0, 2, (self.d,), generator=g, device=device) * 2 - 1).to(dtype)
        self._tables(2048)
        self.graphs: Dict[int, torch.cuda.CUDAGraph] = {}
        self.kc = self.vc = None
        self.max_len = 2048

    def n_params(self) -> int:
        per = 3 * self.d * self.d + self.d * self.d + 3 * self.d * self.hid + 2 * self.d
        return self.L * per + self.vocab * self.d + self.d

    def kv_bytes(self, batch: int, max_len: int) -> int:
        return 2 * self.L * batch * self.H * max_len * self.hd * torch.finfo(self.dtype).bits // 8

    def _tables(self, n: int) -> None:
        inv = 1.0 / (10000.0 ** (torch.arange(0, self.hd, 2, device=self.device, dtype=torch.float32) / self.hd))
        ang = torch.arange(n, device=self.device, dtype=torch.float32)[:, None] * inv
        self.cos = torch.cat([ang.cos(), ang.cos()], -1).to(self.dtype)
        self.sin = torch.cat([-ang.sin(), ang.sin()], -1).to(self.dtype)

    def _mlp_residual(self, i, x2d):
        """x + W2 (silu(gate) * up) of rmsnorm(x), on [rows, d], the add inside the GEMM."""
        u = rmsnorm(x2d, self.n2[i]) @ self.w13[i].T
        return torch.addmm(x2d, F.silu(u[:, :self.hid]) * u[:, self.hid:], self.w2[i].T)

    # ------------------------------------------------------------ prefill
    @torch.no_grad()
    def forward(self, ids: torch.Tensor, last_only: bool = True, cache_rows: Optional[slice] = None):
        """ids [B, T] from position 0 -> logits [B, V] (last) or [B, T, V]; fills the
        KV cache rows `cache_rows` (a slice of the batch) when given."""
        B, T = ids.shape
        if T > self.cos.shape[0]:
            self._tables(T)
        cos, sin = self.cos[:T].view(1, T, 1, -1), self.sin[:T].view(1, T, 1, -1)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [1, T, 1, 1, hd] against [B, T, 2, H, hd]
        x = self.emb[ids].view(B * T, self.d)
        for i in range(self.L):
            qkv = (rmsnorm(x, self.n1[i]) @ self.wqkv[i].T).view(B, T, 3, self.H, self.hd)
            qk = rope(qkv[:, :, :2], cos, sin)
            q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
            if cache_rows is not None:
                self.kc[i][cache_rows, :, :T] = k
                self.vc[i][cache_rows, :, :T] = v
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
            x = torch.addmm(x, o.transpose(1, 2).reshape(B * T, self.d), self.wo[i].T)
            x = self._mlp_residual(i, x)
        x = x.view(B, T, self.d)
        if last_only:
            x = x[:, -1]
        return (rmsnorm(x, self.nf) @ self.emb.T).float()

    # ------------------------------------------------------------ decode
    def allocate(self, batch: int, max_len: int, n_out: int) -> None:
        """Static KV cache and step buffers for `batch` sequences (drops old graphs)."""
        self.graphs = {}
        self.kc = self.vc = None
        if max_len > self.cos.shape[0]:
            self._tables(max_len)
        shape = (batch, self.H, max_len, self.hd)
        # zeros, not empty: masked rows still meet V in p @ V, and 0 * NaN garbage is NaN
        self.kc = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.L)]
        self.vc = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.L)]
        self.max_len = max_len
        self.tok = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.t = torch.zeros(1, dtype=torch.long, device=self.device)
        self.out = torch.zeros(batch, n_out, dtype=torch.long, device=self.device)
        self.arange = torch.arange(max_len, device=self.device)
        self.last_logits = None

    def _step(self, kv_len: int) -> None:
        """One greedy step at position self.pos for every row, reading cache[:kv_len]."""
        B = self.tok.shape[0]
        cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)  # [1, hd]
        mask = (self.arange[:kv_len] <= self.pos).view(1, 1, 1, kv_len)
        x = self.emb[self.tok]
        for i in range(self.L):
            qkv = (rmsnorm(x, self.n1[i]) @ self.wqkv[i].T).view(B, 3, self.H, self.hd)
            qk = rope(qkv[:, :2], cos, sin)  # q and k rotated together
            self.kc[i].index_copy_(2, self.pos, qk[:, 1].unsqueeze(2))
            self.vc[i].index_copy_(2, self.pos, qkv[:, 2].unsqueeze(2))
            o = F.scaled_dot_product_attention(qk[:, 0].unsqueeze(2), self.kc[i][:, :, :kv_len],
                                               self.vc[i][:, :, :kv_len], attn_mask=mask)
            x = torch.addmm(x, o.reshape(B, self.d), self.wo[i].T)
            x = self._mlp_residual(i, x)
        logits = rmsnorm(x, self.nf) @ self.emb.T
        nxt = logits.argmax(-1)
        self.last_logits = logits
        self.tok.copy_(nxt)
        self.out.index_copy_(1, self.t, nxt.view(B, 1))
        self.t += 1
        self.pos += 1

    def bucket(self, p: int) -> int:
        return min(self.max_len, BUCKET * (p // BUCKET + 1))

    @torch.no_grad()
    def capture(self, first_pos: int, last_pos: int) -> None:
        """CUDA graphs of the step for every bucket that positions first..last need."""
        if not self.device.startswith("cuda"):
            return
        pool = torch.cuda.graph_pool_handle()
        for kv in sorted({self.bucket(p) for p in range(first_pos, last_pos + 1)}):
            if kv in self.graphs:
                continue
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up runs (cuBLAS handles, workspaces) off the capture
                for _ in range(2):
                    self.pos.fill_(kv - 1)
                    self.t.zero_()
                    self._step(kv)
            torch.cuda.current_stream().wait_stream(side)
            self.pos.fill_(kv - 1)
            self.t.zero_()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                self._step(kv)
            self.graphs[kv] = g

    def _run_step(self, p: int) -> None:
        g = self.graphs.get(self.bucket(p))
        if g is not None:
            g.replay()
        else:  # CPU dry run
            self._step(self.bucket(p))

    @torch.no_grad()
    def generate(self, prompts: torch.Tensor, n: int, chunk_tokens: int = 32768):
        """Greedy: prefill [B, P] (in groups of <= chunk_tokens tokens to bound
        activation memory), then n-1 graphed steps. Returns (tokens [B, n],
        prefill ms, decode ms). Needs allocate(B, >= P+n-1, n) and capture()."""
        B, P = prompts.shape
        chunk = max(1, chunk_tokens // P)
        cuda = self.device.startswith("cuda")
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for b0 in range(0, B, chunk):
            rows = slice(b0, min(B, b0 + chunk))
            self.tok[rows] = self.forward(prompts[rows], last_only=True, cache_rows=rows).argmax(-1)
        self.out[:, 0] = self.tok
        self.t.fill_(1)
        self.pos.fill_(P)
        sync()
        t1 = time.perf_counter()
        for p in range(P, P + n - 1):
            self._run_step(p)
        sync()
        t2 = time.perf_counter()
        return self.out.clone(), (t1 - t0) * 1e3, (t2 - t1) * 1e3

    @torch.no_grad()
    def gate(self, n_prompt: int = 40, n_steps: int = 6, tol: float = 0.1) -> Dict:
        """Graphed (or eager) decode steps, teacher-forced, vs the full causal
        forward: catches cache, mask, RoPE-position and graph mistakes."""
        g = torch.Generator(device="cpu").manual_seed(3)
        ids = torch.randint(0, self.vocab, (2, n_prompt + n_steps), generator=g).to(self.device)
        want = self.forward(ids, last_only=False)[:, n_prompt - 1:]
        self.allocate(2, self.bucket(n_prompt + n_steps), n_steps + 1)
        self.capture(n_prompt, n_prompt + n_steps - 1)
        rows = [self.forward(ids[:, :n_prompt], last_only=True, cache_rows=slice(0, 2))]
        self.pos.fill_(n_prompt)
        self.t.fill_(1)
        for j in range(n_steps):
            self.tok.copy_(ids[:, n_prompt + j])
            self._run_step(n_prompt + j)
            rows.append(self.last_logits.float().clone())
        got = torch.stack(rows, 1)
        err = float((got - want).abs().max() / want.abs().max())
        self.allocate(1, 1, 1)  # release the gate's cache and graphs
        return {"err": err, "tol": tol, "ok": err <= tol, "what": "graphed decode vs full causal forward"}
