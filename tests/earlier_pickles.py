"""The pickle layouts of earlier fiq-gym releases, built from a current env, for the tests
that check such pickles still load."""

from __future__ import annotations

from typing import Any

from fiq_gym.envs import FashionIQEnv


def earlier_state(env: FashionIQEnv) -> dict[str, Any]:
    """What ``FashionIQEnv.__getstate__`` returned before EnvConfig (fiq-gym 0.2.0 up to issue
    38, item 1): the constructor arguments by name with the dialog rules as a DialogConfig,
    the render mode beside them."""
    config = env.env_config
    names = ("catalog", "category", "user", "user_kwargs", "tokenizer", "side_info", "shortlist")
    args = {name: getattr(config, name) for name in (*names, "configuration", "scoring", "split")}
    state = {k: v for k, v in env.__getstate__().items() if k != "env_config"}
    return {**state, "args": {**args, "config": config.dialog_config()}, "render_mode": config.render_mode}
