"""Simulated shoppers: given (target, shown) item pairs they write relative captions."""

from fiq_gym.users.base import CaptionBatch, Difference, User
from fiq_gym.users.template import Claim, TemplateNoise, TemplateUser, parse_caption

__all__ = [
    "CaptionBatch",
    "Claim",
    "Difference",
    "TemplateNoise",
    "TemplateUser",
    "User",
    "parse_caption",
]
