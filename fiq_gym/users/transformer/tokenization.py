"""The relative captioner's word-level tokenizer, and its adapter to the environments.

The tokenizer is built with the ``tokenizers`` library and wrapped as a
:class:`transformers.PreTrainedTokenizerFast`, so it saves beside the model
(``tokenizer.json``) and reloads with ``from_pretrained``. It is word level because the
captions are: a template shopper's vocabulary is a few hundred words, and a word vocabulary
keeps every attribute value ("v-neck", "long-sleeved") one token, which the model can copy
from the side information rather than spell.

Pre-tokenization reproduces :func:`fiq_gym.text.split_words` exactly (lower-case; words of
letters and digits, hyphenated or with an apostrophe, stay whole; every other non-space
character is a token of its own), so the ids an environment puts in an observation are the
words the model was trained on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fiq_gym.text import pad_token_ids, split_words

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "CaptionerTokenizer",
    "build_caption_tokenizer",
    "detokenize",
]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
#: Special tokens, in id order: pad = 0, bos = 1, eos = 2, unk = 3.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

# split_words' pattern: "[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\s a-z0-9]". Whitespace is removed
# first with the class Python's `\s` uses (the Rust side's `\s` leaves out \x1c-\x1f).
_WHITESPACE = r"[\s\x1c-\x1f]+"
_WORD = r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\s\x1c-\x1fa-z0-9]"
_NO_SPACE_BEFORE = frozenset(",.;:!?)")


def detokenize(words: Iterable[str]) -> str:
    """Words back to a caption: spaces between words, none before punctuation
    ("is red, has long sleeves"). :func:`~fiq_gym.text.split_words` of the result gives the
    words back."""
    out: list[str] = []
    for w in words:
        if out and w in _NO_SPACE_BEFORE:
            out[-1] += w
        else:
            out.append(w)
    return " ".join(out)


def build_caption_tokenizer(
    texts: Iterable[str],
    extra_words: Iterable[str] = (),
    *,
    min_frequency: int = 1,
    max_size: int | None = None,
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of ``texts`` (plus ``extra_words``).

    Ids: the :data:`SPECIAL_TOKENS` first, then words by descending frequency in ``texts``
    (ties alphabetical), then any ``extra_words`` not seen, alphabetically, so the same inputs
    always give the same ids.

    Args:
        texts: training captions.
        extra_words: words to include even if rare or absent, e.g. a template shopper's
            ``caption_words()`` so every attribute value has a token.
        min_frequency: words seen fewer times (and not in ``extra_words``) map to ``<unk>``;
            useful for human captions with typos.
        max_size: cap on the vocabulary size including special tokens (extra words always stay).
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = Counter(w for t in texts for w in split_words(t))
    extra = sorted({w for e in extra_words for w in split_words(e)} - set(SPECIAL_TOKENS))
    ranked = [w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_frequency]
    ranked = [w for w in ranked if w not in SPECIAL_TOKENS]
    if max_size is not None:
        room = max(max_size - len(SPECIAL_TOKENS) - len(set(extra) - set(ranked)), 0)
        kept = set(ranked[:room])
        ranked = [w for w in ranked if w in kept or w in extra]
    words = ranked + [w for w in extra if w not in set(ranked)]
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *words))}

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WHITESPACE), behavior="removed"),
            pre_tokenizers.Split(Regex(_WORD), behavior="isolated"),
        ]
    )
    # Sequences for the decoder end with <eos>; the decoder's <bos> is added by the model.
    core.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=128,
        padding_side="right",
    )


class CaptionerTokenizer:
    """A :class:`~fiq_gym.text.CaptionTokenizer` over a captioner's HF tokenizer, for
    environments: observation ids are word ids without special tokens, padded with
    ``<pad>`` = 0.

    Also the fast id -> text path of :class:`~fiq_gym.users.transformer.TransformerUser`: a
    Python word table is quicker than a round trip through the HF tokenizer for the short
    captions a vector env decodes every step.
    """

    def __init__(self, hf_tokenizer: PreTrainedTokenizerFast) -> None:
        self.hf = hf_tokenizer
        vocab = hf_tokenizer.get_vocab()
        words = [""] * len(vocab)
        for w, i in vocab.items():
            words[i] = w
        self._words = words
        self._ids = vocab
        self._special = frozenset(vocab[t] for t in SPECIAL_TOKENS if t in vocab)
        self.eos_id = vocab[EOS]
        self.bos_id = vocab[BOS]
        self.unk_id = vocab[UNK]
        if vocab.get(PAD) != 0:
            raise ValueError(f"the captioner tokenizer must have {PAD} at id 0, got {vocab.get(PAD)}")
        self._is_word = np.ones(len(words), dtype=bool)
        self._is_word[list(self._special)] = False
        self._words_round_trip: bool | None = None

    @property
    def vocab_size(self) -> int:
        return len(self._words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self._words)

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text``, no special tokens (``<unk>`` for unknown words)."""
        unk = self.unk_id
        return [self._ids.get(w, unk) for w in split_words(text)]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, max_length) int64 ids padded with 0 and (B,) lengths; longer captions are cut."""
        if not texts:  # the Rust tokenizer rejects an empty batch
            return pad_token_ids([], max_length)
        return pad_token_ids(self.hf(list(texts), add_special_tokens=False)["input_ids"], max_length)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``: stops at ``<eos>``, skips other special tokens."""
        words = self._words
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in self._special:
                out.append(words[i])
        return detokenize(out)

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(row) for row in rows]

    @property
    def words_round_trip(self) -> bool:
        """Whether ``encode_batch(decode_batch(rows))`` gives back the words of ``rows`` for
        any rows of ids, so :meth:`word_ids` may stand in for it: every word is one token to
        :func:`~fiq_gym.text.split_words` and to the HF tokenizer, with its own id. (Then
        :func:`detokenize` joins words with a space, or with none before a punctuation mark
        that is a token of its own, and splitting the text gives the same words back.) True
        for every tokenizer :func:`build_caption_tokenizer` makes; checked once."""
        if self._words_round_trip is None:
            ids = [i for i in range(len(self._words)) if self._is_word[i]]
            words = [self._words[i] for i in ids]
            ok = all(split_words(w) == [w] for w in words)
            if ok and words:
                encoded = self.hf(words, add_special_tokens=False)["input_ids"]
                ok = all(e == [i] for e, i in zip(encoded, ids, strict=True))
            self._words_round_trip = ok
        return self._words_round_trip

    def word_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The words :meth:`decode` keeps of each row of ids (those before the first
        ``<eos>``, special tokens skipped), as (B, L) int64 ids moved to the front and padded
        with 0, and (B,) lengths: what ``encode_batch(decode_batch(rows), L)`` gives when
        :attr:`words_round_trip`, without the text round trip."""
        rows = np.asarray(rows, dtype=np.int64)
        keep = (np.cumsum(rows == self.eos_id, axis=1) == 0) & self._is_word[rows]
        lengths = keep.sum(axis=1).astype(np.int64)
        ids = np.take_along_axis(rows, np.argsort(~keep, axis=1, kind="stable"), axis=1)
        ids[np.arange(rows.shape[1])[None, :] >= lengths[:, None]] = 0
        return ids, lengths
