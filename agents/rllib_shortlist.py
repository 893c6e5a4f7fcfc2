"""An RLlib RLModule (new API stack) for the ``shortlist`` action mode, and the agent that
plays a trained one in the evaluation harness. Needs the ``rllib`` extra.

:class:`ShortlistRLModule` is the SB3 shortlist policy's network in RLlib's terms: the same
:class:`~fiq_gym.agents.shortlist.ShortlistExtractor` (one shared network scores every
candidate from its features, attribute scores and standardised first-stage score together with
the caption's mean word embedding, the shown item and the turn) gives the action logits, and
the same value head reads the order-free context. RLlib hands the caption over as token ids,
which the extractor embeds directly (:meth:`ShortlistExtractor.forward_ids`): no flattening,
no one-hot.

```python
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from fiq_gym.agents.rllib_shortlist import ShortlistRLModule

config = PPOConfig().rl_module(rl_module_spec=RLModuleSpec(module_class=ShortlistRLModule))
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule

from fiq_gym.agents.shortlist import ShortlistExtractor, _ContextValue, _needs_shortlist
from fiq_gym.errors import CheckpointError

__all__ = ["MODULE_PATH", "RLlibShortlistAgent", "ShortlistRLModule", "load_rl_module"]

#: Where the trained module sits inside an algorithm checkpoint written by ``save_to_path``.
MODULE_PATH = Path("learner_group", "learner", "rl_module", DEFAULT_MODULE_ID)


class ShortlistRLModule(TorchRLModule, ValueFunctionAPI):
    """Per-candidate logits from one shared scoring network, and a value over the dialog.

    ``model_config``: ``embed_dim`` (64) and ``hidden`` (128), as in the SB3 policy. The
    observation must be the shortlist mode's ``Dict`` (raw: no flattening connector)."""

    def setup(self) -> None:
        self.k = _needs_shortlist(self.observation_space, self.action_space, "ShortlistRLModule")
        config = dict(self.model_config or {})
        self.scorer = ShortlistExtractor(
            self.observation_space,
            embed_dim=int(config.get("embed_dim", 64)),
            hidden=int(config.get("hidden", 128)),
        )
        if not self.inference_only:
            self.value = _ContextValue(self.k, self.scorer.features_dim - self.k)

    def _latent(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.scorer.forward_ids(batch[Columns.OBS])

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        latent = self._latent(batch)
        return {Columns.ACTION_DIST_INPUTS: latent[:, : self.k]}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        latent = self._latent(batch)
        # The latent goes along so compute_values need not run the scorer again.
        return {Columns.ACTION_DIST_INPUTS: latent[:, : self.k], Columns.EMBEDDINGS: latent}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """The value of each observation, ``(B,)``."""
        if embeddings is None:
            embeddings = self._latent(batch)
        return self.value(embeddings).squeeze(-1)


class RLlibShortlistAgent:
    """A trained :class:`ShortlistRLModule` as a batched retrieval agent: shows the candidate
    with the highest logit (deterministic, like SB3's ``predict(deterministic=True)``)."""

    def __init__(self, module: RLModule) -> None:
        self.module = module
        self.keys = tuple(module.observation_space.spaces)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Stateless policy (the dialog history is in the observation)."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        obs = {k: torch.as_tensor(np.atleast_2d(np.asarray(observation[k]))) for k in self.keys}
        with torch.no_grad():
            logits = self.module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        return logits.argmax(-1).numpy().astype(np.int64).reshape(-1)


def load_rl_module(algorithm_checkpoint: str | os.PathLike) -> RLModule:
    """The trained RLModule of an algorithm checkpoint written by ``save_to_path`` (no Ray
    cluster needed); raises :class:`~fiq_gym.errors.CheckpointError` if it is not there."""
    path = Path(algorithm_checkpoint) / MODULE_PATH
    if not path.is_dir():
        raise CheckpointError(
            f"{algorithm_checkpoint} has no trained module at {MODULE_PATH}: it is not an RLlib algorithm "
            "checkpoint; pass the checkpoint/ folder of a `fiq-gym train rllib-ppo --out RUN` run"
        )
    module = RLModule.from_checkpoint(path)
    module.eval()
    return module
