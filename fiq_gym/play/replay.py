"""Recorded dialogs as an evaluation set (``fiq-gym replay``).

Each recorded dialog becomes one episode of the real env: it starts from the recorded
(target, first garment) with ``reset(options={"target": ..., "shown": ...})``, and the shopper
is a :class:`~fiq_gym.users.dataset.DatasetUser` over every recorded
``(target, shown, caption)`` triple. Whenever the agent shows a garment that somebody
captioned for that target, the recorded caption is the answer; for any other garment the
``fallback`` shopper (the template shopper by default) answers. The first turn always
replays the person's own words; later turns replay them only where the agent under test
shows what the recorded agent showed (or what another recording captioned), so the report
says how many answers were replayed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.envs.evaluation import EvaluationResult, public_info
from fiq_gym.gallery import Gallery
from fiq_gym.play.agent import PlayAgent, load_play_agent
from fiq_gym.play.record import DialogRecord, check_catalog, load_dialogs
from fiq_gym.users.base import User
from fiq_gym.users.dataset import DatasetUser

__all__ = ["episode_starts", "evaluate_recorded", "replay_user"]


def replay_user(
    dialogs: Iterable[DialogRecord], catalog: Catalog, *, fallback: User | None = None
) -> DatasetUser:
    """A :class:`DatasetUser` that answers with the dialogs' recorded captions (catalog rows),
    and defers to ``fallback`` for pairs nobody captioned (None: raise)."""
    pairs = [p for d in dialogs for p in d.captioned_pairs()]
    if not pairs:
        raise ValueError("the recorded dialogs hold no captions to replay")
    return DatasetUser(catalog, pairs, mode="random", fallback=fallback)


def episode_starts(dialogs: Sequence[DialogRecord], gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """(targets, first shown) as indices in play, one per dialog (mapped from catalog rows, so
    a dialog recorded on the whole catalog replays in a one-category env if its items are in it)."""
    index_of = {int(row): i for i, row in enumerate(gallery.rows.tolist())}
    targets, shown = [], []
    for k, d in enumerate(dialogs):
        if not d.turns:
            raise ValueError(f"dialog {k} ({d.id}) has no turns")
        for name, row in (("target", d.target_row), ("first garment", d.turns[0].shown_row)):
            if row not in index_of:
                raise ValueError(
                    f"dialog {k} ({d.id}): its {name} (catalog row {row}) is not among the items in play "
                    f"(category {d.category!r} was recorded); replay it with the agent's env for that category"
                )
        targets.append(index_of[d.target_row])
        shown.append(index_of[d.turns[0].shown_row])
    return np.array(targets, dtype=np.int64), np.array(shown, dtype=np.int64)


def evaluate_recorded(
    dialogs: Sequence[DialogRecord] | Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    agent: PlayAgent | str | os.PathLike | None = None,
    catalog: str | os.PathLike | None = None,
    max_turns: int | None = None,
    fallback: str | User = "template",
    seed: int = 0,
) -> EvaluationResult:
    """Evaluate an agent on recorded dialogs; per-turn metrics as :func:`fiq_gym.envs.evaluation.evaluate`.

    Args:
        dialogs: dialog records, or dialog files (``fiq-gym play --save``).
        agent: a loaded :class:`PlayAgent`, a checkpoint directory, or None for the shipped
            supervised retriever.
        catalog: the catalog to play on (default: the agent's); must be the recorded one.
        max_turns: turns per episode (default: the agent's).
        fallback: the shopper for garments nobody captioned: ``"template"``,
            ``"transformer"`` or a :class:`User`.
        seed: seeds the episodes (which recorded caption, if a pair has several; the
            fallback's wording).

    The result's ``meta`` adds ``dialogs``, ``answers`` (captions the agent read) and
    ``recorded_answers`` (how many of them were replayed rather than the fallback's).
    """
    import gymnasium as gym

    from fiq_gym.envs.building import build_dialog_parts

    if isinstance(dialogs, str | os.PathLike):
        dialogs = [dialogs]
    records: list[DialogRecord] = []
    for item in dialogs:
        records.extend([item] if isinstance(item, DialogRecord) else load_dialogs(item))
    records = [d for d in records if d.turns and d.turns[0].caption]
    if not records:
        raise ValueError("no recorded dialog has feedback on its first garment; nothing to replay")
    play = (
        agent
        if isinstance(agent, PlayAgent)
        else load_play_agent(agent, catalog=catalog, max_turns=max_turns)
    )
    for k, d in enumerate(records):
        check_catalog(d.catalog, play.catalog, where=f"recorded dialog {k} ({d.id})")
    if isinstance(fallback, str):
        fallback_user = build_dialog_parts(play.catalog, play.category, fallback, None, None)[2]
    else:
        fallback_user = fallback
    user = replay_user(records, play.catalog, fallback=fallback_user)
    env = gym.make(
        play.env_id,
        catalog=play.catalog,
        user=user,
        tokenizer=play.tokenizer,
        action_mode=play.action_mode,
        max_turns=play.max_turns,
        max_episode_steps=play.max_turns,
    )
    try:
        retriever = play.make(env)
        inner: Any = env.unwrapped
        targets, shown = episode_starts(records, inner.gallery)
        rows = inner.gallery.rows
        turns = play.max_turns
        ranks = np.zeros((len(records), turns + 1), dtype=np.int64)
        success_turn = np.full(len(records), -1, dtype=np.int64)
        answers = replayed = 0

        def batched(obs: dict[str, np.ndarray], info: dict[str, Any]) -> tuple[dict, dict]:
            # The agent reads what the evaluation harness would give it: never the rank.
            return {k: np.asarray(v)[None] for k, v in obs.items()}, public_info(
                {k: np.asarray([v]) for k, v in info.items()}
            )

        for e in range(len(records)):
            t, s = int(targets[e]), int(shown[e])
            obs, info = env.reset(seed=seed + e, options={"target": t, "shown": s})
            retriever.reset(*batched(obs, info), np.ones(1, dtype=bool))
            ranks[e, 0] = info["rank"]
            for step in range(1, turns + 1):
                answers += 1
                replayed += bool(user.captions_of(rows[t], rows[int(info["shown"])]))
                action = np.asarray(retriever.act(*batched(obs, info)))[0]
                obs, _, terminated, truncated, info = env.step(action)
                ranks[e, step] = info["rank"]
                if info["is_success"]:
                    success_turn[e] = step
                    ranks[e, step:] = 0
                if terminated or truncated:
                    break
    finally:
        env.close()
    meta = {
        "seed": seed,
        "episodes": len(records),
        "max_turns": turns,
        "env": play.env_id,
        "dialogs": len(records),
        "answers": answers,
        "recorded_answers": replayed,
        "fallback": fallback if isinstance(fallback, str) else type(fallback).__name__,
    }
    return EvaluationResult(f"{play.name} on recorded dialogs", ranks, success_turn, len(rows), meta)
