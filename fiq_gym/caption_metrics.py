"""Deprecated alias of :mod:`fiq_gym.users.caption_metrics` (moved in 0.x: caption metrics
judge shoppers, so they live with them); removed in the next release."""

import warnings

from fiq_gym.users.caption_metrics import *  # noqa: F403
from fiq_gym.users.caption_metrics import __all__  # noqa: F401

warnings.warn(
    "fiq_gym.caption_metrics moved to fiq_gym.users.caption_metrics; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
