"""Stable-Baselines3 DQN on the shortlist: a Q-value per candidate from one shared network.

Action mode: ``shortlist``. Each turn the env proposes K candidates (unseen items from its
first stage, in a shuffled order) with their features in the observation; the Q-network is
:class:`~fiq_gym.agents.shortlist.ShortlistDQNPolicy`, whose Q-values are
:class:`~fiq_gym.agents.shortlist.ShortlistExtractor`'s per-candidate scores, so it learns one
function of (candidate, caption, shown item) instead of K unrelated outputs.

    fiq-gym train dqn --timesteps 200000 --out runs/dqn-shortlist

Defaults: ``reciprocal_rank`` rewards and a learning rate of 1e-4, not the env's
``percentile`` and 1e-3. The untrained network already plays near the greedy first stage (its
scores read the first stage's). Under the old defaults training unlearned that start: success
by turn 5 fell from 0.469 to 0.051 in 10,000 steps (-0.418 [-0.480, -0.352]); reciprocal ranks
alone kept most of it (-0.082 [-0.145, -0.020]); with 1e-4 as well the fall is not detectable
(-0.035 [-0.086, +0.016], ending at 0.434 beside the greedy stage's 0.430), nor is any gain
(``benchmarks/results/dqn_learning_curve.md``, one training seed, 256 dialogs). The likely
reason: the next turn's percentile hardly depends on which of the K candidates is shown
(every candidate is close to the caption, and the percentile of a target near the top changes
in its third decimal), so the Q-values' differences between slots are smaller than their
regression error and the greedy choice follows the error; the reciprocal rank pays 1 for the
target and less than 0.1 below rank 9, so the choice that finds the target stands out.

TensorBoard: SB3's scalars under fiq-gym's tags (:data:`~fiq_gym.agents.ppo.SB3_TAGS`) and the
final evaluation's ``eval/``, against SB3's x axis, the env steps taken so far.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import VecMonitor

import fiq_gym  # noqa: F401
from fiq_gym.agents.ppo import (
    ProgressCallback,
    env_kwargs_of,
    evaluate_model,
    log_evaluation,
    tensorboard_logger,
)
from fiq_gym.agents.shortlist import ShortlistDQNPolicy
from fiq_gym.checkpoint import DQN_FORMAT, prepare_run, save_sb3_model
from fiq_gym.env_config import DialogFlags, ShortlistFlags
from fiq_gym.envs.evaluation import EvaluationResult
from fiq_gym.envs.sb3 import make_sb3_vec_env
from fiq_gym.utils.arguments import PathArgument, parse_dataclass_args

__all__ = ["DQN_FORMAT", "Args", "build_model", "train"]


@dataclass
class Args(ShortlistFlags, DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    num_envs: int = 16
    """dialogs played in parallel (sub-envs of the native vector env)"""
    timesteps: int = 100_000
    """environment steps to train for"""
    reward: str = "reciprocal_rank"
    """env reward kind (see the env's docstring); reciprocal_rank, not the env's percentile: with percentile rewards DQN unlearns its near-greedy start (benchmarks/results/dqn_learning_curve.md)"""
    learning_rate: float = 1e-4
    """Adam learning rate (1e-3 drifted from the near-greedy start: benchmarks/results/dqn_learning_curve.md)"""
    buffer_size: int = 50_000
    """replay buffer size (transitions)"""
    learning_starts: int = 1_000
    """transitions collected before the first update"""
    batch_size: int = 128
    """transitions per gradient step"""
    train_freq: int = 4
    """SB3: vector steps between updates"""
    target_update_interval: int = 250
    """SB3: steps between target-network copies"""
    exploration_fraction: float = 0.3
    """share of training over which epsilon decays from 1 to 0.05"""
    gamma: float = 0.9
    """discount factor"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the exploration"""
    eval_episodes: int = 256
    """dialogs in each evaluation (a fixed set from the seed)"""
    out: PathArgument = "runs/dqn-shortlist"
    """run directory: TensorBoard events in tb/, the model in checkpoint/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it; DQN runs do not resume)"""
    threads: int = 1
    """torch threads; 0: torch's default"""

    @property
    def action_mode(self) -> str:
        return "shortlist"


def train(args: Args, progress: bool = True) -> tuple[DQN, EvaluationResult]:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    prepare_run(
        out, resume=False, resumable=False, overwrite=args.overwrite, state=out / "checkpoint", kind="dqn"
    )
    model = build_model(args)
    model.set_logger(tensorboard_logger(out / "tb", "dqn"))
    callback = ProgressCallback(args.timesteps, desc="dqn") if progress else None
    model.learn(total_timesteps=args.timesteps, callback=callback)
    save(model, out / "checkpoint", args)
    model.get_env().close()  # type: ignore[union-attr]
    result = evaluate_model(model, args, name="DQN (shortlist)")
    log_evaluation(model, result)
    return model, result


def build_model(args: Args) -> DQN:
    """The run's untrained SB3 DQN on its training env (``model.get_env()``), as :func:`train`
    builds it; the DQN learning-curve benchmark evaluates it along the way."""
    # VecMonitor: SB3 logs rollout/ep_rew_mean and ep_len_mean to TensorBoard from it.
    vec_env = VecMonitor(make_sb3_vec_env(args.env_id, num_envs=args.num_envs, **env_kwargs_of(args)))
    vec_env.seed(args.seed)
    return DQN(
        ShortlistDQNPolicy,
        vec_env,
        learning_rate=args.learning_rate,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        train_freq=args.train_freq,
        gradient_steps=1,
        target_update_interval=args.target_update_interval,
        exploration_fraction=args.exploration_fraction,
        gamma=args.gamma,
        seed=args.seed,
        device="cpu",
        verbose=0,
    )


def save(model: DQN, directory: Path, args: Args) -> Path:
    """The run's checkpoint: SB3's zip (no replay buffer), the policy as safetensors and the
    arguments."""
    args_dict = {**dataclasses.asdict(args), "action_mode": "shortlist"}
    return save_sb3_model(model, directory, format=DQN_FORMAT, agent="DQN (shortlist)", args=args_dict)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Args:
    return parse_dataclass_args(
        Args, argv, "Train Stable-Baselines3 DQN on the shortlist action mode.", prog=prog
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, result = train(parse_args(argv, prog))
    print(result)


if __name__ == "__main__":
    main()
