"""Minimal, numpy-only reader and writer for the safetensors format.

Why our own: the Python side of based_core must work with nothing but numpy
installed (torch is optional), and the tests need to write checkpoints in the
exact on-disk layout the C++ loader reads.

File layout (https://github.com/huggingface/safetensors, "Format" section):

    [8 bytes]  N, unsigned little-endian 64-bit: length of the JSON header
    [N bytes]  UTF-8 JSON object:
                 {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
                  ..., "__metadata__": {"str": "str"}}   (metadata optional)
               padded with trailing spaces so that 8 + N is a multiple of 8
    [rest]     the byte buffer; data_offsets are relative to its start, every
               tensor is C-contiguous little-endian, tensors do not overlap.

Public API
----------
``load_file(path) -> dict[str, TensorEntry]``
    ``TensorEntry(dtype: str, shape: tuple[int, ...], array: np.ndarray)``.
    ``array`` has the given shape and the storage dtype: BF16 tensors come back
    as ``np.uint16`` bit patterns (numpy has no bfloat16); every other dtype as
    the matching numpy dtype.  Arrays are memory-mapped read-only (``mmap=True``)
    or read into memory (``mmap=False``).
``load_metadata(path) -> dict[str, str] | None``
``read_header(path) -> (header_dict, data_start)``  raw header, for tools.
``save_file(tensors, path, metadata=None)``
    ``tensors`` maps names to: numpy arrays (dtype inferred), ``BF16(bits)``
    (uint16 bit patterns marked as bfloat16), ``TensorEntry`` (dtype explicit),
    or torch tensors (imported lazily; bf16 is stored bit-exactly).
``f32_to_bf16_bits(a) -> np.uint16`` (round to nearest even; NaN stays NaN)
``bf16_bits_to_f32(bits) -> np.float32`` (exact)
``entry_to_float(entry, dtype=np.float32) -> np.ndarray``  decode any float entry.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

__all__ = [
    "TensorEntry",
    "BF16",
    "load_file",
    "load_metadata",
    "read_header",
    "save_file",
    "f32_to_bf16_bits",
    "bf16_bits_to_f32",
    "entry_to_float",
    "DTYPES",
]

# safetensors dtype string -> numpy storage dtype (always little-endian).
DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bit patterns; see f32_to_bf16_bits
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

# numpy dtype (native kind/size) -> safetensors string, for inference in save.
# uint16 is deliberately absent: a bare uint16 array is ambiguous, wrap it in BF16.
_NP_TO_ST = {
    np.dtype("f8"): "F64",
    np.dtype("f4"): "F32",
    np.dtype("f2"): "F16",
    np.dtype("i8"): "I64",
    np.dtype("i4"): "I32",
    np.dtype("i2"): "I16",
    np.dtype("i1"): "I8",
    np.dtype("u1"): "U8",
    np.dtype("?"): "BOOL",
}

_TORCH_TO_ST = {
    "torch.float64": "F64",
    "torch.float32": "F32",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


class TensorEntry(NamedTuple):
    """One tensor of a safetensors file: its format dtype string, shape and data."""

    dtype: str
    shape: Tuple[int, ...]
    array: np.ndarray


class BF16:
    """Marks a uint16 array as bfloat16 bit patterns for ``save_file``."""

    def __init__(self, bits: np.ndarray):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise TypeError(f"BF16 expects uint16 bit patterns, got {bits.dtype}")
        self.bits = bits

    @classmethod
    def from_float(cls, a: np.ndarray) -> "BF16":
        """Round a float array to bfloat16 (nearest even) and wrap the bits."""
        return cls(f32_to_bf16_bits(a))


# ----------------------------------------------------------------------------
# bfloat16 helpers
# ----------------------------------------------------------------------------

def f32_to_bf16_bits(a: Any) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even.

    bf16 is the top half of an IEEE float32, so rounding is an integer add on the
    float32 bits: add 0x7FFF plus the lowest kept bit, then drop 16 bits.  NaNs
    are handled apart (the add could carry a NaN payload into infinity); they
    become a quiet NaN with the sign kept.
    """
    f = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    u = f.view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    rounded = ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        sign = ((u >> np.uint64(16)) & np.uint64(0x8000)).astype(np.uint16)
        rounded = np.where(nan, sign | np.uint16(0x7FC0), rounded).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(bits: Any) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exact (bits shifted up by 16)."""
    b = np.ascontiguousarray(np.asarray(bits, dtype=np.uint16))
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def entry_to_float(entry: TensorEntry, dtype: Any = np.float32) -> np.ndarray:
    """Decode a loaded entry to a float numpy array (bf16 bits are expanded)."""
    if entry.dtype == "BF16":
        return bf16_bits_to_f32(entry.array).astype(dtype, copy=False)
    return np.asarray(entry.array).astype(dtype)


# ----------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------

def read_header(path: str) -> Tuple[Dict[str, Any], int]:
    """Return (parsed JSON header, byte offset where the data buffer starts)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: file too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(fh.fileno()).st_size
        if n > size - 8 or n > 100_000_000:
            raise ValueError(f"{path}: header length {n} is larger than the file")
        text = fh.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object")
    return header, 8 + n


