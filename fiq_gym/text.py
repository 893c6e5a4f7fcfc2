"""Caption tokenizers: text -> fixed-length id arrays for observations.

The environments depend only on the :class:`CaptionTokenizer` protocol, so a template
shopper's word vocabulary and a learned shopper's Hugging Face tokenizer are interchangeable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["CaptionTokenizer", "WordTokenizer", "pad_token_ids", "split_words"]

# ASCII letters and digits make words; every other visible character is a token of its own
# ("ñandú" -> "ñ", "and", "ú"). Kept this simple on purpose: the learned shopper's Rust
# tokenizer must split text exactly the same way, and Unicode word classes differ between
# Python's re and Oniguruma (combining marks, other numerals).
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words; hyphenated words ("v-neck") stay whole, punctuation stands alone."""
    return _WORD.findall(text.lower())


def pad_token_ids(rows: Sequence[Sequence[int]], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id rows as a (B, max_length) int64 array padded with 0 (every tokenizer here puts
    ``<pad>`` at id 0), and (B,) int64 lengths; rows longer than ``max_length`` are cut."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    sizes = [len(row) for row in rows]
    lengths = np.minimum(np.array(sizes, dtype=np.int64), max_length)
    kept = rows if max(sizes, default=0) <= max_length else [row[:max_length] for row in rows]
    ids = np.zeros((len(rows), max_length), dtype=np.int64)
    # One scatter of every kept id, in row order (a boolean mask indexes row by row).
    ids[np.arange(max_length) < lengths[:, None]] = list(chain.from_iterable(kept))
    return ids, lengths


@runtime_checkable
class CaptionTokenizer(Protocol):
    """What an environment needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, max_length) int64 ids padded with ``pad_id``, and (B,) int64 lengths."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


class WordTokenizer:
    """A word-level vocabulary: ``<pad>`` = 0, ``<unk>`` = 1, then the words in given order.

    Words beyond ``max_length`` are cut (the length reports the kept count).
    """

    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, words: Iterable[str]) -> None:
        vocabulary = [self.PAD, self.UNK]
        seen = set(vocabulary)
        for w in words:
            w = w.lower()
            if w not in seen:
                seen.add(w)
                vocabulary.append(w)
        self._words = vocabulary
        self._ids = {w: i for i, w in enumerate(vocabulary)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """A vocabulary of every word in ``texts``, sorted for a stable id order."""
        words: set[str] = set()
        for t in texts:
            words.update(split_words(t))
        return cls(sorted(words))

    @property
    def vocab_size(self) -> int:
        return len(self._words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self._words)

    def encode(self, text: str) -> list[int]:
        unk = self.unk_id
        return [self._ids.get(w, unk) for w in split_words(text)]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        return pad_token_ids([self.encode(text) for text in texts], max_length)

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self._words[int(i)] for i in ids if int(i) != self.pad_id)

    def to_json(self) -> str:
        return json.dumps({"type": "word", "words": self._words[2:]})

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        data = json.loads(text)
        if data.get("type") != "word":
            raise ValueError(f"not a word tokenizer: type {data.get('type')!r}")
        return cls(data["words"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self._words == other._words

    def __hash__(self) -> int:
        return hash(tuple(self._words))
