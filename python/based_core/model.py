"""Loading a model folder and running it: the public Python contract.

Python only orchestrates here: finding files, reading a pytorch_model.bin
through torch, the tokenizer, and argument conversion. Every forward pass,
state update and sampling step runs in the native core.
"""

from __future__ import annotations

import array
import os
import threading
from typing import Iterable, Optional, Sequence

import numpy as np

from . import _core
from ._core import CheckpointError
from .tokenizer import load_tokenizer

_DTYPES = ("bfloat16", "float16", "float32")


def _default_device() -> str:
    return "cuda" if _core.cuda_available() else "cpu"


def _progress_bar(enabled: bool, desc: str):
    """A tqdm byte counter as a (done, total) callback, or None."""
    if not enabled:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but never fail a load over a progress bar
        return None, None
    state = {"bar": None, "last": 0}

    def update(done: int, total: int) -> None:
        if state["bar"] is None:
            # Small models load in a blink: no bar under 64 MiB.
            if total < (64 << 20):
                state["bar"] = False
            else:
                state["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)
        if state["bar"]:
            state["bar"].update(done - state["last"])
            state["last"] = done

    def close() -> None:
        if state["bar"]:
            state["bar"].close()

    return update, close


def _read_bin(path: str) -> dict:
    """Reads a torch pickle checkpoint as CPU tensors (safe loader, memory-mapped)."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs torch (pip install torch), or convert the folder once on a "
            f"machine with torch: `based-core convert {os.path.dirname(path)}`"
        ) from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated or corrupt pickle
        raise CheckpointError(f"{path}: cannot read the torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):  # a Lightning checkpoint
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().contiguous()
    return out


def load(
    path: str,
    device: Optional[str] = None,
    dtype: str = "bfloat16",
    tokenizer: Optional[str] = None,
    progress: bool = True,
) -> "Model":
    """Loads a BASED model folder in the authors' released layout.

    path: a folder with config.json and model.safetensors (memory-mapped) or
        pytorch_model.bin (read through torch).
    device: "cuda", "cuda:N" or "cpu"; default cuda when available.
    dtype: "bfloat16" (default), "float16" or "float32". The CPU backend
        computes in fp32 from weights rounded to this dtype.
    tokenizer: a tokenizer.json path; by default tokenizer.json in the folder
        when present (the released folders have none: pass the GPT-2 one).
    progress: show a progress bar for large loads.
    """
    if device is None:
        device = _default_device()
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected one of {_DTYPES}, got {dtype!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"path: no such folder: {path!r}")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{path}: no config.json in this folder")
    update, close = _progress_bar(progress, f"loading {os.path.basename(os.path.abspath(path))}")
    try:
        if os.path.isfile(os.path.join(path, "model.safetensors")):
            native = _core.NativeModel.load(path, device=device, dtype=dtype, progress=update)
        elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
            with open(cfg_path, encoding="utf-8") as f:
                config = _core.ModelConfig.from_json(f.read())
            weights = _read_bin(os.path.join(path, "pytorch_model.bin"))
            native = _core.NativeModel.from_weights(config, weights, device=device, dtype=dtype, progress=update)
        else:
            raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
    finally:
        if close:
            close()
    tok = None
    tok_path = tokenizer or (os.path.join(path, "tokenizer.json") if os.path.isfile(os.path.join(path, "tokenizer.json")) else None)
    if tok_path:
        tok = load_tokenizer(tok_path)
    return Model(native, path=path, tokenizer=tok)


def _token_rows(tokens, name: str = "tokens") -> np.ndarray:
    """Converts token ids (list, numpy, torch, ...) to an int64 numpy array."""
    if isinstance(tokens, list) and tokens and type(tokens[0]) in (int, np.int64, np.int32):
        # A flat list (a tokenizer's output): array.array converts it at C speed, about twice as
        # fast as np.asarray (~1% of a long prefill), and refuses floats and strings; anything it
        # refuses takes the general path below, whose error names the problem.
        try:
            return np.frombuffer(array.array("q", tokens), dtype=np.int64)
        except (TypeError, OverflowError):
            pass
    if hasattr(tokens, "__dlpack__") and not isinstance(tokens, np.ndarray):
        from .tensors import to_numpy

        tokens = to_numpy(tokens)
    arr = np.asarray(tokens)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name}: expected integer token ids, got an array of {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


_I32 = 2**31  # the native side holds token ids, slots and positions in int32
# Model.logits packs up to this many sequences into each prefill pass (one state slot
# each: ~15 MB per slot for based-1b).
_LOGITS_SLOTS = 16


def _int_arg(name: str, v) -> int:
    """An integer argument. Floats (and bools) are a TypeError rather than
    silently truncated."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__} {v!r}")
    return int(v)


