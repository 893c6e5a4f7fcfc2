"""Supervised dialog retriever (the papers' pre-training), CleanRL style: read top to bottom.

The retriever plays dialogs with the user simulator in the loop (its own choices decide
what is shown next); after each round the dialogs are replayed with gradients and every
turn's query is pulled towards the target's embedding and pushed from other items by a
triplet loss. The target comes from the env's training-only ``expose_target`` opt-in.

    fiq-gym train supervised --rounds 300 --out runs/supervised
    python -m fiq_gym.agents.supervised --help

TensorBoard's x axis (``charts/``, ``losses/``, ``eval/``) is the env steps taken so far:
``num_envs`` x ``max_turns`` per round, every sub-env's step counted, as Stable-Baselines3 counts them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents.loading import save_retriever_run, start_retriever_run
from fiq_gym.agents.retriever import (
    RetrieverNet,
    UpdateItems,
    evaluate_retriever,
    gallery_tensors,
    observation_tensors,
    triplet_loss,
)
from fiq_gym.env_config import DialogFlags, trainer_env_kwargs
from fiq_gym.envs.evaluation import EvaluationResult
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.arguments import PathArgument, parse_dataclass_args

__all__ = ["Args", "train", "triplet_loss"]


@dataclass
class Args(DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    num_envs: int = 32
    """dialogs played in parallel per round"""
    rounds: int = 300
    """training rounds; each plays num_envs dialogs of max_turns turns"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    embed_dim: int = 128
    """width of the retriever's text, image and state embeddings"""
    margin: float = 0.2
    """triplet margin on cosine similarity"""
    negatives: int = 64
    """random negatives per turn"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the sampling"""
    eval_episodes: int = 256
    """dialogs in each evaluation (a fixed set from the seed)"""
    eval_every: int = 100
    """rounds between evaluations (and checkpoints)"""
    out: PathArgument = "runs/supervised"
    """run directory: TensorBoard events in tb/, checkpoint in checkpoint/"""
    threads: int = 1
    """torch threads; 1 is fastest for these small networks (more fight the env's numpy for cores); 0: torch's default"""
    resume: bool = False
    """continue the run in OUT from its checkpoint"""
    overwrite: bool = False
    """replace the run in OUT (without --resume or --overwrite an existing OUT is an error)"""
    init: PathArgument | None = None
    """start from this retriever checkpoint instead of random weights"""
    init_optimizer: bool = False
    """with --init: also take that checkpoint's optimizer state, continuing its training (as the
    benchmark's equal-budget controls do) rather than restarting Adam"""


def make_envs(args: Args, *, training: bool, num_envs: int) -> gym.vector.VectorEnv:
    return gym.make_vec(
        args.env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        **trainer_env_kwargs(args, action_mode="scores", expose_target=training),
    )


def play_round(
    net: RetrieverNet, envs: gym.vector.VectorEnv, seed: int
) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """Play one dialog per sub-env with the current network (no gradients).

    Returns the per-turn observations, which rows were still in their dialog at each turn
    (T x B), and the targets.
    """
    obs, info = envs.reset(seed=seed)
    targets = info["target"].copy()
    gallery = inner_env(envs).gallery
    with torch.no_grad():
        items = net.encode_items(*gallery_tensors(gallery))
        state = net.initial_state(envs.num_envs)
        turns, alive_by_turn = [], []
        alive = np.ones(envs.num_envs, dtype=bool)
        for _ in range(inner_env(envs).config.max_turns):
            tensors = observation_tensors(obs)
            turns.append(tensors)
            alive_by_turn.append(alive.copy())
            state, query = net.step(state, *tensors)
            obs, _, terminated, truncated, info = envs.step((query @ items.T).clamp(-1, 1).numpy())
            alive &= ~(terminated | truncated)
    return turns, np.array(alive_by_turn), targets


def train(args: Args, progress: bool = True) -> tuple[RetrieverNet, EvaluationResult | None]:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    envs = make_envs(args, training=True, num_envs=args.num_envs)
    gallery = inner_env(envs).gallery
    net, optimizer, start, _ = start_retriever_run(args, envs)
    config = net.config
    writer = SummaryWriter(str(out / "tb"))
    writer.add_text("args", str(dataclasses.asdict(args)))
    result = None
    bar = tqdm(
        range(start, args.rounds), initial=start, total=args.rounds, desc="supervised", disable=not progress
    )
    for rnd in bar:
        t0 = time.perf_counter()
        # Each round's dialogs and negatives come from seeds of their own, so a resumed run
        # replays exactly what an uninterrupted one would.
        turns, alive, targets = play_round(net, envs, seed=args.seed * 1_000_003 + rnd * args.num_envs)
        generator = torch.Generator().manual_seed(args.seed * 7919 + rnd)
        net.train()
        target_t = torch.as_tensor(targets)
        negatives_by_turn = []
        for _ in turns:
            negatives = torch.randint(
                0, config.num_items - 1, (args.num_envs, args.negatives), generator=generator
            )
            negatives += (negatives >= target_t[:, None]).long()  # never the target itself
            negatives_by_turn.append(negatives)
        items = UpdateItems(net, gallery, [target_t, *negatives_by_turn])
        state = net.initial_state(args.num_envs)
        loss = torch.zeros(())
        for t, tensors in enumerate(turns):
            state, query = net.step(state, *tensors)
            per_row = triplet_loss(query, items, target_t, args.margin, negatives_by_turn[t])
            mask = torch.as_tensor(alive[t], dtype=torch.float32)
            loss = loss + (per_row * mask).sum() / mask.sum().clamp_min(1.0)
        loss = loss / len(turns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.eval()

        steps = int(alive.sum())
        env_steps = (rnd + 1) * args.num_envs * args.max_turns  # TensorBoard's x axis
        writer.add_scalar("losses/triplet", loss.item(), env_steps)
        writer.add_scalar("charts/steps_per_second", steps / (time.perf_counter() - t0), env_steps)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (rnd + 1) % args.eval_every == 0 or rnd + 1 == args.rounds:
            result = evaluate_retriever(net, args, name="supervised")
            for name, value in result.scalars().items():
                writer.add_scalar(name, value, env_steps)
            save_retriever_run(args, envs, net, optimizer, rnd + 1, agent="supervised")
    writer.close()
    envs.close()
    return net, result


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Args:
    return parse_dataclass_args(Args, argv, "Train the supervised dialog retriever.", prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    _, result = train(args)
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
