"""Ray RLlib PPO on the shortlist, sampled by many env runners (one machine or a cluster).

Needs the ``rllib`` extra (``pip install -e ".[rllib]"``). Each env runner is a Ray process
that steps one native vector env of ``--envs-per-runner`` dialogs
(:mod:`fiq_gym.envs.rllib`: registered in every runner, seeded without duplicated streams,
no bootstrap at ``max_turns``); the policy is :class:`~fiq_gym.agents.rllib_modules.ShortlistRLModule`,
the SB3 shortlist policy's network as an RLModule (``--action-mode shortlist_slate``: the same
network, one categorical per slate position over the candidates the earlier positions left, as
``fiq-gym train ppo`` has it). ``--action-mode index`` trains
:class:`~fiq_gym.agents.rllib_modules.IndexRLModule` instead, a categorical over every item,
on catalogs of at most ``MAX_INDEX_ITEMS`` items. docs/scaling.md has the cluster set-up.

    fiq-gym train rllib-ppo --num-env-runners 2 --envs-per-runner 8 --iterations 50 --out runs/rllib-ppo
    fiq-gym eval runs/rllib-ppo/checkpoint

``--address`` joins an existing cluster (``ray start --head`` first); without it the run
starts a local Ray instance and shuts every process of it down when it ends, also on errors
and Ctrl-C. ``OUT/checkpoint`` holds ``config.json`` and RLlib's own checkpoint of the whole
algorithm (``algorithm/``, written with ``save_to_path``); ``OUT/tb`` the TensorBoard events
(``charts/``, ``losses/``, ``eval/``), whose x axis is the env steps sampled so far (RLlib's
``num_env_steps_sampled_lifetime``, as Stable-Baselines3 counts them), not iterations.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401
from fiq_gym.agents.evaluate_checkpoint import evaluate_checkpoint
from fiq_gym.agents.loading import RLLIB_OBSERVATION_KEYS
from fiq_gym.agents.ppo import env_kwargs_of
from fiq_gym.agents.rllib_modules import IndexRLModule, ShortlistRLModule, gallery_matrix
from fiq_gym.checkpoint import CHECKPOINT_VERSION, RLLIB_PPO_FORMAT, portable_args, prepare_run, versions
from fiq_gym.env_config import DialogFlags, ShortlistFlags
from fiq_gym.envs.evaluation import EvaluationResult, training_evaluation_seed
from fiq_gym.envs.rllib import register_rllib_envs
from fiq_gym.utils.arguments import (
    CatalogArgument,
    PathArgument,
    absolute_path,
    parse_dataclass_args,
)
from fiq_gym.utils.atomic import atomic_directory

__all__ = ["ACTION_MODES", "MAX_INDEX_ITEMS", "Args", "build_config", "module_spec", "ray_session", "train"]

VECTORIZE_MODES = ("vector_entry_point", "sync")
#: ``--action-mode index`` learns one logit per item: for small catalogs only.
MAX_INDEX_ITEMS = 5_000
#: The action modes RLlib PPO trains in (the RLModule of each: :func:`module_spec`).
ACTION_MODES = ("shortlist", "shortlist_slate", "index")


@dataclass
class Args(ShortlistFlags, DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    catalog: CatalogArgument | None = None
    """catalog directory (default: the built-in synthetic catalog; on a cluster every node must see this path)"""
    action_mode: str = "shortlist"
    """shortlist (pick one of K candidates), shortlist_slate (show slate_size of the candidates at once) or index (pick any item; catalogs of at most 5,000 items)"""
    slate_size: int = 4
    """shortlist_slate mode: the candidates shown at once"""
    reward: str = "percentile"
    """env reward kind (see the env's docstring)"""
    num_env_runners: int = 0
    """Ray env-runner processes that sample; 0 samples in this process"""
    envs_per_runner: int = 8
    """dialogs each runner plays at once (sub-envs of its native vector env)"""
    vectorize: str = "vector_entry_point"
    """vector_entry_point (one native vector env per runner) or sync (RLlib's env-by-env loop, slower)"""
    address: str | None = None
    """an existing Ray cluster to join (e.g. auto, or HOST:6379); default: start a local one and stop it at the end"""
    num_cpus: int = 0
    """local Ray instance only: CPUs it may use (0: one per env runner, at least 1)"""
    iterations: int = 10
    """training iterations (each samples --train-batch-size env steps, then updates)"""
    timesteps: int = 0
    """stop once this many env steps are sampled instead (0: run --iterations iterations)"""
    sample_timeout: float = 600.0
    """seconds an iteration waits for the runners' samples (RLlib's own 60 s gives empty iterations on a busy machine)"""
    train_batch_size: int = 2048
    """env steps per iteration"""
    minibatch_size: int = 256
    """samples per gradient step"""
    num_epochs: int = 4
    """passes over each iteration's samples"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda (SB3's default; RLlib's own is 1.0)"""
    clip_range: float = 0.2
    """PPO's ratio clip (SB3's default; RLlib's own is 0.3)"""
    vf_coef: float = 0.5
    """value loss coefficient (SB3's default; RLlib's own is 1.0)"""
    max_grad_norm: float = 0.5
    """gradient norm clip (SB3's default; RLlib's own is none)"""
    ent_coef: float = 0.0
    """entropy coefficient"""
    embed_dim: int = 64
    """the scoring network's embedding size"""
    hidden: int = 128
    """the scoring network's hidden size"""
    first_stage_gain: float = 0.0
    """shortlist modes: the starting gain on the first stage's standardised score (0: start near uniform over the candidates; e.g. 3: near the first stage's ranking), as fiq-gym train ppo has it"""
    seed: int = 0
    """seeds the dialogs (runner w, sub-env k: SeedSequence((seed, w, k))), the weights and sampling"""
    eval_episodes: int = 256
    """dialogs of the final evaluation (the sealed harness; a fixed set from the seed)"""
    out: PathArgument = "runs/rllib-ppo"
    """run directory: TensorBoard events in tb/, the checkpoint in checkpoint/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it; RLlib runs do not resume)"""
    threads: int = 1
    """torch threads of the learner (this process); 0: torch's default"""


def env_config_of(args: Args) -> dict[str, Any]:
    """The env arguments of a run (RLlib's ``env_config``)."""
    config = {**env_kwargs_of(args, modes=ACTION_MODES), "reward": args.reward}
    catalog = config["catalog"]
    if catalog and Path(catalog).expanduser().exists():
        # Runners may start in another working directory (and on other nodes).
        config["catalog"] = str(Path(catalog).expanduser().resolve())
    # The modules read this turn only (like the SB3 policies), not the dialog's history: left
    # out, it is that much less for RLlib to copy and batch every step.
    config["observation_keys"] = RLLIB_OBSERVATION_KEYS[args.action_mode]
    return config


def module_spec(args: Args) -> RLModuleSpec:
    """The RLModule of a run: :class:`ShortlistRLModule` (both shortlist modes), or
    :class:`IndexRLModule` with the gallery read from the env (refused above
    ``MAX_INDEX_ITEMS`` items)."""
    model_config: dict[str, Any] = {"embed_dim": args.embed_dim, "hidden": args.hidden}
    if args.action_mode in ("shortlist", "shortlist_slate"):
        model_config["first_stage_gain"] = args.first_stage_gain
        return RLModuleSpec(module_class=ShortlistRLModule, model_config=model_config)
    if args.first_stage_gain:
        raise ValueError(
            f"--first-stage-gain applies to the shortlist's first stage, not action_mode={args.action_mode!r}: "
            "pass --action-mode shortlist or shortlist_slate, or drop it"
        )
    if args.action_mode != "index":
        raise ValueError(f"--action-mode must be one of {', '.join(ACTION_MODES)}, got {args.action_mode!r}")
    probe = gym.make_vec(
        args.env_id, num_envs=1, vectorization_mode="vector_entry_point", **env_config_of(args)
    )
    try:
        gallery = gallery_matrix(probe)
    finally:
        probe.close()
    if len(gallery) > MAX_INDEX_ITEMS:
        raise ValueError(
            f"--action-mode index learns one logit per item and is for catalogs of at most {MAX_INDEX_ITEMS:,} "
            f"items; this one has {len(gallery):,} in play. Use --action-mode shortlist, or a smaller --catalog "
            "(fiq-gym catalog build --size N --out DIR)"
        )
    return RLModuleSpec(module_class=IndexRLModule, model_config={**model_config, "gallery": gallery})


def build_config(args: Args) -> PPOConfig:
    """RLlib's PPO configuration of a run (new API stack, the run's RLModule)."""
    if args.vectorize not in VECTORIZE_MODES:
        raise ValueError(f"--vectorize must be one of {VECTORIZE_MODES}, got {args.vectorize!r}")
    if args.num_env_runners < 0 or args.envs_per_runner < 1:
        raise ValueError(
            f"--num-env-runners must be >= 0 and --envs-per-runner >= 1, got {args.num_env_runners} and {args.envs_per_runner}"
        )
    register_rllib_envs((args.env_id,))
    return (
        PPOConfig()
        # The seed keys each (runner, sub-env) stream (fiq_gym.envs.rllib.runner_seeds).
        .environment(args.env_id, env_config={**env_config_of(args), "seed": args.seed})
        .env_runners(
            num_env_runners=args.num_env_runners,
            num_envs_per_env_runner=args.envs_per_runner,
            gym_env_vectorize_mode=args.vectorize,
            num_cpus_per_env_runner=1,
            rollout_fragment_length="auto",
            sample_timeout_s=args.sample_timeout,
        )
        .training(
            train_batch_size_per_learner=args.train_batch_size,
            minibatch_size=args.minibatch_size,
            num_epochs=args.num_epochs,
            lr=args.learning_rate,
            gamma=args.gamma,
            # SB3 PPO's loss, so the two engines' runs compare (benchmarks/rllib_learning_curve.py):
            # clipped surrogate without RLlib's extra KL penalty, SB3's lambda and coefficients.
            lambda_=args.gae_lambda,
            clip_param=args.clip_range,
            vf_loss_coeff=args.vf_coef,
            use_kl_loss=False,
            grad_clip=args.max_grad_norm,
            grad_clip_by="global_norm",
            entropy_coeff=args.ent_coef,
        )
        .rl_module(rl_module_spec=module_spec(args))
        .debugging(seed=args.seed)
    )


@contextmanager
def ray_session(address: str | None = None, num_cpus: int = 1) -> Iterator[bool]:
    """Connect to the cluster at ``address``, or start a local Ray instance of ``num_cpus``
    CPUs; yields whether it started Ray. On exit, shut down what it started (every local Ray
    process), never a cluster it only joined. Inside an initialised Ray session it does nothing."""
    # No usage reports: the library never phones home (and most of its machines cannot).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        yield False
        return
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as error:
            # Ray >= 2.59 starts clusters in token mode, but on purpose never sends a token to an
            # explicit address unless told to (it could be anyone's): the usual cause.
            raise ConnectionError(
                f"could not join the Ray cluster at {address}: check it runs (`ray status --address {address}` "
                "on its head node) and that this machine reaches that port. Clusters started with `ray start` "
                "on Ray >= 2.59 use token authentication: set RAY_AUTH_MODE=token and give this machine the "
                "head node's token (RAY_AUTH_TOKEN, or its ~/.ray/auth_token file); on the head node itself, "
                "--address auto finds both (docs/scaling.md, 'A cluster')"
            ) from error
    else:
        ray.init(
            address="local",
            num_cpus=max(1, int(num_cpus)),
            include_dashboard=False,
            # The shared-memory object store: samples and weights pass through it, and the
            # default (30% of RAM) is far more than a few runners need.
            object_store_memory=512 * 1024**2,
            logging_level=logging.WARNING,
        )
    # ray.init makes SIGTERM raise SystemExit in the driver, so the finally below also runs
    # when a job scheduler stops the run (a test checks nothing is left).
    try:
        yield True
    finally:
        ray.shutdown()


def _log(writer: SummaryWriter, result: dict[str, Any], step: int) -> dict[str, float]:
    """TensorBoard scalars of one iteration (charts/, losses/) at env step ``step``; returns
    the charted ones."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    scalars = {
        "charts/episode_return_mean": runners.get("episode_return_mean"),
        "charts/episode_len_mean": runners.get("episode_len_mean"),
        "charts/env_steps_sampled": result.get("num_env_steps_sampled_lifetime"),
        "charts/iteration": result.get("training_iteration"),
        "charts/iteration_seconds": result.get("time_this_iter_s"),
        "losses/policy_loss": learner.get("policy_loss"),
        "losses/value_loss": learner.get("vf_loss"),
        "losses/entropy": learner.get("entropy"),
        "losses/approx_kl": learner.get("mean_kl_loss"),
    }
    charted = {}
    for key, value in scalars.items():
        if isinstance(value, int | float | np.number) and math.isfinite(float(value)):
            writer.add_scalar(key, float(value), step)
            charted[key] = float(value)
    return charted


def train(args: Args, progress: bool = True) -> tuple[dict[str, float], EvaluationResult]:
    """Train for ``args.iterations`` (or ``args.timesteps`` env steps), write ``OUT/checkpoint``, shut Ray down, then evaluate
    the checkpoint with the sealed harness; returns the last iteration's charted metrics
    and the evaluation."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(absolute_path(args.out))  # Ray writes to URIs: a relative path has no scheme
    prepare_run(
        out,
        resume=False,
        resumable=False,
        overwrite=args.overwrite,
        state=out / "checkpoint",
        kind="rllib-ppo",
    )
    config = build_config(args)
    metrics: dict[str, float] = {}
    with (
        ray_session(args.address, args.num_cpus or args.num_env_runners),
        SummaryWriter(out / "tb") as writer,
    ):
        algo = config.build_algo()
        try:
            by_steps = args.timesteps > 0
            total = args.timesteps if by_steps else args.iterations
            unit = "step" if by_steps else "iter"
            bar = tqdm(total=total, desc="rllib-ppo", unit=unit, disable=not progress)
            iteration, steps = 0, 0
            while (steps < args.timesteps) if by_steps else (iteration < args.iterations):
                iteration += 1
                result = algo.train()
                sampled = result.get("num_env_steps_sampled_lifetime")
                new_steps = int(float(sampled)) if isinstance(sampled, int | float | np.number) else steps
                metrics = _log(writer, result, new_steps)
                bar.update(min(new_steps, total) - min(steps, total) if by_steps else 1)
                steps = new_steps
                bar.set_postfix(
                    steps=steps, ret=f"{metrics.get('charts/episode_return_mean', float('nan')):.2f}"
                )
            bar.close()
            save(algo, out / "checkpoint", args)
        finally:
            algo.stop()
    # Through load_agent, as `fiq-gym eval OUT/checkpoint` does; no Ray needed any more.
    evaluation = evaluate_checkpoint(
        out / "checkpoint", episodes=args.eval_episodes, seed=training_evaluation_seed(args.seed)
    )
    with SummaryWriter(out / "tb") as writer:
        for name, value in evaluation.scalars().items():
            writer.add_scalar(name, value, steps)
    return metrics, evaluation


def save(algo: Any, directory: Path, args: Args) -> Path:
    """RLlib's checkpoint of the algorithm (``algorithm/``, ``save_to_path``) plus the run's
    arguments (``config.json``), atomically."""
    with atomic_directory(directory, overwrite=True) as tmp:
        algo.save_to_path(str((tmp / "algorithm").resolve()))
        meta = {
            "format": RLLIB_PPO_FORMAT,
            "version": CHECKPOINT_VERSION,
            "agent": f"RLlib PPO ({args.action_mode})",
            "args": portable_args(dataclasses.asdict(args)),
            "versions": {**versions(), "ray": ray.__version__},
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Args:
    return parse_dataclass_args(
        Args,
        argv,
        "Train Ray RLlib PPO (shortlist, shortlist_slate or index action mode) with many env runners.",
        prog=prog,
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, result = train(parse_args(argv, prog))
    print(result)


if __name__ == "__main__":
    main()
