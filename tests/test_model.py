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
@pytest.mark.parametrize("dtype,hd,chunk", [("float32", 64, 7), ("float32", 112, 0), ("bfloat16", 64, 64),
                                            ("bfloat16", 112, 100)])
def test_prefill_batch_equals_prefill_per_slot(tmp_path, device, dtype, hd, chunk):
    """prefill_batch packs ragged prompts into shared passes of prefill_chunk rows (7: prompts
    span several passes; 64/100: several prompts per pass; 0: the device default, all in one)
    and must give what one prefill() per slot gives: logits (last and all), positions, and the
    state (the next decode step). Slots 1, 2, 3 hold equal-length prompts, so the linear-
    attention layers run them as one batched call; slots 1 and 5 already hold tokens."""
    d = make(tmp_path, "m", n_head=2, head_dim=hd, n_layer=6, window_size=128, dtype=dtype, seed=hd + chunk)
    model = based_core.load(d, device=device, dtype=dtype)
    rng = np.random.default_rng(chunk)
    slots = [6, 1, 2, 3, 0, 5, 4]
    lens = [5, 40, 40, 40, 1, 131, 17]
    prompts = [list(map(int, rng.integers(0, 1000, size=n))) for n in lens]
    earlier = {1: list(map(int, rng.integers(0, 1000, size=9))), 5: list(map(int, rng.integers(0, 1000, size=70)))}
    tol = TOL[dtype] / 2

    def session():
        s = model.session(max_batch=7, prefill_chunk=chunk)
        for slot, toks in earlier.items():
            s.prefill(slot, toks, logits="none")
        return s

    packed, alone = session(), session()
    last = based_core.to_numpy(packed.prefill_batch(slots, prompts))
    want = np.concatenate([based_core.to_numpy(alone.prefill(sl, p)) for sl, p in zip(slots, prompts)])
    assert last.shape == (7, model.config.vocab_padded)
    assert rel_err(last, want) < tol
    for sl, p in zip(slots, prompts):
        assert packed.position(sl) == alone.position(sl) == len(p) + len(earlier.get(sl, []))
    nxt = [int(t) for t in rng.integers(0, 1000, size=7)]
    assert rel_err(based_core.to_numpy(packed.decode(slots, nxt)), based_core.to_numpy(alone.decode(slots, nxt))) < tol

    packed, alone = session(), session()
    every = based_core.to_numpy(packed.prefill_batch(slots, prompts, logits="all"))
    want = np.concatenate([based_core.to_numpy(alone.prefill(sl, p, logits="all")) for sl, p in zip(slots, prompts)])
    assert every.shape == (sum(lens), model.config.vocab_padded)
    assert rel_err(every, want) < tol
    assert packed.prefill_batch([2, 4], [[3, 4], [5]], logits="none") is None
    assert packed.position(2) == 42 and packed.position(4) == 18

    if dtype == "float32":  # and both against the fp64 reference
        ref = reference.load_reference(d, torch.float64)
        for i in (0, 4, 5):
            full = earlier.get(slots[i], []) + prompts[i]
            assert rel_err(last[i], ref.forward(torch.tensor([full])).numpy()[0, -1]) < TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_session_logits_packs_groups_of_max_slots(tiny_model_dir, device):
    """Session.logits runs up to max_slots sequences per call in slots 0.. (scratch): 7
    sequences in a 3-slot session are groups of 3, 3, 1 (passes of 40 rows: a group spans
    two), each row as if run alone; a slot past the batch keeps its sequence."""
    model = based_core.load(tiny_model_dir, device=device, dtype="float32")
    ids = np.random.default_rng(6).integers(0, 1000, size=(7, 23))
    alone = np.stack([based_core.to_numpy(model.session().prefill(0, row, logits="all")) for row in ids])
    got = based_core.to_numpy(model.session(max_batch=3, prefill_chunk=40)._s.logits(ids))
    assert got.shape == (7, 23, model.config.vocab_padded)
    assert rel_err(got, alone) < 1e-5
    s = model.session(max_batch=4)
    s.prefill(3, [5, 6, 7], logits="none")
    assert rel_err(based_core.to_numpy(s._s.logits(ids[:3])), alone[:3]) < 1e-5
    assert [s.position(i) for i in range(4)] == [23, 23, 23, 3]  # slots 0-2 scratch, slot 3 kept
    assert rel_err(based_core.to_numpy(model.logits(ids)), alone) < 1e-5  # Model.logits: 7 slots
    with pytest.raises(ValueError, match="max_context=10"):
        model.session(max_batch=2, max_context=10)._s.logits(ids)


