"""Play the shopper yourself: a person (or a watched simulated shopper) against a retriever.

* :class:`PlaySession` (``fiq_gym.play.session``): the UI-independent core: env, agent,
  dialog history, saving.
* ``fiq-gym play`` (:mod:`fiq_gym.play.terminal`) and ``fiq-gym serve``
  (:mod:`fiq_gym.play.server`): terminal and web front ends.
* :mod:`fiq_gym.play.record`: the JSON dialog format; :mod:`fiq_gym.play.replay`: recorded
  dialogs as an evaluation set.

Like the CLI this sits on top of the library (it loads agents); nothing in the core imports
it. Names load on first access, so ``fiq-gym --help`` stays instant.
"""

from typing import Any

__all__ = [
    "DialogRecord",
    "PlayAgent",
    "PlayServer",
    "PlaySession",
    "load_dialogs",
    "load_play_agent",
    "run_terminal",
]

_WHERE = {
    "DialogRecord": "fiq_gym.play.record",
    "load_dialogs": "fiq_gym.play.record",
    "PlayAgent": "fiq_gym.play.agent",
    "load_play_agent": "fiq_gym.play.agent",
    "PlayServer": "fiq_gym.play.server",
    "PlaySession": "fiq_gym.play.session",
    "run_terminal": "fiq_gym.play.terminal",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fiq_gym.play' has no attribute {name!r}")
