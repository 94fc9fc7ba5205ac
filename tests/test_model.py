"""Whole-model behaviour against the fp64 PyTorch reference on tiny random
models written to disk in the released layout."""

import numpy as np
import pytest
import torch

import based_core
from based_core import reference
from based_core.testing import make_random_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# tolerance on logits relative to max |logit|, by model dtype
TOL = {"float32": 2e-4, "float16": 2e-2, "bfloat16": 6e-2}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / (np.abs(b).max() + 1e-9)


def make(tmp_path, name, **kw):
    d = tmp_path / name
    d.mkdir()
    return make_random_model(str(d), **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hd,window", [(64, 128), (112, 256), (16, 16)])
def test_logits_match_reference(tmp_path, device, hd, window):
    d = make(tmp_path, "m", n_head=2, head_dim=hd, n_layer=6, window_size=window, vocab_size=1001, seed=hd)
    model = based_core.load(d, device=device, dtype="float32")
    ref = reference.load_reference(d, torch.float64)
    ids = np.random.default_rng(hd).integers(0, 1001, size=(2, 150))
    got = based_core.to_numpy(model.logits(ids))
    assert got.shape == (2, 150, 1008)  # padded to a multiple of 8
    want = ref.forward(torch.tensor(ids)).numpy()
    assert rel_err(got, want) < TOL["float32"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_models(tmp_path, device, dtype):
    d = make(tmp_path, "m", n_head=2, head_dim=64, n_layer=6, window_size=128, dtype=dtype, seed=5)
    model = based_core.load(d, device=device, dtype=dtype)
    assert model.dtype == dtype
    ref = reference.load_reference(d, torch.float64)
    ids = np.random.default_rng(0).integers(0, 1000, size=(1, 80))
    got = based_core.to_numpy(model.logits(ids))
    assert rel_err(got, ref.forward(torch.tensor(ids)).numpy()) < TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_prefill_equals_stepwise_decode(tiny_model_dir, device):
    model = based_core.load(tiny_model_dir, device=device, dtype="float32")
    ids = list(np.random.default_rng(1).integers(0, 1000, size=70))
    full = based_core.to_numpy(model.logits(ids))  # [L, V]
    s = model.session(max_batch=3)
    s.prefill(2, ids[:1], logits="none")
    steps = [based_core.to_numpy(s.decode([2], [t]))[0] for t in ids[1:]]
    assert rel_err(np.stack(steps), full[1:]) < 1e-4
    # prefill in pieces of odd sizes continues the state exactly
    s.reset(1)
    a = based_core.to_numpy(s.prefill(1, ids[:33], logits="all"))
    b = based_core.to_numpy(s.prefill(1, ids[33:], logits="all"))
    assert rel_err(np.concatenate([a, b]), full) < 1e-4
    assert s.position(1) == 70 and s.position(2) == 70 and s.position(0) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_ragged_batch_equals_each_prompt_alone(tiny_model_dir, device):
    model = based_core.load(tiny_model_dir, device=device, dtype="float32")
    rng = np.random.default_rng(2)
    prompts = [list(map(int, rng.integers(0, 1000, size=n))) for n in (1, 5, 17, 40, 2)]
    batched = model.generate(prompts, max_new_tokens=12)
    for p, b in zip(prompts, batched):
        assert model.generate([p], max_new_tokens=12)[0] == b
    ref = reference.load_reference(tiny_model_dir, torch.float64)
    for p, b in zip(prompts, batched):
        assert ref.generate_greedy(p, 12) == b


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_is_seeded_and_batch_independent(tiny_model_dir, device):
    model = based_core.load(tiny_model_dir, device=device, dtype="float32")
    prompts = [[1, 2, 3], [4, 5]]
    kw = dict(max_new_tokens=10, temperature=0.8, top_k=50, top_p=0.9, seed=1234)
    a = model.generate(prompts, **kw)
    assert model.generate(prompts, **kw) == a
    assert model.generate([prompts[0]], **kw)[0] == a[0]
    assert model.generate(prompts, **{**kw, "seed": 99}) != a
    assert all(0 <= t < 1000 for seq in a for t in seq)


def test_stop_tokens_and_callback(tiny_model_dir):
    model = based_core.load(tiny_model_dir, device="cpu", dtype="float32")
    full = model.generate([[7, 8, 9]], max_new_tokens=10)[0]
    stop = full[3]
    cut = model.generate([[7, 8, 9]], max_new_tokens=10, stop_tokens=[stop])[0]
    assert cut == full[: full.index(stop) + 1]
    seen = []
    model.generate([[7, 8, 9], [1]], max_new_tokens=4, on_token=lambda i, t: seen.append((i, t)))
    assert len(seen) == 8 and {i for i, _ in seen} == {0, 1}


@pytest.mark.parametrize("fmt,prefix,metrics,tied", [
    ("bin", True, True, "lm_head"),
    ("bin", False, False, "both"),
    ("safetensors", True, False, "embedding"),
    ("safetensors", False, True, "lm_head"),
])
def test_checkpoint_layouts_load_identically(tmp_path, fmt, prefix, metrics, tied):
    base = make(tmp_path, "base", seed=3)
    other = make(tmp_path, "other", seed=3, fmt=fmt, prefix=prefix, metrics_key=metrics, tied_name=tied, decay_key=True)
    ids = [[5, 6, 7, 8, 9, 10]]
    a = based_core.to_numpy(based_core.load(base, device="cpu", dtype="float32").logits(ids))
    b = based_core.to_numpy(based_core.load(other, device="cpu", dtype="float32").logits(ids))
    np.testing.assert_array_equal(a, b)


def test_tensor_result_interop(tiny_model_dir):
    model = based_core.load(tiny_model_dir, device="cpu", dtype="bfloat16")
    t = model.logits([[1, 2, 3]])
    assert t.shape == (1, 3, 1000) and t.dtype == "float32" and t.device == "cpu"
    a = based_core.to_numpy(t)
    np.testing.assert_array_equal(np.from_dlpack(t), a)
    np.testing.assert_array_equal(torch.from_dlpack(t).numpy(), a)
    np.testing.assert_array_equal(np.asarray(t), a)
    assert based_core.to_numpy(model.logits([1, 2, 3])).shape == (3, 1000)


def test_slot_copy_save_load_round_trip(tiny_model_dir):
    model = based_core.load(tiny_model_dir, device="cpu", dtype="float32")
    s = model.session(max_batch=3)
    s.prefill(0, [3, 1, 4, 1, 5, 9, 2, 6], logits="none")
    blob = s.save_slot(0)
    s.copy_slot(0, 1)
    s.load_slot(2, blob)
    outs = [based_core.to_numpy(s.decode([i], [7]))[0] for i in range(3)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    assert s.position(2) == 9
    with pytest.raises(ValueError, match="load_slot"):
        s.load_slot(0, blob[:-4])


@pytest.mark.gpu
def test_cuda_tensor_interop_torch_cupy_jax(tiny_model_dir):
    """Results stay on the GPU and are shared zero-copy through DLPack."""
    model = based_core.load(tiny_model_dir, device="cuda", dtype="bfloat16")
    t = model.logits([[1, 2, 3]])
    assert t.device == "cuda:0" and t.__dlpack_device__() == (2, 0)
    want = based_core.to_numpy(t)
    tt = torch.from_dlpack(t)
    assert tt.is_cuda and tuple(tt.shape) == (1, 3, 1000)
    np.testing.assert_array_equal(tt.cpu().numpy(), want)
    # inputs from torch CUDA tensors work zero-copy too
    u = torch.randn(8, 64, device="cuda")
    np.testing.assert_allclose(based_core.to_numpy(based_core.ops.swiglu(u)),
                               (u[:, :32] * torch.nn.functional.silu(u[:, 32:])).cpu().numpy(), rtol=1e-5, atol=1e-6)
    try:
        import cupy
    except ImportError:
        cupy = None
    if cupy is not None:
        np.testing.assert_array_equal(cupy.asnumpy(cupy.from_dlpack(t)), want)
        c = cupy.asarray(u.cpu().numpy())
        np.testing.assert_allclose(based_core.to_numpy(based_core.ops.swiglu(c)),
                                   based_core.to_numpy(based_core.ops.swiglu(u)), rtol=1e-6)


@pytest.mark.gpu
def test_cuda_tensor_interop_jax(tiny_model_dir):
    jax = pytest.importorskip("jax")
    import jax.dlpack

    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("jax has no GPU backend on this machine")
    model = based_core.load(tiny_model_dir, device="cuda", dtype="float32")
    t = model.logits([[4, 5]])
    np.testing.assert_array_equal(np.asarray(jax.dlpack.from_dlpack(t)), based_core.to_numpy(t))
