"""Tokenizers through the `tokenizers` library (GPT-2 BPE for BASED)."""

from __future__ import annotations

import os


def load_tokenizer(path: str):
    """Loads a tokenizer.json (a file, or a folder that holds one).

    The released BASED folders ship no tokenizer: they use GPT-2's
    (50257 tokens, <|endoftext|> = 50256); pass its tokenizer.json.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer: no tokenizer.json at {path!r}")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError("tokenizer: the `tokenizers` package is needed for text in/out (pip install tokenizers)") from None
    return _Tokenizer(Tokenizer.from_file(path))


class _Tokenizer:
    """encode(str) -> list[int], decode(list[int]) -> str; adds no BOS (like the authors)."""

    def __init__(self, tok):
        self._tok = tok

    def encode(self, text: str) -> list:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()
