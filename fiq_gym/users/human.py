"""``HumanUser``: a shopper whose relative captions a person types.

The environment asks its user for a caption whenever it shows a garment (at ``reset`` and
in every ``step``), so a person's answer must be at hand at that moment. A ``HumanUser``
gets it in one of two ways:

* **queued**: :meth:`HumanUser.answer` stores the caption for one (target, shown) pair before
  the env call that shows it (what :class:`fiq_gym.play.PlaySession` does: it announces the
  garment the agent picked, waits for the person, then steps the env);
* **asked**: a ``respond(target_row, shown_row) -> str`` callback, called from inside the
  env's ``reset`` / ``step`` (the simplest way to put a person into a hand-written loop, e.g.
  ``respond=lambda t, s: input("feedback> ")``).

Captions are tokenized with the tokenizer of the shopper the agent was trained with (by
default the template shopper's word vocabulary for this catalog), so the agent reads the
person's words with the ids it learned. **Words outside that vocabulary become ``<unk>``**:
the agent sees that a word was there, not which. :meth:`HumanUser.unknown_words` lists them
so a front end can tell the person.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fiq_gym.text import CaptionTokenizer, split_words
from fiq_gym.users.base import CaptionBatch, User

if TYPE_CHECKING:
    from fiq_gym.catalog.model import Catalog

__all__ = ["MAX_CAPTION_CHARS", "CaptionUnavailableError", "HumanUser", "clean_caption"]

MAX_CAPTION_CHARS = 300
"""Longest caption a person may type (Fashion IQ's relative captions are a few words)."""

_SPACE = re.compile(r"\s+")


def clean_caption(text: object) -> str:
    """A person's caption as the env will see it: whitespace (including newlines) collapsed to
    single spaces and trimmed.

    Raises:
        ValueError: if ``text`` is not a string, holds control characters, is empty after
            trimming or is longer than :data:`MAX_CAPTION_CHARS` characters.
    """
    if not isinstance(text, str):
        raise ValueError(f"a caption must be text, got {type(text).__name__}")
    caption = _SPACE.sub(" ", text).strip()
    if not caption:
        raise ValueError("the caption is empty: say how the garment you want differs from the one shown")
    if len(caption) > MAX_CAPTION_CHARS:
        raise ValueError(
            f"the caption is {len(caption)} characters long; at most {MAX_CAPTION_CHARS} are accepted"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in caption):
        raise ValueError("the caption contains control characters")
    return caption


class CaptionUnavailableError(LookupError):
    """The env asked a :class:`HumanUser` about a pair nobody has answered yet."""


class HumanUser(User):
    """A :class:`~fiq_gym.users.User` whose captions come from a person.

    Args:
        catalog: the catalog the environment runs on.
        tokenizer: how the env turns the person's text into token ids. Use the tokenizer of
            the shopper the agent was trained with (``env.unwrapped.tokenizer`` of a training
            env); default: the template shopper's word vocabulary for ``catalog``, which is what
            agents trained with ``user="template"`` read. Words it does not know become
            ``<unk>``.
        respond: optional ``respond(target_row, shown_row) -> str`` callback that asks the
            person (catalog rows, not indices in play) when no caption was queued with
            :meth:`answer`.

    When the env shows the target itself the dialog is over: the user answers ``""`` without
    asking anyone. Captions carry no structured differences (``CaptionBatch.differences``
    holds empty tuples): nobody knows what a person meant.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        tokenizer: CaptionTokenizer | None = None,
        respond: Callable[[int, int], str] | None = None,
    ) -> None:
        super().__init__(catalog)
        if tokenizer is None:
            from fiq_gym.users.registry import tokenizer_for

            tokenizer = tokenizer_for("template", catalog)
        self.tokenizer: CaptionTokenizer = tokenizer
        self.respond = respond
        self._queued: dict[tuple[int, int], str] = {}

    def answer(self, target_row: int, shown_row: int, caption: str) -> None:
        """Queue the person's caption for the next time the env shows ``shown_row`` while the
        target is ``target_row`` (catalog rows). The caption is used once."""
        self._queued[(int(target_row), int(shown_row))] = caption

    def clear(self) -> None:
        """Forget queued captions (e.g. when a dialog is abandoned)."""
        self._queued.clear()

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the tokenizer maps to ``<unk>``, in order, without repeats
        (empty if the tokenizer does not list its words)."""
        words = getattr(self.tokenizer, "words", None)
        if words is None:
            return []
        known = set(words)
        out: list[str] = []
        for w in split_words(text):
            if w not in known and w not in out:
                out.append(w)
        return out

    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        texts = []
        for t, s in zip(targets.tolist(), shown.tolist(), strict=True):
            if t == s:
                texts.append("")
            elif (t, s) in self._queued:
                texts.append(self._queued.pop((t, s)))
            elif self.respond is not None:
                texts.append(clean_caption(self.respond(t, s)))
            else:
                raise CaptionUnavailableError(
                    f"HumanUser has no caption for target row {t} and shown row {s}: queue one with "
                    "user.answer(target_row, shown_row, text) before the env call that shows it, or give "
                    "HumanUser a respond(target_row, shown_row) callback"
                )
        return CaptionBatch(texts, [() for _ in texts])
