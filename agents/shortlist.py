"""Agents for the ``shortlist`` action mode: two baselines and the pieces SB3 needs.

* :class:`ShortlistGreedyAgent` (``shortlist-greedy``) shows the candidate the first stage
  scores best: what the first stage alone achieves.
* :class:`ShortlistRandomAgent` (``shortlist-random``) shows a uniform random candidate.
* :class:`ShortlistExtractor` is a permutation-equivariant SB3 features extractor: one
  shared network scores each candidate from its features, attribute scores and first-stage
  score together with the caption and the shown item, so permuting the candidates permutes
  the scores and nothing else. :class:`ShortlistActorCriticPolicy` (PPO) and
  :class:`ShortlistDQNPolicy` (DQN) read those scores as the action logits / Q-values
  directly, without a dense layer that would mix the slots.

```python
from stable_baselines3 import PPO
from fiq_gym.agents.shortlist import ShortlistActorCriticPolicy
from fiq_gym.envs.sb3 import make_sb3_vec_env

env = make_sb3_vec_env("fiq_gym/FashionIQ-v3", num_envs=16, action_mode="shortlist")
model = PPO(ShortlistActorCriticPolicy, env).learn(100_000)
```
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from fiq_gym.agents.sb3_state import SB3Predictor

__all__ = [
    "SB3ShortlistAgent",
    "ShortlistActorCriticPolicy",
    "ShortlistDQNPolicy",
    "ShortlistExtractor",
    "ShortlistGreedyAgent",
    "ShortlistGreedySlateAgent",
    "ShortlistRandomAgent",
]

_STREAM = 0x53484F52  # "SHOR"
# Logit / Q-value of an empty slot: never chosen, never the max.
_EMPTY = -1e4


def _needs_shortlist(
    observation_space: gym.spaces.Space, space: gym.spaces.Space, what: str
) -> tuple[int, int]:
    """``(M, K)``: M candidates, K slots a step names (1 in ``shortlist`` mode, the slate's size in
    ``shortlist_slate`` mode)."""
    mask = getattr(observation_space, "spaces", {}).get("candidate_mask")
    m = None if mask is None else int(mask.shape[0])
    if isinstance(space, gym.spaces.Discrete) and m == int(space.n):
        return m, 1
    if isinstance(space, gym.spaces.MultiDiscrete) and m is not None and (space.nvec == m).all():
        return m, len(space.nvec)
    raise ValueError(
        f"{what} needs action_mode='shortlist' or 'shortlist_slate' (Discrete(M) or MultiDiscrete([M] * K) "
        f"actions and candidate_* observation keys), got {space}"
    )


class ShortlistGreedyAgent:
    """Shows the candidate with the best first-stage score (``obs["candidate_scores"]``)."""

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Stateless: the candidates of each turn are in the observation."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        scores = np.where(observation["candidate_mask"] > 0, observation["candidate_scores"], -np.inf)
        return np.argmax(np.atleast_2d(scores), axis=1).astype(np.int64)


class ShortlistGreedySlateAgent:
    """``shortlist_slate`` mode: the K candidates with the best first-stage scores, best first
    (ties: the lower slot): what the first stage alone fills a slate with."""

    def __init__(self, slate_size: int) -> None:
        self.slate_size = int(slate_size)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Stateless: the candidates of each turn are in the observation."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        scores = np.where(observation["candidate_mask"] > 0, observation["candidate_scores"], -np.inf)
        order = np.argsort(-np.atleast_2d(scores), axis=1, kind="stable")
        return order[:, : self.slate_size].astype(np.int64)


class ShortlistRandomAgent:
    """Shows a uniform random valid candidate; ``seed`` seeds the agent's own stream."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(None if seed is None else [_STREAM, seed])

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Stateless."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        valid = np.atleast_2d(observation["candidate_mask"]) > 0
        keys = np.where(valid, self.rng.random(valid.shape), -1.0)
        return np.argmax(keys, axis=1).astype(np.int64)


class SB3ShortlistAgent:
    """A trained SB3 model (PPO or DQN on the shortlist, or sb3-contrib's ``RecurrentPPO``,
    whose LSTM state it keeps through each dialog) as a batched retrieval agent."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.predictor = SB3Predictor(model)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Rows in ``mask`` begin a dialog (a recurrent policy's memory of them is cleared)."""
        self.predictor.reset(mask)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        keys = self.model.observation_space.spaces
        action = np.asarray(self.predictor.predict({k: observation[k] for k in keys}), dtype=np.int64)
        # (B,) candidate slots in shortlist mode, (B, K) in shortlist_slate mode
        return action.reshape((-1, *tuple(self.model.action_space.shape or ())))


