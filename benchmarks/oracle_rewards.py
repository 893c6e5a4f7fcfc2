"""Two oracle policies under every reward kind: finding the target against hovering next to it.

    python -m fiq_gym.benchmarks.oracle_rewards                  # results/oracle_rewards.md and .json
    python -m fiq_gym.benchmarks.oracle_rewards --catalog DIR --episodes 16 --out /tmp/oracles

The figures of docs/rl.md's "Rewards: the return is the metric": every reward kind must pay
finding the target more than hovering next to it (the two oracles of issue 15). Both policies
know the target (the env's training-only `expose_target`) and play the same dialogs in `index`
mode (one vector env of as many dialogs, reset with one seed, for each reward kind): **find**
shows the target at turn 1; **hover** shows the target's nearest neighbour every turn (the
other item whose features have the largest dot product with the target's, the similarity the
env ranks by), so the target stays near the top of the ranking and is never shown. The table
gives each policy's mean return per dialog; hover's ranks decide how far below find it earns.
Seconds on the default catalog.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.benchmarks.publishing import (
    add_out_argument,
    command_line,
    git_revision,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.dialog_engine import REWARDS
from fiq_gym.envs.inner import inner_env
from fiq_gym.envs.registration import env_id_for
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["POLICIES", "OracleRun", "main", "play_oracles", "table", "to_markdown"]

POLICIES = ("find", "hover")
#: The dialogs of the published table: issue 15 measured its oracles over 255.
EPISODES = 255
SEED = 0


@dataclass(frozen=True)
class OracleRun:
    """What one reward kind paid the two policies over the same dialogs.

    Attributes:
        returns: policy -> (episodes,) the return of each dialog.
        ranks: policy -> (episodes, T + 1) the target's rank at reset and after each turn
            (0 from the turn the target is shown on), as the benchmark counts them.
        num_items: N, the items in play.
    """

    returns: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    num_items: int


def nearest_neighbours(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each target's nearest other item: the largest dot product of features, the similarity
    the env ranks the gallery by when an item is shown."""
    similarity = features[targets] @ features.T
    similarity[np.arange(len(targets)), targets] = -np.inf
    return np.argmax(similarity, axis=1)


def play_oracles(
    kind: str,
    episodes: int = EPISODES,
    *,
    env_id: str | None = None,
    catalog: str | None = None,
    seed: int = SEED,
    max_turns: int | None = None,
) -> OracleRun:
    """Play find and hover over ``episodes`` dialogs (the vector env reset with ``seed``)
    under reward ``kind``, in ``index`` mode of ``env_id`` (default: the current default id)."""
    env_id = env_id or env_id_for("default")
    turns: dict[str, Any] = {} if max_turns is None else {"max_turns": max_turns}
    returns: dict[str, np.ndarray] = {}
    ranks: dict[str, np.ndarray] = {}
    for policy in POLICIES:
        envs = gym.make_vec(
            env_id,
            num_envs=episodes,
            vectorization_mode="vector_entry_point",
            catalog=catalog,
            action_mode="index",
            reward=kind,
            expose_target=True,  # the oracles know the target; the rules are the same without it
            **turns,
        )
        try:
            inner = inner_env(envs)
            num_items, length = inner.num_items, inner.config.max_turns
            _, info = envs.reset(seed=seed)
            targets = np.asarray(info["target"], dtype=np.int64)
            shown = targets if policy == "find" else nearest_neighbours(inner.gallery.features, targets)
            total = np.zeros(episodes)
            path = np.zeros((episodes, length + 1), dtype=np.int64)
            path[:, 0] = info["rank"]
            ended = np.zeros(episodes, dtype=bool)
            for turn in range(1, length + 1):
                _, reward, terminated, truncated, info = envs.step(shown)
                # A dialog that ended is restarted by the next step (autoreset): none of it counts.
                total += np.where(ended, 0.0, reward)
                path[:, turn] = np.where(ended, 0, info["rank"])
                ended |= terminated | truncated
                if ended.all():
                    break
            returns[policy], ranks[policy] = total, path
        finally:
            envs.close()
    return OracleRun(returns, ranks, num_items)


def table(record: dict[str, Any]) -> list[str]:
    """The lines of the returns table of a run's record (docs/rl.md shows the same lines;
    tests/test_oracle_rewards.py holds them to the published record)."""
    lines = ["| reward | find | hover | find - hover |", "|---|---:|---:|---:|"]
    for kind, means in record["returns"].items():
        gap = means["find"] - means["hover"]
        lines.append(f"| {kind} | {means['find']:.3f} | {means['hover']:.3f} | {gap:.6f} |")
    return lines


def to_markdown(record: dict[str, Any]) -> str:
    """The published report of a run's record (the .json written beside it)."""
    items = record["num_items"]
    hover = np.asarray(record["hover_ranks"])[:, 1:]
    lines = [
        "# Oracle rewards: finding the target against hovering next to it",
        "",
        " ".join((__doc__ or "").split("\n\n")[2].split()),
        "",
        f"`{record['env_id']}`, `index` mode, {record['catalog']} ({items:,} items in play), "
        f"{record['episodes']:,} dialogs (reset seed {record['seed']}), {record['max_turns']} turns. "
        "Mean return per dialog:",
        "",
        *table(record),
        "",
        f"Hover kept the target at rank {hover.min()} to {hover.max()} (mean {hover.mean():.3f}; rank 1 in "
        f"{(hover == 1).mean():.1%} of its turns); a turn at rank r pays percentile 1 - r/{items - 1:,} "
        "where find's pays 1.",
    ]
    lines += provenance_lines(record["command"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fiq_gym.benchmarks.oracle_rewards", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--env-id", default=env_id_for("default"), help="the env id (default: %(default)s)")
    parser.add_argument("--catalog", default=None, help="catalog directory (default: the default catalog)")
    parser.add_argument("--episodes", type=int, default=EPISODES, help="dialogs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="the reset seed (default: %(default)s)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    refuse_unclean_publication(parser, args.out)
    runs = {
        kind: play_oracles(kind, args.episodes, env_id=args.env_id, catalog=args.catalog, seed=args.seed)
        for kind in REWARDS
    }
    first = next(iter(runs.values()))
    # Every kind played the same dialogs: the reward changes what a turn pays, not the ranks.
    for kind, run in runs.items():
        if not all(np.array_equal(run.ranks[p], first.ranks[p]) for p in POLICIES):
            raise RuntimeError(
                f"reward={kind!r} played other dialogs than {REWARDS[0]!r}: the table would mislead"
            )
    record: dict[str, Any] = {
        "command": command_line("fiq_gym.benchmarks.oracle_rewards", argv),
        "revision": git_revision(),
        "env_id": args.env_id,
        "catalog": args.catalog or "the default catalog",
        "num_items": first.num_items,
        "episodes": args.episodes,
        "seed": args.seed,
        "max_turns": first.ranks["find"].shape[1] - 1,
        "returns": {
            kind: {policy: float(run.returns[policy].mean()) for policy in POLICIES}
            for kind, run in runs.items()
        },
        "hover_ranks": first.ranks["hover"].tolist(),
    }
    text = to_markdown(record)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "oracle_rewards.md", text)
    atomic_write_text(args.out / "oracle_rewards.json", json.dumps(record) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