def _token_id(name: str, v) -> int:
    """A token id; ids that do not even fit in int32 are an IndexError here
    (the native check names the vocabulary range for the others)."""
    t = _int_arg(name, v)
    if not -_I32 <= t < _I32:
        raise IndexError(f"{name}: token id {t} is out of range (ids are below the vocabulary size)")
    return t


def _slot_id(name: str, v) -> int:
    s = _int_arg(name, v)
    if not -_I32 <= s < _I32:
        raise IndexError(f"{name}: slot {s} out of range")
    return s


def _prompt_items(prompts):
    """(i, prompt) for each prompt of a list of token-id lists, after the checks that
    generate and prefill_batch share (the token ids are the caller's to check)."""
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts: expected a list of token-id lists, got a string (use generate_text for text)")
    if prompts is None or not hasattr(prompts, "__iter__"):
        raise TypeError(f"prompts: expected a list of token-id lists, got {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if isinstance(p, (int, np.integer)):
            raise TypeError("prompts: expected a list of token-id lists; wrap a single prompt as [prompt]")
        if isinstance(p, (str, bytes)) or not hasattr(p, "__iter__"):
            raise TypeError(f"prompts[{i}]: expected a list of token ids, got {type(p).__name__}")
        yield i, p


def _prompt_lists(prompts) -> list:
    out = []
    for i, p in _prompt_items(prompts):
        # Fast path (long prompts: ~0.3 us per token in Python): an integer array within int32.
        # Anything else goes through the per-token checks, whose errors name the token.
        a = np.asarray(p) if isinstance(p, (list, tuple, np.ndarray)) else None
        if (a is not None and a.ndim == 1 and a.dtype.kind in "iu" and  # (numpy reads [1, True] as ints)
                not (isinstance(p, (list, tuple)) and {bool, np.bool_} & set(map(type, p))) and
                (a.size == 0 or (int(a.min()) >= -_I32 and int(a.max()) < _I32))):
            out.append(a.tolist())
        else:
            out.append([_token_id(f"prompts[{i}][{j}]", t) for j, t in enumerate(p)])
    return out


class _Serialized:
    """Calls into a native session one thread at a time: a Session shared by
    threads then behaves as if its calls were made in some sequential order,
    instead of failing in confusing ways."""

    def __init__(self, native):
        self._native = native
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._native, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return call


class Session:
    """Step-wise control over state slots (see based_core::Session in C++).

    Each slot holds one sequence's recurrent state (constant size). Use one
    Session from one thread at a time.
    """

    def __init__(self, model: "Model", max_batch: int = 1, prefill_chunk: int = 0, max_context: int = 0,
                 symmetric_state: bool = True):
        self.model = model
        max_batch = _int_arg("max_batch", max_batch)
        if not 1 <= max_batch <= 2**20:  # the native check, before int32 conversion could fail
            raise ValueError(f"max_batch: expected 1..1048576, got {max_batch}")
        prefill_chunk, max_context = _int_arg("prefill_chunk", prefill_chunk), _int_arg("max_context", max_context)
        if not isinstance(symmetric_state, bool):
            raise TypeError(f"symmetric_state: expected a bool, got {type(symmetric_state).__name__}")
        self._s = _Serialized(_core.NativeSession(model._native, max_slots=max_batch, prefill_chunk=prefill_chunk,
                                                  max_context=max_context, symmetric_state=symmetric_state))

    @property
    def max_batch(self) -> int:
        return self._s.max_slots

    @property
    def state_bytes_per_slot(self) -> int:
        return self._s.state_bytes_per_slot

    @property
    def symmetric_state(self) -> bool:
        """True when the linear-attention state uses the exact symmetric layout (153 rows for
        feature dim 16 instead of the authors' 273; same outputs, 44% less state)."""
        return self._s.symmetric_state

    def prefill(self, slot: int, tokens, logits: str = "last"):
        """Appends tokens to the sequence in `slot`; returns fp32 logits [1, V]
        ('last'), [n, V] ('all') or None ('none')."""
        return self._s.prefill(_slot_id("slot", slot), _token_rows(tokens), logits)

    def prefill_batch(self, slots: Sequence[int], prompts, logits: str = "last"):
        """prefill() of several prompts at once: prompts[i] is appended to slots[i]
        (distinct slots). The prompts share forward passes of up to prefill_chunk
        rows (one pass over the weights for all of them) with the result of one
        prefill() per slot. Returns fp32 logits [len(prompts), V] ('last', row i
        for prompts[i]), [sum of lengths, V] ('all', the prompts' rows in order)
        or None ('none')."""
        if isinstance(slots, (int, np.integer)):
            raise TypeError("slots: expected a list of slot ids (use prefill() for one slot)")
        slots = [_slot_id(f"slots[{i}]", s) for i, s in enumerate(slots)]
        # numpy arrays: the native side reads them without a Python int per token
        prompts = [_token_rows(p, f"prompts[{i}]") for i, p in _prompt_items(prompts)]
        if len(slots) != len(prompts):
            raise ValueError(f"prefill_batch: {len(slots)} slots but {len(prompts)} prompts")
        return self._s.prefill_batch(slots, prompts, logits)

    def decode(self, slots: Sequence[int], tokens: Sequence[int]):
        """Appends one token to each slot; returns fp32 logits [len(slots), V]."""
        return self._s.decode([_slot_id(f"slots[{i}]", s) for i, s in enumerate(slots)],
                              [_token_id(f"tokens[{i}]", t) for i, t in enumerate(tokens)])

    def position(self, slot: int) -> int:
        return self._s.position(_slot_id("slot", slot))

    def reset(self, slot: Optional[int] = None) -> None:
        """Empties one slot, or all of them."""
        if slot is None:
            self._s.reset_all()
        else:
            self._s.reset(_slot_id("slot", slot))

    def copy_slot(self, src: int, dst: int) -> None:
        self._s.copy_slot(_slot_id("src", src), _slot_id("dst", dst))

    def save_slot(self, slot: int) -> bytes:
        return self._s.save_slot(_slot_id("slot", slot))

    def load_slot(self, slot: int, data: bytes) -> None:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise TypeError(f"data: expected the bytes returned by save_slot, got {type(data).__name__}")
        self._s.load_slot(_slot_id("slot", slot), data)

    def generate(self, prompts, max_new_tokens: int = 16, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Optional[int] = None, stop_tokens: Iterable[int] = (), on_token=None):
        """Same as Model.generate, in this session's slots 0..len(prompts)-1."""
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if temperature > 0 else 0
        max_new_tokens = _int_arg("max_new_tokens", max_new_tokens)
        if max_new_tokens >= _I32:  # positions are int32: such a call could only fail after running for days
            raise ValueError(f"max_new_tokens: expected at most {_I32 - 1} (the position limit), got {max_new_tokens}")
        top_k = _int_arg("top_k", top_k)
        if top_k < 0:
            raise ValueError(f"top_k: expected >= 0 (0 = no limit), got {top_k}")
        stops = [_token_id(f"stop_tokens[{i}]", t) for i, t in enumerate(stop_tokens)]
        return self._s.generate(_prompt_lists(prompts), max_new_tokens, float(temperature), min(top_k, _I32 - 1),
                                float(top_p), _int_arg("seed", seed) & (2**64 - 1), stops, on_token)


class Model:
    """A loaded BASED model. Thread-safe: concurrent calls get separate sessions."""

    def __init__(self, native, path: Optional[str] = None, tokenizer=None):
        self._native = native
        self.path = path
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._cached: Optional[Session] = None

    @property
    def config(self):
        return self._native.config

    @property
    def device(self) -> str:
        return self._native.device

    @property
    def dtype(self) -> str:
        return self._native.dtype

    @property
    def vocab_size(self) -> int:
        return self._native.config.vocab_size

    @property
    def weight_bytes(self) -> int:
        return self._native.weight_bytes

    def __repr__(self) -> str:
        return f"based_core.Model({self.path!r}, device={self.device!r}, dtype={self.dtype!r}: {self.config.summary()})"

    def session(self, max_batch: int = 1, prefill_chunk: int = 0, max_context: int = 0,
                symmetric_state: bool = True) -> Session:
        """A new Session with `max_batch` state slots. symmetric_state=False keeps the
        linear-attention state in the authors' 273-row TaylorExp layout instead of the exact
        153-row symmetric one (same outputs up to fp32 rounding; more memory and bandwidth)."""
        return Session(self, max_batch=max_batch, prefill_chunk=prefill_chunk, max_context=max_context,
                       symmetric_state=symmetric_state)

    def _with_session(self, slots: int, fn):
        # Reuse one cached session when free; concurrent callers get their own.
        if self._lock.acquire(blocking=False):
            try:
                if self._cached is None or self._cached.max_batch < slots:
                    self._cached = None  # free the old state before allocating more
                    self._cached = self.session(max_batch=slots)
                return fn(self._cached)
            finally:
                self._lock.release()
        return fn(self.session(max_batch=slots))

    def logits(self, tokens):
        """Logits of every position: tokens [B, L] -> fp32 tensor [B, L, vocab_padded];
        tokens [L] -> [L, vocab_padded]. Each row is run from an empty state (up to
        16 rows share each prefill pass, in a session of that many slots)."""
        arr = _token_rows(tokens)
        if arr.ndim not in (1, 2):
            raise ValueError(f"tokens: expected a [L] or [B, L] array, got {arr.ndim} dimensions")
        if arr.size == 0:
            raise ValueError("tokens: empty (a sequence needs at least one token)")
        rows = 1 if arr.ndim == 1 else arr.shape[0]
        return self._with_session(min(rows, _LOGITS_SLOTS), lambda s: s._s.logits(arr))

    def generate(self, prompts, max_new_tokens: int = 16, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Optional[int] = None, stop_tokens: Iterable[int] = (), on_token=None):
        """Generates new tokens for each prompt (a list of token-id lists, ragged).

        Greedy by default; temperature > 0 samples (top_k, top_p, seeded per
        sequence so a prompt gives the same tokens alone or batched). A sequence
        stops after a token in stop_tokens (which is kept) or max_new_tokens.
        on_token(sequence_index, token) is called for each new token as it is
        picked; returning False stops that sequence. Greedy generation without
        stop_tokens or on_token queues every decode step on the device without
        waiting for the host in between (the fastest form for fixed lengths).
        Returns a list of lists of the new tokens.
        """
        plist = _prompt_lists(prompts)
        if not plist:
            return []
        return self._with_session(
            len(plist),
            lambda s: s.generate(plist, max_new_tokens, temperature, top_k, top_p, seed, stop_tokens, on_token),
        )

    def generate_text(self, prompts, max_new_tokens: int = 16, **kwargs):
        """Text in, text out through the model's tokenizer (generate's options apply)."""
        if self.tokenizer is None:
            raise ValueError("generate_text: this model has no tokenizer (pass tokenizer= to based_core.load)")
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        ids = [self.tokenizer.encode(t) for t in texts]
        outs = self.generate(ids, max_new_tokens=max_new_tokens, **kwargs)
        dec = [self.tokenizer.decode(o) for o in outs]
        return dec[0] if single else dec