def load_metadata(path: str) -> Optional[Dict[str, str]]:
    """The optional ``__metadata__`` dict of a file, or None."""
    header, _ = read_header(path)
    return header.get("__metadata__")


def load_file(path: str, mmap: bool = True) -> Dict[str, TensorEntry]:
    """Read every tensor of a safetensors file (see the module docstring).

    Validates dtype names, that each tensor's byte range has exactly
    prod(shape) * itemsize bytes, and that it lies inside the file.
    """
    header, start = read_header(path)
    size = os.path.getsize(path)
    buf_len = size - start
    base = None
    if mmap and buf_len > 0:
        base = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(buf_len,))
    elif buf_len > 0:
        with open(path, "rb") as fh:
            fh.seek(start)
            base = np.frombuffer(fh.read(), dtype=np.uint8)
    out: Dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dt_name = info["dtype"]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed header entry for '{name}'") from None
        if dt_name not in DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dt_name}")
        dt = DTYPES[dt_name]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * dt.itemsize or begin < 0 or end > buf_len:
            raise ValueError(
                f"{path}: tensor '{name}' byte range [{begin}, {end}) does not hold "
                f"shape {list(shape)} of {dt_name} inside a {buf_len}-byte buffer")
        if count == 0:
            arr = np.zeros(shape, dtype=dt)
        else:
            arr = base[begin:end].view(dt).reshape(shape)
            if not mmap:
                arr = arr.copy()
        out[name] = TensorEntry(dt_name, shape, arr)
    return out


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------

def _to_entry(name: str, value: Any) -> Tuple[str, np.ndarray]:
    """Normalise one save_file value to (dtype string, contiguous LE array)."""
    if isinstance(value, TensorEntry):
        dt_name, arr = value.dtype, np.asarray(value.array)
        if dt_name not in DTYPES:
            raise ValueError(f"tensor '{name}': unsupported dtype {dt_name}")
        arr = arr.astype(DTYPES[dt_name], copy=False).reshape(value.shape)
        return dt_name, arr
    if isinstance(value, BF16):
        return "BF16", value.bits.astype("<u2", copy=False)
    mod = type(value).__module__ or ""
    if mod.startswith("torch"):
        import torch  # lazy: the package must import without torch

        t = value.detach().to("cpu").contiguous()
        dt_name = _TORCH_TO_ST.get(str(t.dtype))
        if dt_name is None:
            raise ValueError(f"tensor '{name}': unsupported torch dtype {t.dtype}")
        if t.dtype == torch.bfloat16:
            arr = t.view(torch.int16).numpy().view(np.uint16)
        else:
            arr = t.numpy()
        return dt_name, arr.astype(DTYPES[dt_name], copy=False)
    arr = np.asarray(value)
    # kind + itemsize ignores byte order; astype below makes it little-endian.
    dt_name = _NP_TO_ST.get(np.dtype(f"{arr.dtype.kind}{arr.dtype.itemsize}"), None) \
        if arr.dtype.kind in "fiub" else None
    if dt_name is None:
        hint = " (wrap bf16 bit patterns in BF16(...))" if arr.dtype == np.uint16 else ""
        raise ValueError(f"tensor '{name}': unsupported numpy dtype {arr.dtype}{hint}")
    return dt_name, arr.astype(DTYPES[dt_name], copy=False)


def save_file(tensors: Mapping[str, Any], path: str,
              metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``tensors`` to ``path`` in safetensors format.

    Tensors are laid out in the mapping's order with no gaps; the header is
    padded with spaces to an 8-byte boundary so every tensor starts 8-aligned
    relative to the buffer start (when sizes are multiples of 8) as the
    reference implementation does.
    """
    entries = []
    header: Dict[str, Any] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, value in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved")
        dt_name, arr = _to_entry(name, value)
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt_name, "shape": [int(s) for s in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        entries.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for data in entries:
            fh.write(data)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind
