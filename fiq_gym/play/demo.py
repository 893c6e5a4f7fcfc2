"""One dialog, printed turn by turn: a random retriever and the template shopper.

fiq-gym demo  (or python -m fiq_gym.play.demo) [--catalog DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from fiq_gym.agents import RandomAgent
from fiq_gym.catalog.model import Catalog
from fiq_gym.envs import FashionIQEnv
from fiq_gym.utils.arguments import catalog_arg

__all__ = ["play_demo_dialog"]


def play_demo_dialog(
    catalog: Catalog | str | os.PathLike | None = None, seed: int = 0, turns: int = 5
) -> list[dict]:
    """Play and print one dialog; return the per-turn infos."""
    env = FashionIQEnv(catalog=catalog, max_turns=turns)
    agent = RandomAgent(env.action_space, seed=seed)
    obs, info = env.reset(seed=seed)
    agent.reset(obs, info, np.ones(1, dtype=bool))
    target_row = env._dialog.tables.rows[env._dialog.target[0]]  # printed for the reader only
    print(f"catalog: {env.catalog!r}")
    print(f"the shopper wants: {env.catalog.descriptions[int(target_row)]}\n")
    history = [info]

    def show(info: dict) -> None:
        row = int(env._dialog.tables.rows[info["shown"]])
        print(f"turn {info['dialog_turn']}: shown #{info['shown']:<5} {env.catalog.descriptions[row]}")
        print(f"        target rank {info['rank']} of {env.num_items} (percentile {info['percentile']:.3f})")
        print(f'        shopper: "{info["caption_text"]}"')

    show(info)
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(int(agent.act(obs, info)[0]))
        history.append(info)
        show(info)
        print(f"        reward {reward:.3f}")
        done = terminated or truncated
    print(
        "\nfound it!"
        if info["is_success"]
        else f"\nnot found in {turns} turns (a random retriever rarely does)"
    )
    env.close()
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=catalog_arg, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    play_demo_dialog(args.catalog, args.seed, args.turns)


if __name__ == "__main__":
    main()
