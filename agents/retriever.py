"""The retriever agents' side of the dialog retriever network: its batched agent wrapper,
the triplet loss and the evaluation used while training.

The network (:class:`RetrieverNet`, :class:`RetrieverConfig`) and its checkpoint format
live in the core, :mod:`fiq_gym.retriever`, because the environment's first stage (the
shortlist) runs it too; they are re-exported here so existing imports keep working.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F

from fiq_gym.env_config import trainer_env_kwargs
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, training_evaluation_seed
from fiq_gym.envs.inner import inner_env
from fiq_gym.gallery import Gallery
from fiq_gym.retriever import (
    RETRIEVER_FORMAT,
    RetrieverConfig,
    RetrieverNet,
    check_catalog,
    check_fits,
    gallery_tensors,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "RETRIEVER_FORMAT",
    "WHOLE_GALLERY_ITEMS",
    "RetrieverAgent",
    "RetrieverConfig",
    "RetrieverNet",
    "UpdateItems",
    "check_catalog",
    "check_fits",
    "evaluate_retriever",
    "gallery_tensors",
    "load_checkpoint",
    "save_checkpoint",
    "triplet_loss",
]


#: Galleries up to this many items are encoded whole for each training update: cheap at that
#: size, and how every published result on the 10k-item catalogs was trained, so they stay
#: reproducible bit for bit. Larger galleries are encoded only in the rows the update's loss
#: reads (targets, negatives, candidates): at 100k items a supervised update encodes ~10k rows
#: instead of 100k, forward and backward.
WHOLE_GALLERY_ITEMS = 20_000


class UpdateItems:
    """Item embeddings, with gradients, for one training update: ``items[index]`` is the
    embedding of gallery rows ``index``, as in the whole gallery's embedding matrix.

    Args:
        net: the network being trained.
        gallery: the env's gallery.
        rows: every index tensor the loss will look up (any shapes); only needed, and only
            read, when the gallery has more than :data:`WHOLE_GALLERY_ITEMS` items.
    """

    def __init__(self, net: RetrieverNet, gallery: Gallery, rows: list[torch.Tensor]) -> None:
        n = len(gallery.features)
        self._position: torch.Tensor | None = None
        if n <= WHOLE_GALLERY_ITEMS:
            self._items = net.encode_items(*gallery_tensors(gallery))
            return
        used = torch.unique(torch.cat([torch.as_tensor(r).reshape(-1) for r in rows]))
        picked = used.numpy()
        self._items = net.encode_items(
            torch.tensor(np.asarray(gallery.features)[picked]),
            torch.tensor(np.asarray(gallery.side_info)[picked]),
        )
        # -1 for rows the loss was not expected to read: looking one up is an IndexError-free
        # wrong answer, so the lookups below check for it.
        self._position = torch.full((n,), -1, dtype=torch.long)
        self._position[used] = torch.arange(len(used))

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        if self._position is None:
            return self._items[index]
        position = self._position[index]
        if bool((position < 0).any()):
            raise IndexError("the update looked up gallery rows it did not declare in UpdateItems(rows=...)")
        return self._items[position]


def triplet_loss(
    query: torch.Tensor,
    items: torch.Tensor | UpdateItems,
    targets: torch.Tensor,
    margin: float,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """Mean over negatives of max(0, margin - cos(q, target) + cos(q, negative)), per row."""
    positive = (query * items[targets]).sum(-1, keepdim=True)
    negative = torch.einsum("bd,bmd->bm", query, items[negatives])
    return F.relu(margin - positive + negative).mean(dim=-1)


def observation_tensors(obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    missing = {"caption", "shown_features", "shown_attributes"} - set(obs)
    if missing:
        raise ValueError(
            f"the retriever needs observation keys {sorted(missing)}; make the env with all keys"
        )
    return (
        torch.as_tensor(obs["caption"]),
        torch.as_tensor(obs["shown_features"]),
        torch.as_tensor(obs["shown_attributes"]),
    )


class RetrieverAgent:
    """Batched agent over a :class:`RetrieverNet` for ``action_mode="scores"`` envs.

    Follows :class:`fiq_gym.envs.evaluation.RetrievalAgent`: each turn it updates every dialog's
    state with the caption and the shown item, and returns its cosine scores for all items.
    """

    def __init__(self, net: RetrieverNet, gallery: Gallery) -> None:
        check_fits(net.config, gallery, vocab_size=None)
        self.net = net.eval()
        features, attributes = gallery_tensors(gallery)
        with torch.no_grad():
            self.items = net.encode_items(features, attributes)
        self.state: torch.Tensor | None = None

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        b = len(mask)
        if self.state is None or self.state.shape[0] != b:
            self.state = self.net.initial_state(b)
        self.state[torch.as_tensor(mask)] = 0.0

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        tokens, features, attributes = observation_tensors(observation)
        b = tokens.shape[0]
        if self.state is None or self.state.shape[0] != b:
            self.state = self.net.initial_state(b)
        fresh = torch.as_tensor(np.atleast_1d(info["dialog_turn"]) == 0)
        self.state[fresh] = 0.0  # rows that were just auto-reset start a new dialog
        self.state, query = self.net.step(self.state, tokens, features, attributes)
        return (query @ self.items.T).clamp(-1.0, 1.0).numpy().astype(np.float32)


def evaluate_retriever(net: RetrieverNet, args: Any, name: str) -> EvaluationResult:
    """Evaluate ``net`` during training on the env its trainer's ``args`` describe
    (``env_id``, ``catalog``, ``user``, ``max_turns``, ``start``), on ``args.eval_episodes`` dialogs
    of a fixed seed (:func:`~fiq_gym.envs.evaluation.training_evaluation_seed`), so evaluations of a run compare."""
    envs = gym.make_vec(
        args.env_id,
        num_envs=min(64, args.eval_episodes),
        vectorization_mode="vector_entry_point",
        **trainer_env_kwargs(args, action_mode="scores"),
    )
    try:
        agent = RetrieverAgent(net, inner_env(envs).gallery)
        return evaluate(
            agent, envs, episodes=args.eval_episodes, seed=training_evaluation_seed(args.seed), name=name
        )
    finally:
        envs.close()