class ShortlistExtractor(BaseFeaturesExtractor):
    """Permutation-equivariant features for ``shortlist`` observations.

    Output: ``(B, K + context_dim)``: the first K columns are one score per candidate slot
    (``-1e4`` for empty slots), the rest a dialog context (caption, shown item, turn and the
    mean of the candidates' embeddings) that does not depend on the slots' order, for a value
    head. Each candidate's score is ``mlp([candidate, candidate * context, context, z]) + g * z``
    with one shared ``mlp``, where ``z`` is the candidate's first-stage score standardised
    within its shortlist and ``g`` a learned gain that starts at ``first_stage_gain`` (0: the
    policy starts near uniform over the shortlist and must learn to follow the first stage; a
    few units: it starts near the greedy first stage and learns corrections).

    SB3 hands a ``MultiDiscrete`` caption over one-hot (B, L * V); it is embedded by a product
    with the embedding matrix (mean over real words).
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        embed_dim: int = 64,
        hidden: int = 128,
        first_stage_gain: float = 0.0,
    ) -> None:
        needed = {"caption", "shown_features", "shown_attributes", *_CANDIDATE_KEYS}
        missing = needed - set(observation_space.spaces)
        if missing:
            raise ValueError(
                f"ShortlistExtractor needs observation keys {sorted(missing)}: make the env with "
                "action_mode='shortlist' and the default observation_keys"
            )
        boxes = cast("dict[str, gym.spaces.Box]", observation_space.spaces)  # all but the caption
        k = int(boxes["candidate_scores"].shape[0])
        super().__init__(observation_space, k + 2 * embed_dim)
        self.k = k
        self.d = int(boxes["shown_features"].shape[0])
        self.a = int(boxes["shown_attributes"].shape[0])
        caption = cast(gym.spaces.MultiDiscrete, observation_space["caption"])
        self.vocab = int(caption.nvec[0])
        turn = boxes.get("turn")
        self.max_turns = float(np.max(turn.high)) if turn is not None else 1.0
        self.embedding = nn.Embedding(self.vocab, embed_dim, padding_idx=0)
        self.item = nn.Sequential(nn.Linear(self.d + self.a, embed_dim), nn.ReLU())
        self.context = nn.Sequential(nn.Linear(2 * embed_dim + 1, embed_dim), nn.ReLU())
        self.first_stage_gain = nn.Parameter(torch.tensor(float(first_stage_gain)))
        self.score = nn.Sequential(
            nn.Linear(3 * embed_dim + 1, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """SB3's call: the caption arrives one-hot, ``(B, L * V)``."""
        b = observations["caption"].shape[0]
        one_hot = observations["caption"].view(b, -1, self.vocab)
        words_mask = 1.0 - one_hot[..., :1]  # id 0 is padding
        words = (one_hot @ self.embedding.weight * words_mask).sum(1) / words_mask.sum(1).clamp_min(1.0)
        return self.features(words, observations)

    def forward_ids(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same features from raw observations (RLlib, plain torch): the caption as token
        ids ``(B, L)``, any numeric dtype elsewhere. Equal to :meth:`forward` on the one-hot."""
        ids = observations["caption"].long()
        b = ids.shape[0]
        real = (ids != 0).float()  # id 0 is padding (a zero row of the embedding)
        words = self.embedding(ids).sum(1) / real.sum(1, keepdim=True).clamp_min(1.0)
        floats = {k: v.float().view(b, -1) for k, v in observations.items() if k != "caption"}
        return self.features(words, floats)

    def features(self, words: torch.Tensor, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores and context from the caption's mean word embedding ``words`` ``(B, E)`` and
        the other observation keys (floats)."""
        b = words.shape[0]
        shown = self.item(torch.cat([observations["shown_features"], observations["shown_attributes"]], -1))
        turn = observations.get("turn", torch.zeros(b, 1)).view(b, 1) / self.max_turns
        context = self.context(torch.cat([words, shown, turn], -1))  # (B, E)
        cand = torch.cat(
            [
                observations["candidate_features"].view(b, self.k, self.d),
                observations["candidate_attributes"].view(b, self.k, self.a),
            ],
            -1,
        )
        cand = self.item(cand)  # (B, K, E), the same encoder as the shown item
        valid = observations["candidate_mask"].view(b, self.k) > 0.5
        # First-stage scores standardised within each shortlist (their scale differs between
        # first stages), fed to the shared network and through a learned gain.
        first = observations["candidate_scores"].view(b, self.k)
        n_valid = valid.sum(1, keepdim=True).clamp_min(1)
        mean = (first * valid).sum(1, keepdim=True) / n_valid
        std = (((first - mean) * valid) ** 2).sum(1, keepdim=True).div(n_valid).sqrt().clamp_min(1e-6)
        z = ((first - mean) / std * valid).unsqueeze(-1)
        joint = torch.cat([cand, cand * context[:, None], context[:, None].expand(-1, self.k, -1), z], -1)
        scores = self.score(joint).squeeze(-1) + self.first_stage_gain * z.squeeze(-1)
        scores = torch.where(valid, scores, torch.full_like(scores, _EMPTY))
        pooled = (cand * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        return torch.cat([scores, context, pooled], -1)


_CANDIDATE_KEYS = ("candidate_features", "candidate_attributes", "candidate_scores", "candidate_mask")


class _SlotScores(nn.Module):
    """The first K feature columns: the extractor's per-candidate scores."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return latent[:, : self.k]


class _RankedSlateScores(nn.Module):
    """Slate logits from the extractor's M candidate scores: position j scores the candidates
    with the j best-scored ones left out, so the most likely slate is the K best candidates,
    distinct, best first (one shared score per candidate: still equivariant to their order).
    Output ``(B, K * M)``, position after position, as SB3's ``MultiDiscrete`` heads read it."""

    def __init__(self, m: int, k: int) -> None:
        super().__init__()
        self.m, self.k = m, k

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        scores = latent[:, : self.m]
        order = torch.argsort(scores.detach(), dim=1, descending=True)
        ahead = torch.zeros_like(scores, dtype=torch.bool)
        positions = []
        for j in range(self.k):
            positions.append(torch.where(ahead, torch.full_like(scores, _EMPTY), scores))
            ahead = ahead.scatter(1, order[:, j : j + 1], True)
        return torch.cat(positions, dim=1)


class _ContextValue(nn.Module):
    """A value head over the order-free context columns (after the K slot scores) and the
    best and mean valid slot score."""

    def __init__(self, k: int, context_dim: int) -> None:
        super().__init__()
        self.k = k
        self.head = nn.Sequential(nn.Linear(context_dim + 1, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # Detached: the value loss must not move the policy's logits.
        best = latent[:, : self.k].max(dim=1, keepdim=True).values.detach()
        return self.head(torch.cat([latent[:, self.k :], best], -1))


class ShortlistActorCriticPolicy(ActorCriticPolicy):
    """SB3 PPO/A2C policy whose action logits are :class:`ShortlistExtractor`'s per-candidate
    scores (equivariant to candidate order) and whose value reads the order-free context. In
    ``shortlist_slate`` mode position j of the slate scores the candidates without the j
    best-scored (:class:`_RankedSlateScores`)."""

    def __init__(
        self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Space, *args: Any, **kwargs: Any
    ):
        self._k, self._positions = _needs_shortlist(
            observation_space, action_space, "ShortlistActorCriticPolicy"
        )
        kwargs.setdefault("features_extractor_class", ShortlistExtractor)
        kwargs.setdefault("net_arch", {"pi": [], "vf": []})
        kwargs.setdefault("share_features_extractor", False)
        super().__init__(observation_space, action_space, *args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        slate = isinstance(self.action_space, gym.spaces.MultiDiscrete)
        self.action_net = _RankedSlateScores(self._k, self._positions) if slate else _SlotScores(self._k)
        # SB3 infers value_net's type from its own head (nn.Linear); any module of the latents will do.
        self.value_net = _ContextValue(self._k, self.features_dim - self._k)  # type: ignore[assignment]
        # Rebuild the optimizer over the replaced heads' parameters (SB3's own call, which its
        # optimizer_class type does not cover: type[Optimizer] takes no lr).
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]


class _ShortlistQNetwork(QNetwork):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SB3 infers q_net's type from its own head (nn.Sequential); any module of the features will do.
        self.q_net = _SlotScores(int(self.action_space.n))  # type: ignore[assignment]


class ShortlistDQNPolicy(DQNPolicy):
    """SB3 DQN policy whose Q-values are :class:`ShortlistExtractor`'s per-candidate scores."""

    def __init__(
        self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Discrete, *args: Any, **kwargs: Any
    ):
        if _needs_shortlist(observation_space, action_space, "ShortlistDQNPolicy")[1] != 1:
            raise ValueError(
                f"ShortlistDQNPolicy picks one candidate (action_mode='shortlist'), got {action_space}"
            )
        kwargs.setdefault("features_extractor_class", ShortlistExtractor)
        kwargs.setdefault("net_arch", [])
        super().__init__(observation_space, action_space, *args, **kwargs)

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return _ShortlistQNetwork(**net_args).to(self.device)
