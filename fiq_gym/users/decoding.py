"""Decoding settings from what a user passes in ``user_kwargs``: one rule for every shopper
that decodes text (the transformer shopper's :class:`~fiq_gym.users.transformer.user.Decoding`,
the language-model shopper's :class:`~fiq_gym.users.language_model.LMDecoding`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["decoding_from"]

T = TypeVar("T")


def decoding_from(cls: type[T], value: T | Mapping[str, Any] | str | None, strategies: str) -> T:
    """A ``cls`` (a dataclass with a ``strategy`` field) from itself, a dict of its fields, a
    strategy name, or None (the defaults), so ``user_kwargs={"decoding": "sample"}`` works.

    ``strategies`` names the accepted strategy names in the error for a wrong type.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        return cls(strategy=value)  # type: ignore[call-arg]
    if isinstance(value, Mapping):
        known = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = set(value) - set(known)
        if unknown:
            raise ValueError(f"unknown decoding settings {sorted(unknown)}; known: {known}")
        return cls(**value)
    raise TypeError(
        f"decoding must be a {cls.__name__}, a dict of its fields, {strategies} or None, "
        f"got {type(value).__name__}"
    )