def test_prefill_batch_checks_arguments_before_changing_state(tiny_model_dir):
    model = based_core.load(tiny_model_dir, device="cpu", dtype="float32")
    s = model.session(max_batch=3, max_context=50)
    s.prefill(0, [1, 2, 3], logits="none")
    bad = [
        (([0, 0], [[1], [2]]), ValueError, "slot 0 appears twice"),
        (([0, 1], [[1]]), ValueError, "2 slots but 1 prompts"),
        (([0, 1], [[1], []]), ValueError, "prompt 1 is empty"),
        (([0, 3], [[1], [2]]), IndexError, "slot 3 out of range"),
        (([1, 0], [[1], [2, 1000]]), IndexError, "prompt 1: token id 1000 at index 1"),
        (([1, 0], [[1], [2] * 48]), ValueError, "past max_context=50"),
        (([], []), ValueError, "no prompts"),
    ]
    for (slots, prompts), err, msg in bad:
        with pytest.raises(err, match=msg):
            s.prefill_batch(slots, prompts)
    with pytest.raises(TypeError, match="use prefill"):
        s.prefill_batch(0, [[1]])
    with pytest.raises(TypeError, match=r"prompts\[1\]: expected integer token ids"):
        s.prefill_batch([0, 1], [[1], [1.5]])
    with pytest.raises(ValueError, match=r"prompts\[0\]: expected a 1-D array"):
        s.prefill_batch([1], [np.ones((2, 2), np.int64)])
    with pytest.raises(IndexError, match=r"prompts\[0\]: token id 1099511627776 does not fit"):
        s.prefill_batch([1], [[2**40]])
    with pytest.raises(ValueError, match="logits"):
        s.prefill_batch([1], [[1]], logits="first")
    assert [s.position(i) for i in range(3)] == [3, 0, 0]


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
def test_many_short_prompts_run_in_lockstep_like_alone(tiny_model_dir, device):
    """12 prompts of 1-3 tokens (>= 4x as many prompts as tokens): generate prefills them together
    as decode steps, position by position. Same tokens as each prompt alone (prefilled), greedy
    and seeded sampling (the first prompt keeps sequence index 0), and as the fp64 reference."""
    model = based_core.load(tiny_model_dir, device=device, dtype="float32")
    rng = np.random.default_rng(4)
    prompts = [list(map(int, rng.integers(0, 1000, size=n))) for n in [1] * 9 + [2, 3, 1]]
    batched = model.generate(prompts, max_new_tokens=8)
    ref = reference.load_reference(tiny_model_dir, torch.float64)
    for p, b in zip(prompts, batched):
        assert model.generate([p], max_new_tokens=8)[0] == b
        assert ref.generate_greedy(p, 8) == b
    kw = dict(max_new_tokens=8, temperature=0.8, top_k=50, seed=7)
    a = model.generate(prompts, **kw)
    assert model.generate(prompts[:1], **kw)[0] == a[0]
    assert model.generate(prompts[:2], **kw) == a[:2]  # 2 prompts: prefilled one by one
    s = model.session(max_batch=12)
    s.generate(prompts, max_new_tokens=3)
    assert [s.position(i) for i in range(12)] == [len(p) + 2 for p in prompts]  # the last token is not fed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fixed_length_generation_equals_step_by_step(tiny_model_dir, device, dtype):
    """Greedy generate without stop tokens or callback queues every decode step at once, each
    step's argmax feeding the next on the device; the step-by-step loop (taken when a callback
    is given) must make the same tokens and leave the slots at the same positions and state
    (the next decode step's logits are equal). Ragged prompts, and short ones in lockstep."""
    model = based_core.load(tiny_model_dir, device=device, dtype=dtype)
    rng = np.random.default_rng(11)
    for lens in [(1, 5, 17, 40, 2), [1] * 9 + [2, 3, 1], (6,)]:
        prompts = [list(map(int, rng.integers(0, 1000, size=n))) for n in lens]
        sessions = [model.session(max_batch=len(prompts)) for _ in range(2)]
        queued = sessions[0].generate(prompts, max_new_tokens=9)
        stepped = sessions[1].generate(prompts, max_new_tokens=9, on_token=lambda i, t: True)
        assert queued == stepped and all(len(t) == 9 for t in queued)
        for s in sessions:
            assert [s.position(i) for i in range(len(prompts))] == [len(p) + 8 for p in prompts]
        slots, last = list(range(len(prompts))), [t[-1] for t in queued]
        a, b = (based_core.to_numpy(s.decode(slots, last)) for s in sessions)
        np.testing.assert_array_equal(a, b)
        assert sessions[0].generate(prompts, max_new_tokens=1) == [t[:1] for t in queued]


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


# ---------------------------------------------------------------- LA state layout (symmetric_state)


