"""Misuse does not crash: every bad call raises the documented exception
(ValueError / TypeError / IndexError / MemoryError), names the argument, and
leaves the model usable; concurrent callers get the same results as
sequential ones. Complements test_errors.py (files, configs, basic arguments)."""

import threading

import numpy as np
import pytest

import based_core
from based_core.testing import make_random_model

PROMPTS = [[1, 2, 3], [7], [5, 900, 12, 44, 3, 2, 1], [999, 0]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # vocab 1001 is padded to 1008: ids in [1001, 1008) are rows of the
    # embedding but not tokens, and must be refused like any other bad id.
    d = make_random_model(str(tmp_path_factory.mktemp("misuse")), n_head=4, head_dim=16, n_layer=3,
                          window_size=8, vocab_size=1001, seed=4)
    m = based_core.load(d, device="cpu", dtype="float32")
    assert m.config.vocab_padded == 1008
    return m


# ---------------------------------------------------------------- token ids and prompts


def test_out_of_range_token_ids(model):
    V = model.vocab_size
    cases = [
        (lambda: model.generate([[1, V]]), rf"token id {V} .*vocab_size"),
        (lambda: model.generate([[1, model.config.vocab_padded - 1]]), "out of range"),  # a padding row
        (lambda: model.generate([[-1]]), "token id -1"),
        (lambda: model.generate([[1, 2**40]]), r"prompts\[0\]\[1\]: token id 1099511627776"),
        (lambda: model.generate([np.array([3, 2**40])]), r"prompts\[0\]\[1\]: token id 1099511627776"),
        (lambda: model.logits([[1, 2**40]]), "does not fit in int32"),
        (lambda: model.logits(np.array([[3, -7]])), "token id -7"),
        (lambda: model.generate([[1]], stop_tokens=[2**33]), r"stop_tokens\[0\]"),
    ]
    for call, msg in cases:
        with pytest.raises(IndexError, match=msg):
            call()
    s = model.session(max_batch=2)
    with pytest.raises(IndexError, match="token id 5000"):
        s.decode([0], [5000])
    with pytest.raises(IndexError, match=r"tokens\[1\]: token id"):
        s.decode([0, 1], [1, 2**35])


def test_empty_prompts(model):
    assert model.generate([]) == []
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        model.generate([[1], []])
    with pytest.raises(ValueError, match="empty"):
        model.logits([])
    with pytest.raises(ValueError, match="empty"):
        model.logits([[]])
    with pytest.raises(ValueError, match="empty"):
        model.session().prefill(0, [])
    with pytest.raises(ValueError, match="no rows"):
        model.session().decode([], [])


def test_wrong_token_types_are_type_errors(model):
    s = model.session(max_batch=2)
    for call, msg in [
        (lambda: model.logits(np.zeros((1, 3), np.float32)), "integer token ids.*float32"),
        (lambda: model.logits([[0.5, 1.0]]), "integer token ids"),
        (lambda: model.logits(np.ones(3, bool)), "integer token ids.*bool"),
        (lambda: model.generate([[1.0, 2.0]]), r"prompts\[0\]\[0\]: expected an integer, got float"),
        (lambda: model.generate("the text"), "generate_text"),
        (lambda: model.generate(None), "prompts"),
        (lambda: model.generate([1, 2]), "wrap a single prompt"),
        (lambda: model.generate([["a"]]), r"prompts\[0\]\[0\]"),
        (lambda: model.generate([[1, True]]), r"prompts\[0\]\[1\]: expected an integer, got bool"),
        (lambda: model.generate([[1]], max_new_tokens=2.5), "max_new_tokens: expected an integer"),
        (lambda: s.prefill(0, np.array([1.0, 2.0])), "integer token ids.*float64"),
        # flat lists take a faster conversion; what it refuses gets the same errors
        (lambda: s.prefill(0, [1, 2.5]), "integer token ids.*float64"),
        (lambda: s.prefill(0, [1, "2"]), "integer token ids"),
        (lambda: s.prefill(0, [True, False]), "integer token ids.*bool"),
        (lambda: s.prefill_batch([0, 1], [[1, 2], [3, 2**70]]), r"prompts\[1\]: expected integer token ids.*object"),
        (lambda: s.decode([0], [1.5]), r"tokens\[0\]: expected an integer"),
        (lambda: s.decode([0.0], [1]), r"slots\[0\]: expected an integer"),
        (lambda: s.load_slot(0, "not bytes"), "data: expected the bytes"),
    ]:
        with pytest.raises(TypeError, match=msg):
            call()


def test_token_lists_and_arrays_give_the_same_logits(model):
    """Flat lists of ints (numpy ints too) go through array.array; arrays and lists must agree."""
    ids = [5, 17, 3, 99, 0, 42]
    a = model.session(max_batch=2)
    b = model.session(max_batch=2)
    from_list = based_core.to_numpy(a.prefill_batch([0, 1], [ids, [np.int64(7), 8, True]], logits="all"))
    from_arrays = based_core.to_numpy(b.prefill_batch([0, 1], [np.array(ids, np.int32), np.array([7, 8, 1])],
                                                      logits="all"))
    assert from_list.shape == (9, from_list.shape[1])
    assert np.array_equal(from_list, from_arrays)


# ---------------------------------------------------------------- limits and options


def test_max_new_tokens_past_the_configured_limit(model):
    s = model.session(max_batch=2, max_context=10)
    with pytest.raises(ValueError, match=r"prompt 0 \(3 tokens\) \+ max_new_tokens \(8\) exceeds max_context=10"):
        s.generate([[1, 2, 3]], max_new_tokens=8)
    assert len(s.generate([[1, 2, 3]], max_new_tokens=7)[0]) == 7  # exactly at the limit
    s.reset()
    s.prefill(0, list(range(1, 11)))
    with pytest.raises(ValueError, match="max_context=10"):
        s.decode([0], [1])
    assert s.position(0) == 10
    # Without a configured limit, the int32 positions bound max_new_tokens up front
    # (the call would otherwise run for days before failing).
    with pytest.raises(ValueError, match="max_new_tokens: expected at most 2147483647"):
        model.generate([[1]], max_new_tokens=2**40)
    with pytest.raises(ValueError, match="max_new_tokens: expected >= 0"):
        model.generate([[1]], max_new_tokens=-1)
    assert model.generate([[1]], max_new_tokens=0) == [[]]


def test_bad_session_options_and_slots(model):
    for kw, msg in [({"max_batch": 0}, "max_batch: expected 1..1048576, got 0"),
                    ({"max_batch": 2**40}, "max_batch: expected 1..1048576"),
                    ({"max_context": -1}, "max_context")]:
        with pytest.raises(ValueError, match=msg):
            model.session(**kw)
    s = model.session(max_batch=2)
    for call, msg in [(lambda: s.prefill(2, [1]), "slot 2 out of range"),
                      (lambda: s.prefill(-1, [1]), "slot -1 out of range"),
                      (lambda: s.prefill(2**40, [1]), "slot 1099511627776 out of range"),
                      (lambda: s.decode([5], [1]), "slot 5"),
                      (lambda: s.copy_slot(0, 9), "slot 9 out of range"),
                      (lambda: s.save_slot(3), "slot 3"),
                      (lambda: s.position(7), "slot 7")]:
        with pytest.raises(IndexError, match=msg):
            call()
    with pytest.raises(ValueError, match="appears twice"):
        s.decode([1, 1], [1, 2])
    with pytest.raises(ValueError, match="3 prompts but the session has 2 slots"):
        s.generate([[1], [2], [3]])
    with pytest.raises(ValueError, match="load_slot: expected"):
        s.load_slot(0, b"junk")
    with pytest.raises(ValueError, match="logits: expected 'last', 'all' or 'none'"):
        s.prefill(0, [1], logits="first")
    for kw, msg in [({"temperature": float("nan")}, "temperature"), ({"temperature": -0.5}, "temperature"),
                    ({"temperature": 1.0, "top_p": 1.5}, "top_p"), ({"top_k": -3}, "top_k")]:
        with pytest.raises(ValueError, match=msg):
            model.generate([[1]], **kw)
    # top_k beyond int32 means "no limit", like any top_k >= the vocabulary
    assert len(model.generate([[1]], temperature=1.0, top_k=2**40, seed=1, max_new_tokens=3)[0]) == 3


def test_too_many_slots_is_a_memory_error_with_sizes(tmp_path):
    # d=1024 puts 273 * 1024 * 4 bytes (1.1 MiB) of linear-attention state in
    # every slot: 2^20 slots ask for ~1.1 TiB in one allocation, more than the
    # machine's RAM, which the CPU backend refuses up front (also where the
    # kernel overcommits and malloc would "succeed").
    d = make_random_model(str(tmp_path / "wide"), d_model=1024, n_head=4, layer_kinds=["la"], vocab_size=64,
                          n_inner=256, seed=3)
    m = based_core.load(d, device="cpu", dtype="float32")
    want = m.generate([[1, 2, 3]], max_new_tokens=3)
    with pytest.raises(MemoryError, match=r"cannot allocate \d+ MiB \(1048576 slots x \d+ KiB of state \+ \d+ MiB"):
        m.session(max_batch=1 << 20)
    with pytest.raises(MemoryError, match="1048576 slots"):
        m.generate([[1]] * (1 << 20), max_new_tokens=1)  # the cached session cannot grow either
    # the process goes on, and the model still works (and gives the same tokens)
    assert m.generate([[1, 2, 3]], max_new_tokens=3) == want
    assert m.session(max_batch=4).generate([[1, 2, 3]], max_new_tokens=3) == want


# ---------------------------------------------------------------- recovery after failures


def test_calls_after_a_failed_call_work(model):
    want = model.generate(PROMPTS, max_new_tokens=5)
    for bad in (lambda: model.generate([[1, 10**6]]), lambda: model.generate([[1], []]),
                lambda: model.generate([[1]], top_p=0.0, temperature=1.0), lambda: model.logits([[0.5]])):
        with pytest.raises((ValueError, TypeError, IndexError)):
            bad()
        assert model.generate(PROMPTS, max_new_tokens=5) == want

    # A session: failed calls leave every slot as it was (arguments are checked
    # before any state is touched), so decoding continues as if they never happened.
    ref = model.session(max_batch=2)
    ref.prefill(0, [1, 2, 3])
    ref.prefill(1, [4, 5])
    ref_logits = based_core.to_numpy(ref.decode([0, 1], [6, 7]))

    s = model.session(max_batch=2, max_context=6)
    s.prefill(0, [1, 2, 3])
    with pytest.raises(IndexError):
        s.prefill(1, [4, 10**6])
    with pytest.raises(ValueError):
        s.prefill(0, [1, 2, 3, 4])  # past max_context
    with pytest.raises(IndexError):
        s.decode([0, 1], [6, -2])
    assert (s.position(0), s.position(1)) == (3, 0)
    s.prefill(1, [4, 5])
    np.testing.assert_array_equal(based_core.to_numpy(s.decode([0, 1], [6, 7])), ref_logits)


# ---------------------------------------------------------------- threads


def test_concurrent_generate_matches_sequential(model):
    jobs = [dict(prompts=PROMPTS, max_new_tokens=6),
            dict(prompts=PROMPTS[1:], max_new_tokens=4),
            dict(prompts=[PROMPTS[2]], max_new_tokens=8, temperature=0.9, top_k=20, seed=5),
            dict(prompts=PROMPTS[::-1], max_new_tokens=5, temperature=1.2, top_p=0.9, seed=11)]
    sequential = [model.generate(j["prompts"], **{k: v for k, v in j.items() if k != "prompts"}) for j in jobs]
    results = {}
    errors = []
    start = threading.Barrier(len(jobs))

    def work(i):
        try:
            start.wait()
            for rep in range(3):
                j = jobs[i]
                results[(i, rep)] = model.generate(j["prompts"], **{k: v for k, v in j.items() if k != "prompts"})
        except BaseException as e:  # reported below; a thread must not swallow it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    for (i, rep), got in results.items():
        assert got == sequential[i], f"thread {i}, repetition {rep}"
    assert len(results) == 3 * len(jobs)


def test_concurrent_logits_and_failures_do_not_interfere(model):
    tokens = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    want = based_core.to_numpy(model.logits(tokens))
    errors, same = [], []

    def good():
        for _ in range(3):
            same.append(np.array_equal(based_core.to_numpy(model.logits(tokens)), want))

    def bad():
        for _ in range(3):
            try:
                model.generate([[1, 10**6]])
            except IndexError:
                continue
            errors.append("no IndexError")

    threads = [threading.Thread(target=f) for f in (good, bad, good, bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(same) == 6 and all(same)


# ---------------------------------------------------------------- based_core.ops


def test_ops_misuse_raises_the_documented_types():
    ops = based_core.ops
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    q, v, S, z = f32(4, 2, 16), f32(4, 2, 64), f32(2, 273, 64), f32(2, 273)
    for call, exc, msg in [
        # wrong shapes
        (lambda: ops.la_prefill(q, q, v, f32(2, 272, 64), z), ValueError, r"state_s must have shape \[2, 273, 64\]"),
        # the state layout: symmetric=True wants 1+f+f(f+1)/2 = 153 rows, the default 273; neither takes the other
        (lambda: ops.la_prefill(q, q, v, S, z, symmetric=True), ValueError,
         r"la_prefill: state_s must have shape \[2, 153, 64\], got \[2, 273, 64\]"),
        (lambda: ops.la_prefill(q, q, v, f32(2, 153, 64), f32(2, 153)), ValueError,
         r"la_prefill: state_s must have shape \[2, 273, 64\], got \[2, 153, 64\]"),
        (lambda: ops.la_prefill(q, q, v, f32(2, 153, 64), z, symmetric=True), ValueError,
         r"state_z must have shape \[2, 153\], got \[2, 273\]"),
        (lambda: ops.la_prefill(q[None], q[None], v[None], S[None], z[None], symmetric=True), ValueError,
         r"state_s must have shape \[1, 2, 153, 64\]"),
        (lambda: ops.la_decode(q[:1], q[:1], v[:1], S[None], z[None], np.zeros(1, np.int32), symmetric=True),
         ValueError, r"la_decode: state_s must have shape \[\*, 2, 153, 64\], got \[1, 2, 273, 64\]"),
        (lambda: ops.la_decode(q[:1], q[:1], v[:1], f32(1, 2, 153, 64), f32(1, 2, 153), np.zeros(1, np.int32)),
         ValueError, r"la_decode: state_s must have shape \[\*, 2, 273, 64\], got \[1, 2, 153, 64\]"),
        (lambda: ops.gemm(f32(2, 3), f32(4, 5)), ValueError, r"gemm: w must have shape \[\*, 3\], got \[4, 5\]"),
        (lambda: ops.swiglu(f32(2, 3)), ValueError, "even"),
        (lambda: ops.rmsnorm(f32(2, 8), f32(7)), ValueError, "weight must have shape"),
        (lambda: ops.swa_prefill(f32(1, 3, 1, 4), f32(2, 1, 4), f32(2, 1, 4), 4), ValueError, "window\\+1 rows"),
        # non-contiguous
        (lambda: ops.la_prefill(q, q, f32(4, 64, 2).transpose(0, 2, 1), S, z), ValueError, "v: must be C-contiguous"),
        (lambda: ops.argmax(f32(3, 4).T), ValueError, "C-contiguous"),
        # dtypes
        (lambda: ops.la_prefill(q, q.astype(np.float64), v, S, z), TypeError, "k must be float32, got float64"),
        (lambda: ops.gemm(f32(2, 3), np.zeros((4, 3), np.float16)), TypeError, "w must be float32, got float16"),
        (lambda: ops.argmax(np.zeros((2, 3), np.complex64)), TypeError, "logits: unsupported dtype"),
        (lambda: ops.embedding(np.zeros(2, np.int64), f32(4, 2)), TypeError, "ids must be int32, got int64"),
        (lambda: ops.conv_decode(f32(1, 8), f32(4, 3), f32(2, 2, 4), np.zeros(1, np.int64)), TypeError,
         "slots must be int32, got int64"),
        (lambda: ops.la_decode(q[:1], q[:1], v[:1], S[None], z[None], np.zeros(1, np.int64)), TypeError,
         "slots must be int32"),
        (lambda: ops.rmsnorm(f32(2, 4), np.ones(4, np.int32)), TypeError, "weight must be float32, float16 or bfloat16"),
        (lambda: ops.argmax([[1.0, 2.0]]), TypeError, "argmax"),  # not an array at all
        # indices
        (lambda: ops.la_decode(q[:1], q[:1], v[:1], S[None], z[None], np.array([5], np.int32)), IndexError,
         "slots holds 5, outside \\[0, 1\\)"),
        (lambda: ops.embedding(np.array([7], np.int32), f32(4, 2)), IndexError, r"ids.* 7\b"),
        (lambda: ops.embedding(np.array([-1], np.int32), f32(4, 2)), IndexError, r"ids.* -1\b"),
        (lambda: ops.swa_decode(f32(1, 3, 1, 4), f32(1, 2, 1, 4), f32(1, 2, 1, 4), np.zeros(1, np.int32),
                                np.array([-3], np.int32), 1), IndexError, "positions holds -3"),
    ]:
        with pytest.raises(exc, match=msg):
            call()
    # the ops still work afterwards
    np.testing.assert_array_equal(based_core.to_numpy(ops.argmax(np.eye(3, dtype=np.float32))), [0, 1, 2])


def test_cuda_device_on_a_machine_without_one(tiny_model_dir):
    if based_core.cuda_available():
        pytest.skip("a GPU is available")
    with pytest.raises(RuntimeError, match="CUDA"):
        based_core.load(tiny_model_dir, device="cuda", dtype="float32")
    assert isinstance(based_core.cuda_available(), bool)  # asking again stays cheap and quiet


# ---------------------------------------------------------------- GPU-only misuse


@pytest.mark.gpu
def test_cuda_error_for_a_missing_device(tiny_model_dir):
    with pytest.raises(based_core.CudaError, match="cuda:1024"):
        based_core.load(tiny_model_dir, device="cuda:1024", dtype="float32")  # parses, but no such GPU
    assert issubclass(based_core.CudaError, RuntimeError)
    # the GPU stays usable after the failure
    m = based_core.load(tiny_model_dir, device="cuda", dtype="float32")
    assert len(m.generate([[1, 2]], max_new_tokens=2)[0]) == 2


@pytest.mark.gpu
def test_device_arrays_where_host_memory_is_needed(tiny_model_dir):
    torch = pytest.importorskip("torch")
    m = based_core.load(tiny_model_dir, device="cuda", dtype="float32")
    ids = torch.tensor([[1, 2, 3]], dtype=torch.int32, device="cuda")
    s = m.session()
    with pytest.raises(TypeError, match="tokens: token ids must be in host memory"):
        s._s.prefill(0, ids[0], "last")  # the native check (Python callers copy first)
    with pytest.raises(TypeError, match="must be in host memory"):
        based_core.Model(based_core._core.NativeModel.from_weights(
            m.config, {"x": torch.zeros(2, device="cuda")}, device="cpu", dtype="float32"))
    # mixed devices in one op: the message names both devices
    q = torch.zeros(4, 2, 16, device="cuda")
    with pytest.raises((TypeError, ValueError), match="is on cpu but earlier arguments are on cuda:0"):
        based_core.ops.la_prefill(q, q, torch.zeros(4, 2, 64), torch.zeros(2, 273, 64, device="cuda"),
                                  torch.zeros(2, 273, device="cuda"))


def test_one_session_shared_by_threads_serializes_calls(model):
    """Calls on one Session from several threads run one at a time: each thread
    decoding its own slot gets exactly what it gets alone."""
    import threading

    import numpy as np

    prompts = {slot: [slot + 1, 7, 9, slot + 3] for slot in range(4)}

    def run(sess, slot, out):
        sess.prefill(slot, prompts[slot], logits="none")
        toks = []
        tok = 5
        for _ in range(12):
            tok = int(np.argmax(based_core.to_numpy(sess.decode([slot], [tok]))[0, :1001]))
            toks.append(tok)
        out[slot] = toks

    alone = {}
    for slot in prompts:
        run(model.session(max_batch=4), slot, alone)
    shared, together = model.session(max_batch=4), {}
    threads = [threading.Thread(target=run, args=(shared, slot, together)) for slot in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
