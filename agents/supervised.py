"""Supervised dialog retriever (the papers' pre-training), CleanRL style: read top to bottom.

The retriever plays dialogs with the user simulator in the loop (its own choices decide
what is shown next); after each round the dialogs are replayed with gradients and every
turn's query is pulled towards the target's embedding and pushed from other items by a
triplet loss. The target comes from the env's training-only ``expose_target`` opt-in.

    fiq-gym train supervised --rounds 300 --out runs/supervised
    python -m fiq_gym.agents.supervised --help
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents.arguments import parse_dataclass_args
from fiq_gym.agents.retriever import (
    RetrieverAgent,
    RetrieverConfig,
    RetrieverNet,
    check_catalog,
    check_fits,
    gallery_tensors,
    load_checkpoint,
    observation_tensors,
    save_checkpoint,
)
from fiq_gym.catalog.model import Catalog
from fiq_gym.evaluation import EvaluationResult, evaluate

__all__ = ["Args", "train", "triplet_loss"]


@dataclass
class Args:
    env_id: str = "fiq_gym/FashionIQ-v0"
    """registered environment id"""
    catalog: str | None = None
    """catalog directory (default: the built-in synthetic catalog)"""
    user: str = "template"
    """user simulator that plays the shopper"""
    num_envs: int = 32
    """dialogs played in parallel per round"""
    rounds: int = 300
    """training rounds; each plays num_envs dialogs of max_turns turns"""
    max_turns: int = 5
    learning_rate: float = 1e-3
    embed_dim: int = 128
    margin: float = 0.2
    """triplet margin on cosine similarity"""
    negatives: int = 64
    """random negatives per turn"""
    seed: int = 0
    eval_episodes: int = 256
    eval_every: int = 100
    """rounds between evaluations (and checkpoints)"""
    out: str = "runs/supervised"
    """run directory: TensorBoard events in tb/, checkpoint in checkpoint/"""
    threads: int = 1
    """torch threads; 1 is fastest for these small networks (more fight the env's numpy for cores); 0: torch's default"""
    resume: bool = False
    """continue from out/checkpoint if it exists"""
    init: str | None = None
    """start from this retriever checkpoint instead of random weights"""


def triplet_loss(
    query: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, margin: float, negatives: torch.Tensor
) -> torch.Tensor:
    """Mean over negatives of max(0, margin - cos(q, target) + cos(q, negative)), per row."""
    positive = (query * items[targets]).sum(-1, keepdim=True)
    negative = torch.einsum("bd,bmd->bm", query, items[negatives])
    return F.relu(margin - positive + negative).mean(dim=-1)


def make_envs(args: Args, *, training: bool, num_envs: int) -> gym.vector.VectorEnv:
    return gym.make_vec(
        args.env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        catalog=args.catalog,
        user=args.user,
        action_mode="scores",
        max_turns=args.max_turns,
        expose_target=training,
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
    gallery = envs.unwrapped.gallery
    with torch.no_grad():
        items = net.encode_items(*gallery_tensors(gallery))
        state = net.initial_state(envs.num_envs)
        turns, alive_by_turn = [], []
        alive = np.ones(envs.num_envs, dtype=bool)
        for _ in range(envs.unwrapped.config.max_turns):
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
    gallery = envs.unwrapped.gallery
    checkpoint = out / "checkpoint"
    net, optimizer, start, _ = restore_or_create(args, envs, checkpoint)
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
        items = net.encode_items(*gallery_tensors(gallery))
        target_t = torch.as_tensor(targets)
        state = net.initial_state(args.num_envs)
        loss = torch.zeros(())
        for t, tensors in enumerate(turns):
            state, query = net.step(state, *tensors)
            negatives = torch.randint(
                0, config.num_items - 1, (args.num_envs, args.negatives), generator=generator
            )
            negatives += (negatives >= target_t[:, None]).long()  # never the target itself
            per_row = triplet_loss(query, items, target_t, args.margin, negatives)
            mask = torch.as_tensor(alive[t], dtype=torch.float32)
            loss = loss + (per_row * mask).sum() / mask.sum().clamp_min(1.0)
        loss = loss / len(turns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.eval()

        steps = int(alive.sum())
        writer.add_scalar("losses/triplet", loss.item(), rnd)
        writer.add_scalar("charts/steps_per_second", steps / (time.perf_counter() - t0), rnd)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (rnd + 1) % args.eval_every == 0 or rnd + 1 == args.rounds:
            result = evaluate_net(net, args)
            log_evaluation(writer, result, rnd)
            save_training_checkpoint(
                checkpoint, net, optimizer, args, rnd + 1, catalog=envs.unwrapped.catalog
            )
    writer.close()
    envs.close()
    return net, result


def restore_or_create(
    args: Any, envs: gym.vector.VectorEnv, checkpoint: Path
) -> tuple[RetrieverNet, torch.optim.Optimizer, int, dict[str, Any]]:
    """The network, its Adam optimizer, the first round to play and the saved training state.

    Resumes from ``checkpoint`` when ``args.resume`` and it exists; else starts from the
    ``args.init`` checkpoint if given; else from fresh weights sized for ``envs``. Shared by
    every retriever trainer, so resuming means the same thing in each.
    """
    gallery = envs.unwrapped.gallery
    vocab = envs.unwrapped.tokenizer.vocab_size
    state: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    source: Any = None
    start = 0
    if args.resume and (checkpoint / "config.json").exists():
        net, meta, tensors = load_checkpoint(checkpoint)
        source = checkpoint
        state = meta["training_state"]
        start = int(state["round"])
    elif args.init:
        net, meta, _ = load_checkpoint(args.init)
        source = args.init
    else:
        net = RetrieverNet(
            RetrieverConfig(
                vocab_size=vocab,
                feature_dim=gallery.feature_dim,
                attribute_dim=gallery.side_info.shape[1],
                num_items=gallery.num_items,
                embed_dim=args.embed_dim,
                max_caption_length=envs.unwrapped.config.caption_length,
            )
        )
    check_fits(net.config, gallery, vocab)
    if meta:
        check_catalog(meta, envs.unwrapped.catalog, source)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    if state:
        optimizer.load_state_dict(optimizer_state_from_tensors(tensors, state["optimizer"]))
    return net, optimizer, start, state


def evaluate_net(net: RetrieverNet, args: Args, name: str = "supervised") -> EvaluationResult:
    envs = make_envs(args, training=False, num_envs=min(64, args.eval_episodes))
    try:
        agent = RetrieverAgent(net, envs.unwrapped.gallery)
        return evaluate(agent, envs, episodes=args.eval_episodes, seed=10_000 + args.seed, name=name)
    finally:
        envs.close()


def log_evaluation(writer: SummaryWriter, result: EvaluationResult, step: int) -> None:
    for row in result.per_turn():
        t = int(row["turn"])
        writer.add_scalar(f"eval/R@10_turn{t}", row["R@10"], step)
        writer.add_scalar(f"eval/percentile_turn{t}", row["mean_percentile"], step)
    final = result.per_turn()[-1]
    writer.add_scalar("eval/R@10", final["R@10"], step)
    writer.add_scalar("eval/success_rate", final["success_rate"], step)


# --- checkpoint plumbing (optimizer state as safetensors, not pickles) -----------------------


def optimizer_state_to_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_checkpoint(
    path: Path,
    net: RetrieverNet,
    optimizer: torch.optim.Optimizer,
    args: Any,
    rounds_done: int,
    agent: str = "supervised",
    extra_state: dict[str, Any] | None = None,
    catalog: Catalog | None = None,
) -> None:
    """Model, optimizer state (as safetensors) and the round counter, in one atomic directory."""
    tensors, optimizer_meta = optimizer_state_to_tensors(optimizer)
    state = {"round": rounds_done, "optimizer": optimizer_meta, **(extra_state or {})}
    save_checkpoint(
        path,
        net,
        args=dataclasses.asdict(args),
        agent=agent,
        state=state,
        extra_tensors=tensors,
        catalog=catalog,
    )


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_dataclass_args(Args, argv, "Train the supervised dialog retriever.")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _, result = train(args)
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
