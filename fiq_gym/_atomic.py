"""Deprecated name of :mod:`fiq_gym.atomic` (atomic files and directories are used across the
package, so the module is public now); kept for one release."""

from fiq_gym.atomic import *  # noqa: F403
from fiq_gym.atomic import __all__  # noqa: F401
