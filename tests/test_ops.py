"""Every op of based_core.ops against the fp64 PyTorch reference, on the CPU
backend (float32) and, marked gpu, on the CUDA backend in every dtype, over
head dims 64/112 (128 for LA), windows of 64/128 past tokens, lengths 1, 2, 3,
63, 64, 65, 300, batch 1 and 64. The linear-attention ops run with both state
layouts of ops.h (the full TaylorExp one and the exact symmetric one)."""

import pytest

import op_checks as C

LENGTHS = [1, 2, 3, 63, 64, 65, 300]
CPU = [("cpu", "float32")]
GPU = [pytest.param("cuda", dt, marks=pytest.mark.gpu) for dt in ("bfloat16", "float16", "float32")]
DEVICES = CPU + GPU
# LA state layout: the CPU cases are cheap (a few seconds in all), so every case runs with both
SYMMETRIC = pytest.mark.parametrize("symmetric", [False, True], ids=["full", "symmetric"])


@SYMMETRIC
@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("hd", [64, 112])
@pytest.mark.parametrize("T", LENGTHS)
def test_linear_attention_prefill(device, dtype, hd, T, symmetric):
    C.check_la(device, dtype, T, H=2, hd=hd, seed=T, symmetric=symmetric)


@SYMMETRIC
@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("T,split", [(2, 1), (65, 64), (300, 77)])
def test_linear_attention_prefill_continues_state(device, dtype, T, split, symmetric):
    C.check_la(device, dtype, T, H=2, hd=64, split=split, seed=7, symmetric=symmetric)


@SYMMETRIC
@pytest.mark.parametrize("device,dtype", [("cpu", "float32"), pytest.param("cuda", "bfloat16", marks=pytest.mark.gpu)])
def test_linear_attention_prefill_hd128_16_heads(device, dtype, symmetric):
    C.check_la(device, dtype, 130, H=16, hd=128, seed=3, symmetric=symmetric)


@SYMMETRIC
@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("hd", [64, 112])
@pytest.mark.parametrize("T", [1, 63, 65, 300])
@pytest.mark.parametrize("B", [1, 3])
def test_linear_attention_prefill_batched(device, dtype, hd, T, B, symmetric):
    """[B, T, H, *] inputs (FLA's layout) in one call == B single-sequence calls == fp64 reference."""
    C.check_la_batched(device, dtype, B, T, H=2, hd=hd, seed=100 * B + T, strided=T % 2 == 1, symmetric=symmetric)


@pytest.mark.gpu
@SYMMETRIC
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("hd", [64, 112])
def test_linear_attention_prefill_batched_long(dtype, hd, symmetric):
    """Few (sequence, head) rows and many chunks: the segmented tensor-core path, batched."""
    C.check_la_batched("cuda", dtype, 2, 1500, H=2, hd=hd, seed=hd, strided=True, symmetric=symmetric)


@SYMMETRIC
@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("hd", [64, 112])
@pytest.mark.parametrize("B", [1, 64])
def test_linear_attention_decode(device, dtype, hd, B, symmetric):
    C.check_la_decode(device, dtype, B, H=2, hd=hd, seed=B, symmetric=symmetric)


@pytest.mark.parametrize("device,dtype", [("cpu", "float32"), pytest.param("cuda", "bfloat16", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("T,split,hd", [(2, 1, 64), (300, 77, 112)])
def test_linear_attention_symmetric_and_full_layouts_agree(device, dtype, T, split, hd):
    """Same inputs, both state layouts: the same y (prefill in two calls, then decode steps)."""
    C.check_la_layouts_agree(device, dtype, T, H=2, hd=hd, split=split, seed=T)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("hd", [64, 112])
@pytest.mark.parametrize("window", [64, 128])
@pytest.mark.parametrize("T", LENGTHS)
def test_sliding_window_prefill(device, dtype, hd, window, T):
    C.check_swa(device, dtype, T, H=2, hd=hd, window=window, seed=T)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("start,T,split", [(1, 1, None), (5, 70, 30), (200, 65, None), (129, 300, 1)])
def test_sliding_window_prefill_continues_from_ring(device, dtype, start, T, split):
    C.check_swa(device, dtype, T, H=2, hd=64, window=64, start=start, split=split, seed=start)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("hd", [64, 112])
@pytest.mark.parametrize("window", [64, 128])
@pytest.mark.parametrize("B", [1, 64])
def test_sliding_window_decode(device, dtype, hd, window, B):
    C.check_swa_decode(device, dtype, B, H=2, hd=hd, window=window, seed=B + window)


@pytest.mark.gpu
@pytest.mark.parametrize("hd,window", [(64, 64), (112, 128)])
def test_sliding_window_decode_grid_orders_agree(monkeypatch, hd, window):
    C.check_swa_decode_grid_orders(monkeypatch, hd, window)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("channels", [96, 100])  # 16-byte vectors for every dtype / for fp32 only
def test_short_conv_prefill(device, dtype, T, channels):
    C.check_conv(device, dtype, T, C=channels, seed=T)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("T,split", [(2, 1), (3, 1), (65, 2), (300, 150)])
def test_short_conv_prefill_continues_tail(device, dtype, T, split):
    C.check_conv(device, dtype, T, C=96, split=split, seed=T)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("B", [1, 64])
def test_short_conv_decode(device, dtype, B):
    C.check_conv_decode(device, dtype, B, C=96, seed=B)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("M,N,K", [(1, 1000, 64), (2, 640, 1792), (3, 17, 65), (5, 96, 264), (8, 1000, 256),
                                   (64, 300, 112), (300, 96, 128)])
def test_dense_ops(device, dtype, M, N, K):
    C.check_dense(device, dtype, M, N, K, seed=M)


@pytest.mark.gpu
def test_ops_honour_a_stream_argument():
    """Inputs still being written on a side stream are waited for; results are
    ordered before later work on that stream (no host sync)."""
    import torch

    import based_core
    from based_core import reference as R

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        u = torch.ones(2048, 4096, device="cuda")
        for _ in range(50):  # keep the side stream busy while the op is queued
            u = u * 1.0001 + 0.001
        y = torch.from_dlpack(based_core.ops.swiglu(u, stream=side.cuda_stream))
        got = (y * 2).double().cpu()
    want = R.swiglu(u.double().cpu()) * 2
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    # default: the legacy default stream, where torch queues work by default
    v = torch.full((64, 128), 2.0, device="cuda")
    assert torch.allclose(torch.from_dlpack(based_core.ops.swiglu(v)).cpu(), R.swiglu(v.double().cpu()).float())
    with pytest.raises(TypeError, match="stream"):
        based_core.ops.swiglu(v, stream="nope")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 50, 1.0), (1.3, 0, 0.9), (0.9, 40, 0.8)])
def test_sample_matches_reference_draws(device, temperature, top_k, top_p):
    C.check_sample(device, rows=64, vocab=5003, temperature=temperature, top_k=top_k, top_p=top_p)
