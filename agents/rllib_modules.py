"""RLlib RLModules (new API stack) for fiq-gym's Dict observation, and the agent that plays a
trained one in the evaluation harness. Needs the ``rllib`` extra.

* :class:`ShortlistRLModule` (``shortlist`` mode, the one to scale, and ``shortlist_slate``
  mode) is the SB3 shortlist policy's network in RLlib's terms: the same
  :class:`~fiq_gym.agents.shortlist.ShortlistExtractor` (one shared network scores every
  candidate from its features, attribute scores and standardised first-stage score together
  with the caption's mean word embedding, the shown item and the turn) gives the action
  logits, and the same value head reads the order-free context. RLlib hands the caption over
  as token ids, which the extractor embeds directly
  (:meth:`~fiq_gym.agents.shortlist.ShortlistExtractor.forward_ids`): no flattening, no one-hot.
  On a slate (``MultiDiscrete([M] * K)``) position j scores the candidates without the j
  best-scored, as the SB3 policy's slate head does, and RLlib's default distribution for
  ``MultiDiscrete`` (one categorical per position) reads those ``K * M`` logits.
* :class:`IndexRLModule` (``index`` mode, small catalogs): a categorical over every item in
  play, whose logit for item i is the product of an item encoding of its features and
  attribute scores (the gallery, passed in ``model_config``) with a query from the caption,
  the shown item and the turn, so similar garments get similar logits.

```python
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from fiq_gym.agents.rllib_modules import ShortlistRLModule

config = PPOConfig().rl_module(rl_module_spec=RLModuleSpec(module_class=ShortlistRLModule))
```
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from fiq_gym.agents.shortlist import (
    _EMPTY,
    ShortlistExtractor,
    _ContextValue,
    _needs_shortlist,
    _RankedSlateScores,
    _SlotScores,
)
from fiq_gym.envs.inner import inner_env
from fiq_gym.errors import CheckpointError

__all__ = [
    "MODULE_PATH",
    "IndexRLModule",
    "RLlibAgent",
    "ShortlistRLModule",
    "gallery_matrix",
    "load_rl_module",
]

#: Where the trained module sits inside an algorithm checkpoint written by ``save_to_path``.
MODULE_PATH = Path("learner_group", "learner", "rl_module", DEFAULT_MODULE_ID)


class ShortlistRLModule(TorchRLModule, ValueFunctionAPI):
    """``shortlist`` and ``shortlist_slate`` modes: per-candidate logits from one shared scoring
    network (per slate position in ``shortlist_slate``), and a value over the dialog.

    ``model_config``: ``embed_dim`` (64), ``hidden`` (128) and ``first_stage_gain`` (0: the
    policy starts near uniform over the candidates; a few units: near the first stage's
    ranking), as in the SB3 policy. The observation must be the mode's ``Dict`` (raw: no
    flattening connector)."""

    def setup(self) -> None:
        self.k, positions = _needs_shortlist(self.observation_space, self.action_space, "ShortlistRLModule")
        self.head: nn.Module = _SlotScores(self.k)
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            self.head = _RankedSlateScores(self.k, positions)
            # RLlib has no default for MultiDiscrete: one categorical per position over the
            # K * M logits, position after position (what _RankedSlateScores returns).
            self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=[self.k] * positions)
        config = dict(self.model_config or {})
        self.scorer = ShortlistExtractor(
            self.observation_space,
            embed_dim=int(config.get("embed_dim", 64)),
            hidden=int(config.get("hidden", 128)),
            first_stage_gain=float(config.get("first_stage_gain", 0.0)),
        )
        if not self.inference_only:
            self.value = _ContextValue(self.k, self.scorer.features_dim - self.k)

    def _latent(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.scorer.forward_ids(batch[Columns.OBS])

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        latent = self._latent(batch)
        return {Columns.ACTION_DIST_INPUTS: self.head(latent)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        latent = self._latent(batch)
        # The latent goes along so compute_values need not run the scorer again.
        return {Columns.ACTION_DIST_INPUTS: self.head(latent), Columns.EMBEDDINGS: latent}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """The value of each observation, ``(B,)``."""
        if embeddings is None:
            embeddings = self._latent(batch)
        return self.value(embeddings).squeeze(-1)


def gallery_matrix(envs: gym.Env | gym.vector.VectorEnv) -> np.ndarray:
    """The items in play as :class:`IndexRLModule` reads them: features and attribute scores,
    ``(N, D + A)`` float32."""
    gallery = inner_env(envs).gallery
    return np.concatenate([gallery.features, gallery.side_info], axis=1).astype(np.float32)


class IndexRLModule(TorchRLModule, ValueFunctionAPI):
    """``index`` mode on small catalogs: logit of item i = ``item(gallery_i) . query / sqrt(E)``.

    ``model_config``: ``gallery`` (required: :func:`gallery_matrix` of the env, one row per
    action), ``embed_dim`` (64) and ``hidden`` (128). With ``shown_mask`` among the
    observation keys, items already shown get no probability."""

    def setup(self) -> None:
        config = dict(self.model_config or {})
        space = self.observation_space
        needed = {"caption", "shown_features", "shown_attributes"}
        if not isinstance(self.action_space, gym.spaces.Discrete) or not needed <= set(
            getattr(space, "spaces", {})
        ):
            raise ValueError(
                f"IndexRLModule needs action_mode='index' (Discrete(N) actions) and observation keys {sorted(needed)}, "
                f"got {self.action_space} and {sorted(getattr(space, 'spaces', {}))}"
            )
        if "gallery" not in config:
            raise ValueError(
                "IndexRLModule needs model_config['gallery']: the items' features and attribute scores "
                "(fiq_gym.agents.rllib_modules.gallery_matrix(env))"
            )
        gallery = torch.as_tensor(np.asarray(config["gallery"], dtype=np.float32))
        d, a = int(space["shown_features"].shape[0]), int(space["shown_attributes"].shape[0])
        if gallery.shape != (int(self.action_space.n), d + a):
            raise ValueError(
                f"model_config['gallery'] has shape {tuple(gallery.shape)}, but the env has "
                f"{self.action_space.n} items of {d} features and {a} attribute scores"
            )
        embed = int(config.get("embed_dim", 64))
        hidden = int(config.get("hidden", 128))
        turn = space.spaces.get("turn")
        self.max_turns = float(np.max(turn.high)) if turn is not None else 1.0
        self.scale = 1.0 / math.sqrt(embed)
        self.embedding = nn.Embedding(int(space["caption"].nvec[0]), embed, padding_idx=0)
        self.item = nn.Sequential(nn.Linear(d + a, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        self.query = nn.Sequential(nn.Linear(2 * embed + 1, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        # Not in the state dict: model_config carries it (and the checkpoint with it).
        self.register_buffer("gallery", gallery, persistent=False)
        if not self.inference_only:
            self.value = nn.Sequential(nn.Linear(embed, 64), nn.ReLU(), nn.Linear(64, 1))

    def _query(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        ids = obs["caption"].long()
        b = ids.shape[0]
        real = (ids != 0).float()
        words = self.embedding(ids).sum(1) / real.sum(1, keepdim=True).clamp_min(1.0)
        shown = self.item(torch.cat([obs["shown_features"].float(), obs["shown_attributes"].float()], -1))
        turn = obs["turn"].float().view(b, 1) / self.max_turns if "turn" in obs else torch.zeros(b, 1)
        return self.query(torch.cat([words, shown, turn], -1))

    def _logits(self, batch: dict[str, Any], query: torch.Tensor) -> torch.Tensor:
        logits = query @ self.item(self.gallery).T * self.scale
        mask = batch[Columns.OBS].get("shown_mask")
        if mask is not None:
            logits = torch.where(mask > 0, torch.full_like(logits, _EMPTY), logits)
        return logits

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch, self._query(batch))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        query = self._query(batch)
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch, query), Columns.EMBEDDINGS: query}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """The value of each observation, ``(B,)``."""
        if embeddings is None:
            embeddings = self._query(batch)
        return self.value(embeddings).squeeze(-1)


class RLlibAgent:
    """A trained RLModule (:class:`ShortlistRLModule`, :class:`IndexRLModule`) as a batched
    retrieval agent: takes the action with the highest logit, per slate position on a
    ``MultiDiscrete`` slate (deterministic, like SB3's ``predict(deterministic=True)``)."""

    def __init__(self, module: RLModule) -> None:
        self.module = module
        self.keys = tuple(module.observation_space.spaces)
        space = module.action_space
        self.positions = len(space.nvec) if isinstance(space, gym.spaces.MultiDiscrete) else 0

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Stateless policy (the dialog history is in the observation)."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        obs = {k: torch.as_tensor(np.atleast_2d(np.asarray(observation[k]))) for k in self.keys}
        with torch.no_grad():
            logits = self.module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        if self.positions:
            # (B, K * M), position after position: the best candidate of each position
            return logits.view(logits.shape[0], self.positions, -1).argmax(-1).numpy().astype(np.int64)
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
