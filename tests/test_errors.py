"""Bad inputs raise the documented exception with a message naming the problem."""

import json
import os
import shutil
import struct

import numpy as np
import pytest

import based_core
from based_core.testing import make_random_model


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    return make_random_model(str(d), seed=2)


def load(d, **kw):
    return based_core.load(d, device="cpu", dtype="float32", **kw)


def rewrite_header(path, edit):
    """Rewrites the safetensors JSON header of `path` through edit(dict)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    edit(hdr)
    new = json.dumps(hdr).encode()
    new += b" " * (-len(new) % 8)
    open(path, "wb").write(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_truncated_file(model_dir):
    p = os.path.join(model_dir, "model.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) - 100])
    with pytest.raises(based_core.CheckpointError, match="truncated"):
        load(model_dir)
    open(p, "wb").write(data[:5])
    with pytest.raises(based_core.CheckpointError, match="truncated"):
        load(model_dir)


def test_corrupt_header(model_dir):
    p = os.path.join(model_dir, "model.safetensors")
    data = bytearray(open(p, "rb").read())
    data[8:12] = b"\x00\xff{["
    open(p, "wb").write(bytes(data))
    with pytest.raises(based_core.CheckpointError, match="corrupt header"):
        load(model_dir)
    open(p, "wb").write(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(based_core.CheckpointError, match="header length"):
        load(model_dir)


def test_offsets_and_sizes_are_checked(model_dir):
    p = os.path.join(model_dir, "model.safetensors")

    def bad_size(h):
        h["transformer.ln_f.weight"]["shape"] = [7]
    rewrite_header(p, bad_size)
    with pytest.raises(based_core.CheckpointError, match="transformer.ln_f.weight"):
        load(model_dir)


def test_missing_tensor(model_dir):
    p = os.path.join(model_dir, "model.safetensors")
    rewrite_header(p, lambda h: h.pop("transformer.layers.1.mixer.proj_k.weight"))
    with pytest.raises(based_core.CheckpointError, match="missing tensor 'transformer.layers.1.mixer.proj_k.weight'"):
        load(model_dir)


def test_misshapen_tensor(model_dir):
    from based_core.safetensors_io import load_file, save_file

    p = os.path.join(model_dir, "model.safetensors")
    t = {k: e.array.copy() for k, e in load_file(p, mmap=False).items()}
    t["transformer.layers.0.mlp.fc2.weight"] = t["transformer.layers.0.mlp.fc2.weight"][:, :-1].copy()
    save_file(t, p)
    with pytest.raises(based_core.CheckpointError, match=r"fc2.weight' has shape \[64, 255\], expected \[64, 256\]"):
        load(model_dir)


def test_unknown_mixer_and_bad_config(model_dir):
    cfg_path = os.path.join(model_dir, "config.json")
    cfg = json.load(open(cfg_path))
    bad = dict(cfg, alt_mixer=dict(cfg["alt_mixer"], _target_="based.models.mixers.mamba.Mamba"))
    json.dump(bad, open(cfg_path, "w"))
    with pytest.raises(based_core.CheckpointError, match="unknown mixer 'based.models.mixers.mamba.Mamba'"):
        load(model_dir)
    json.dump(dict(cfg, n_layer=2), open(cfg_path, "w"))
    with pytest.raises(based_core.CheckpointError, match="alt_mixer_layers"):
        load(model_dir)
    open(cfg_path, "w").write("{not json")
    with pytest.raises(based_core.CheckpointError, match="not valid JSON"):
        load(model_dir)
    os.remove(cfg_path)
    with pytest.raises(based_core.CheckpointError, match="no config.json"):
        load(model_dir)


def test_layer_plan_cross_checked_against_tensors(model_dir):
    cfg_path = os.path.join(model_dir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["alt_mixer_layers"], cfg["alt_mixer_2_layers"] = cfg["alt_mixer_2_layers"], cfg["alt_mixer_layers"]
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(based_core.CheckpointError, match="config.json makes it"):
        load(model_dir)


def test_missing_folder_and_files(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nope"))
    os.remove(os.path.join(model_dir, "model.safetensors"))
    with pytest.raises(based_core.CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load(model_dir)


def test_bad_arguments(model_dir):
    with pytest.raises(ValueError, match="dtype"):
        based_core.load(model_dir, device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="device"):
        based_core.load(model_dir, device="tpu", dtype="float32")
    m = load(model_dir)
    with pytest.raises(IndexError, match="token id 1000 .* vocab_size"):
        m.logits([[1, 2, 1000]])
    with pytest.raises(IndexError, match="token id -1"):
        m.generate([[1, -1]])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        m.generate([[1], []])
    with pytest.raises(TypeError, match="list of token-id lists"):
        m.generate([1, 2, 3])
    with pytest.raises(TypeError, match="integer token ids"):
        m.logits([[0.5, 1.0]])
    with pytest.raises(ValueError, match="temperature"):
        m.generate([[1]], temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        m.generate([[1]], temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate([[1]], max_new_tokens=-2)
    s = m.session(max_batch=2, max_context=8)
    with pytest.raises(ValueError, match="max_context=8"):
        s.prefill(0, list(range(9)))
    with pytest.raises(IndexError, match="slot 2 out of range"):
        s.prefill(2, [1])
    with pytest.raises(ValueError, match="appears twice"):
        s.decode([0, 0], [1, 2])
    # the failed calls left the model and session usable
    assert m.generate([[1, 2]], max_new_tokens=2) == m.generate([[1, 2]], max_new_tokens=2)
    s.prefill(0, [1, 2, 3])
    assert s.position(0) == 3


def test_out_of_memory_is_reported_and_recoverable(model_dir):
    m = load(model_dir)
    with pytest.raises(MemoryError, match="slots"):
        m.session(max_batch=1 << 20)
    assert len(m.generate([[1, 2, 3]], max_new_tokens=3)[0]) == 3


def test_ops_argument_checks():
    import torch

    q = torch.zeros(4, 2, 16)
    S = torch.zeros(2, 273, 64)
    z = torch.zeros(2, 273)
    v = torch.zeros(4, 2, 64)
    with pytest.raises(ValueError, match="state_s must have shape"):
        based_core.ops.la_prefill(q, q, v, torch.zeros(2, 272, 64), z)
    with pytest.raises(TypeError, match="k must be float32"):
        based_core.ops.la_prefill(q, q.double(), v, S, z)
    with pytest.raises(ValueError, match="C-contiguous"):
        based_core.ops.la_prefill(q, q, torch.zeros(4, 64, 2).transpose(1, 2), S, z)
    with pytest.raises(IndexError, match="slots holds 5"):
        based_core.ops.la_decode(q[:1], q[:1], v[:1], S[None], z[None], torch.tensor([5], dtype=torch.int32))
    # symmetric=True takes the 153-row symmetric state and refuses the full one, and the converse
    with pytest.raises(ValueError, match=r"state_s must have shape \[2, 153, 64\]"):
        based_core.ops.la_prefill(q, q, v, S, z, symmetric=True)
    with pytest.raises(ValueError, match=r"state_s must have shape \[2, 273, 64\]"):
        based_core.ops.la_prefill(q, q, v, torch.zeros(2, 153, 64), torch.zeros(2, 153), symmetric=False)
    with pytest.raises(ValueError, match=r"state_s must have shape \[\*, 2, 153, 64\]"):
        based_core.ops.la_decode(q[:1], q[:1], v[:1], S[None], z[None], torch.zeros(1, dtype=torch.int32),
                                 symmetric=True)
    Ss, zs = torch.zeros(1, 2, 153, 64), torch.zeros(1, 2, 153)
    with pytest.raises(ValueError, match=r"state_s must have shape \[\*, 2, 273, 64\]"):
        based_core.ops.la_decode(q[:1], q[:1], v[:1], Ss, zs, torch.zeros(1, dtype=torch.int32))
    based_core.ops.la_decode(q[:1], q[:1], v[:1], Ss, zs, torch.zeros(1, dtype=torch.int32), symmetric=True)