def greedy_with_logits(session, prompt, n):
    """Prefill `prompt` in slot 0 (logits of every position), then n - 1 greedy decode steps:
    (n greedy tokens, logits [len(prompt) + n - 1, V])."""
    rows = [based_core.to_numpy(session.prefill(0, prompt, logits="all"))]
    toks = [int(rows[-1][-1].argmax())]
    while len(toks) < n:
        rows.append(based_core.to_numpy(session.decode([0], [toks[-1]])))
        toks.append(int(rows[-1][-1].argmax()))
    return toks, np.concatenate(rows)


@pytest.mark.parametrize("device", DEVICES)
def test_symmetric_and_full_state_sessions_agree(tiny_model_dir, device):
    """The symmetric LA state (the default) is exact: same greedy tokens, logits equal to fp32
    rounding, and both match the fp64 reference; chunked prefill carries either layout over."""
    model = based_core.load(tiny_model_dir, device=device, dtype="float32")
    assert model.session().symmetric_state  # the default
    prompt = [int(t) for t in np.random.default_rng(3).integers(0, 1000, size=40)]
    got = {}
    for symmetric in (True, False):
        s = model.session(max_batch=2, prefill_chunk=16, symmetric_state=symmetric)
        assert s.symmetric_state is symmetric
        got[symmetric] = greedy_with_logits(s, prompt, 12)
    assert got[True][0] == got[False][0]
    assert rel_err(got[True][1], got[False][1]) < 1e-4
    ref = reference.load_reference(tiny_model_dir, torch.float64)
    want = ref.forward(torch.tensor([prompt + got[True][0][:-1]]))[0].numpy()
    assert rel_err(got[True][1], want) < TOL["float32"]
    # batched ragged generation (decode rows in several slots) gives the same tokens
    prompts = [prompt[:5], prompt[:17]]
    a = model.session(max_batch=2, symmetric_state=True).generate(prompts, max_new_tokens=10)
    assert model.session(max_batch=2, symmetric_state=False).generate(prompts, max_new_tokens=10) == a


def test_symmetric_state_bytes_per_slot(tiny_model_dir):
    model = based_core.load(tiny_model_dir, device="cpu", dtype="float32")
    c = model.config
    f, n_la = c.la_feature_dim, c.layers.count("linear_attention")
    assert n_la > 0
    # each LA layer keeps S [H, D, hd] and z [H, D] in fp32 per slot; only D changes
    rows_saved = (1 + f + f * f) - (1 + f + f * (f + 1) // 2)  # 273 - 153 = 120 for f = 16
    saved = n_la * c.la_heads * rows_saved * (c.la_head_dim + 1) * 4
    full = model.session(symmetric_state=False).state_bytes_per_slot
    assert model.session(symmetric_state=True).state_bytes_per_slot == full - saved
    assert model.session().state_bytes_per_slot == full - saved  # symmetric is the default


def test_load_slot_refuses_the_other_state_layout(tiny_model_dir):
    model = based_core.load(tiny_model_dir, device="cpu", dtype="float32")
    sessions = {sym: model.session(max_batch=2, symmetric_state=sym) for sym in (True, False)}
    for s in sessions.values():
        s.prefill(0, [3, 1, 4, 1, 5], logits="none")
        s.prefill(1, [2, 7, 1], logits="none")
    blobs = {sym: s.save_slot(0) for sym, s in sessions.items()}
    for sym, s in sessions.items():
        with pytest.raises(ValueError, match="load_slot: .*layout"):
            s.load_slot(1, blobs[not sym])
        assert s.position(1) == 3  # refused before touching the slot
        s.load_slot(1, blobs[sym])  # its own layout's blob loads, and continues exactly
        assert s.position(1) == 5
        np.testing.assert_array_equal(based_core.to_numpy(s.decode([1], [8])), based_core.to_numpy(s.decode([0], [8])))


def test_state_layout_does_not_matter_without_linear_attention(tmp_path):
    """With no LA layer the two layouts are one: same size, and slots move between them."""
    d = make(tmp_path, "m", n_head=4, head_dim=16, layer_kinds=["conv", "swa", "conv"], window_size=8, seed=6)
    model = based_core.load(d, device="cpu", dtype="float32")
    a, b = model.session(symmetric_state=True), model.session(symmetric_state=False)
    assert a.state_bytes_per_slot == b.state_bytes_per_slot
    a.prefill(0, [5, 6, 7], logits="none")
    a.load_slot(0, a.save_slot(0))  # its own blob, of course
    b.load_slot(0, a.save_slot(0))
    np.testing.assert_array_equal(based_core.to_numpy(b.decode([0], [1])), based_core.to_numpy(a.decode([0], [1])))
