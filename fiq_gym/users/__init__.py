"""Simulated shoppers: given (target, shown) item pairs they write relative captions.

``TransformerUser`` (the learned shopper) and ``LanguageModelUser`` (a local causal language
model) load on first access, so importing this package does not import torch or transformers.
"""

from typing import Any

from fiq_gym.users.base import CaptionBatch, Difference, User
from fiq_gym.users.dataset import DatasetUser, UnannotatedPairError
from fiq_gym.users.human import HumanUser
from fiq_gym.users.template import Claim, TemplateNoise, TemplateUser, parse_caption

__all__ = [
    "CaptionBatch",
    "Claim",
    "DatasetUser",
    "Difference",
    "HumanUser",
    "LanguageModelUser",
    "TemplateNoise",
    "TemplateUser",
    "TransformerUser",
    "UnannotatedPairError",
    "User",
    "parse_caption",
]


def __getattr__(name: str) -> Any:
    if name == "TransformerUser":
        from fiq_gym.users.transformer.user import TransformerUser

        return TransformerUser
    if name == "LanguageModelUser":
        from fiq_gym.users.language_model import LanguageModelUser

        return LanguageModelUser
    raise AttributeError(f"module 'fiq_gym.users' has no attribute {name!r}")
