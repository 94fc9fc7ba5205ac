"""bench/bounds.py's host-side logic (the GPU measurement itself runs on the GPU machine):
kernel classification, the modelled bytes and FLOPs against PERFORMANCE.md's figures, and the
table that joins them."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
bounds = pytest.importorskip("bounds")  # needs torch (bench/common.py), which CI installs
models = pytest.importorskip("models")

NS = "void based_core::cuda::(anonymous namespace)::"


@pytest.mark.parametrize("name,cls", [
    (NS + "la_decode_kernel<__nv_bfloat16, 153>(based_core::cuda::LaDecodeArgs)", "LA decode"),
    (NS + "swa_decode_kernel<__nv_bfloat16, 8>(based_core::cuda::SwaDecodeArgs)", "SWA decode"),
    (NS + "la_wg_kernel<__nv_bfloat16, false, 2>(based_core::cuda::ChunkArgs)", "LA prefill"),
    (NS + "swa_prefill_tc_kernel<__half, 64>(Args)", "SWA prefill"),
    (NS + "gemv_kernel<__nv_bfloat16, float, 1>(based_core::ops::GemmParams)", "GEMV (1 row)"),
    (NS + "argmax_split_kernel(float const*, long, long, int)", "argmax / sampling"),
    (NS + "rmsnorm_kernel<__nv_bfloat16>(RmsArgs)", "rmsnorm"),
    (NS + "rmsnorm_reg_kernel<__nv_bfloat16, 4, 2>(const float *)", "rmsnorm"),
    ("nvjet_tst_64x8_64x16_2x1_v_bz_splitK_TNT", "cuBLASLt GEMM"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float>(...)", "split-K reduce"),
    ("void at::native::vectorized_elementwise_kernel<4, ...>", "other"),
])
def test_kernel_names_fall_into_their_class(name, cls):
    assert bounds.classify(name) == cls


def test_feature_rows_and_window_keys():
    assert bounds.la_state_rows(16, symmetric=False) == 273
    assert bounds.la_state_rows(16, symmetric=True) == 153
    assert [bounds.swa_keys(p, 128) for p in (0, 1, 127, 128, 129, 5000)] == [1, 2, 128, 129, 129, 129]


@pytest.mark.parametrize("name", ["based-360m", "based-1b"])
def test_modelled_decode_bytes_match_performance_md(name):
    """PERFORMANCE.md 1b's bytes per decode step: weights, and per sequence the 273-row LA state
    read and written plus the SWA window (plus conv tails, < 2.5% of it)."""
    cfg = models.config(name)
    weights, state = models.DECODE_BYTES[name]
    assert bounds.weight_bytes(cfg) == pytest.approx(weights, rel=0.005)
    w = bounds.decode_work(cfg, 1, [4096], symmetric=False)
    assert w["LA decode"]["bytes"] + w["SWA decode"]["bytes"] == pytest.approx(state, rel=0.025)
    # The symmetric state moves 153 / 273 of the bytes; B scales every per-sequence class.
    sym = bounds.decode_work(cfg, 8, [4096], symmetric=True)
    assert sym["LA decode"]["bytes"] == pytest.approx(8 * w["LA decode"]["bytes"] * 153 / 273)
    assert sym["weights"]["bytes"] == w["weights"]["bytes"]


def test_prefill_gemm_flops_are_two_per_parameter():
    cfg = models.config("based-1b")
    emb = 50264 * 1792
    # every layer weight but norms, biases and conv taps (< 1%) is a GEMM weight
    assert bounds.gemm_params(cfg) == pytest.approx(models.n_params(cfg) - emb, rel=0.01)
    work = bounds.prefill_work(cfg, [4096, 4096])
    assert work["weights"]["flops"] == pytest.approx(2 * 8192 * bounds.gemm_params(cfg) + 2 * 2 * emb)
    # causal window clipped at the start: fewer band FLOPs than 129 keys for every token
    full = 7 * 8192 * 16 * 4 * 112 * 129
    assert 0.97 * full < work["SWA prefill"]["flops"] < full


def test_table_joins_classes_with_their_work():
    per = {
        NS + "gemv_kernel<bf16, float, 1>": (800.0, 40.0),
        "nvjet_tst_64x8": (1200.0, 60.0),
        "void cublasLt::splitKreduce_kernel<>": (100.0, 20.0),
        NS + "la_decode_kernel<bf16>": (300.0, 20.0),
        NS + "rmsnorm_kernel<bf16>": (150.0, 60.0),
        "mystery": (50.0, 20.0),
    }
    # work is per step (div = 20 steps): 12 MB -> 4 us at 3.0 TB/s, 30 MB -> 10 us
    work = {"weights": {"bytes": 12e6, "classes": list(bounds.GEMM_CLASSES), "note": "w"},
            "LA decode": {"bytes": 30e6, "note": "s"},
            "SWA decode": {"bytes": 1.0, "note": "absent"},
            "rmsnorm": {"bytes": 0.0, "note": "n"}}
    t = bounds.table(bounds.by_class(per), work, div=20.0, wall_us=150.0)
    rows = {r["name"]: r for r in t["rows"]}
    assert set(rows) == {"weights", "LA decode", "rmsnorm", "other"}  # no SWA kernel ran: no row
    assert rows["weights"]["us"] == pytest.approx((800 + 1200 + 100) / 20)
    assert rows["weights"]["launches"] == pytest.approx(6.0)
    assert rows["weights"]["limit_us"] == pytest.approx(4.0)  # modelled bytes at 3.0 TB/s
    assert rows["LA decode"]["limit_us"] == pytest.approx(10.0)
    assert rows["other"]["limit_us"] == 0.0 and rows["other"]["us"] == pytest.approx(2.5)
    assert [r["name"] for r in t["rows"]] == ["weights", "LA decode", "rmsnorm", "other"]  # largest first
    assert t["kernel_us"] == pytest.approx(130.0)
    assert t["between_us"] == pytest.approx(20.0)
    md = bounds.markdown("title", t)
    assert "| weights | 105.0 | 6.0 |" in md and "| between kernels | 20.0 |" in md
    assert md.count("\n| ") == 1 + len(t["rows"]) + 1  # header, rows, between kernels


def test_script_runs_end_to_end_on_the_cpu(tmp_path, capsys):
    """The measuring path (session, generate / prefill_batch, profiler, tables, files) at toy
    size; on the CPU there are no kernels, so all wall time is 'between kernels'."""
    md, js = tmp_path / "b.md", tmp_path / "b.json"
    bounds.main(["decode", "--model", "tiny", "--device", "cpu", "--batch", "2", "--prompt", "8", "--steps", "4",
                 "--reps", "1", "--md", str(md), "--json", str(js)])
    bounds.main(["prefill", "--model", "tiny", "--device", "cpu", "--batch", "2", "--length", "40", "--md", str(md)])
    text = md.read_text()
    assert "### tiny decode step, B=2, prompt 8, 3 steps" in text and "### tiny prefill, B=2 x L=40" in text
    import json
    rec = json.loads(js.read_text())["tables"][0]
    assert rec["batch"] == 2 and rec["wall_us"] > 0 and rec["between_us"] == rec["wall_us"]
    assert "| between kernels |" in capsys.readouterr().out
