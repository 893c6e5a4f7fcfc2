"""Model-based policy improvement (Guo et al., NeurIPS 2018), CleanRL style.

At every turn the current retriever proposes its top-k unseen items. For each candidate
the env's training-only look-ahead says what the shopper would answer if it were shown; the
retriever takes that answer one turn forward, and the candidate after which the target
ranks best is the improved policy's choice. The dialog shows that item, and the network is
trained to prefer it (cross-entropy over a softmax of its scores), with the supervised
triplet term keeping its ranking sharp. The look-ahead is batched: one user call, one
tokenizer call and one network step for all B x k candidates, no Python loop over dialogs.

Needs both training-only opt-ins (``lookahead`` for the previews, ``expose_target`` to rank
the target after each preview); the evaluation harness refuses both.

    fiq-gym train policy-improvement --init runs/supervised/checkpoint --rounds 100

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
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401
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

__all__ = ["Args", "lookahead_choice", "train"]


@dataclass
class Args(DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    init: PathArgument | None = None
    """supervised checkpoint to improve (random weights if not given)"""
    num_envs: int = 32
    """dialogs played in parallel (sub-envs of the native vector env)"""
    rounds: int = 100
    """training rounds; each plays num_envs dialogs"""
    candidates: int = 5
    """k: top items looked ahead per turn"""
    learning_rate: float = 1e-4
    """Adam learning rate"""
    tau: float = 0.05
    """softmax temperature of the policy over cosine scores"""
    imitation_coef: float = 1.0
    """weight of the policy-improvement (imitation) term"""
    ranking_coef: float = 1.0
    """weight of the supervised triplet term"""
    margin: float = 0.2
    """triplet margin on cosine similarity"""
    negatives: int = 64
    """random negatives per turn in the triplet term"""
    embed_dim: int = 128
    """width of the retriever's text, image and state embeddings"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the sampling"""
    eval_episodes: int = 256
    """dialogs in each evaluation (a fixed set from the seed)"""
    eval_every: int = 50
    """rounds between evaluations (and checkpoints)"""
    out: PathArgument = "runs/policy_improvement"
    """run directory: TensorBoard events in tb/, checkpoint in checkpoint/"""
    threads: int = 1
    """torch threads; 1 is fastest for these small networks (more fight the env's numpy for cores); 0: torch's default"""
    resume: bool = False
    """continue the run in OUT from its checkpoint"""
    overwrite: bool = False
    """replace the run in OUT (without --resume or --overwrite an existing OUT is an error)"""


def make_envs(args: Args, num_envs: int) -> gym.vector.VectorEnv:
    return gym.make_vec(
        args.env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        **trainer_env_kwargs(args, action_mode="scores", expose_target=True, lookahead=True),
    )


@torch.no_grad()
def lookahead_choice(
    net: RetrieverNet,
    envs: gym.vector.VectorEnv,
    state: torch.Tensor,
    items: torch.Tensor,
    features: torch.Tensor,
    attributes: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For (B, k) candidates: the target's rank after one more turn for each, and the best.

    Returns (B,) the position of the chosen candidate in each row and (B, k) look-ahead ranks.
    """
    b, k = candidates.shape
    tokens, _ = inner_env(envs).preview_captions(candidates.numpy())
    flat = candidates.reshape(-1)
    _, next_query = net.step(
        state.repeat_interleave(k, dim=0),
        torch.as_tensor(tokens.reshape(b * k, -1)),
        features[flat],
        attributes[flat],
    )
    scores = next_query @ items.T
    target_scores = scores.gather(1, targets.repeat_interleave(k)[:, None])
    ranks = ((scores >= target_scores).sum(dim=1) - 1).reshape(b, k)
    ranks = ranks.masked_fill(candidates == targets[:, None], 0)  # showing the target ends the search
    best = ranks.argmin(dim=1)  # ties: the candidate the retriever ranked higher
    return best, ranks


def play_round(
    net: RetrieverNet, envs: gym.vector.VectorEnv, k: int, seed: int
) -> tuple[
    list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    list[torch.Tensor],
    list[torch.Tensor],
    np.ndarray,
    torch.Tensor,
    float,
]:
    b = envs.num_envs
    n = inner_env(envs).num_items
    obs, info = envs.reset(seed=seed)
    targets = torch.as_tensor(info["target"].copy())
    features, attributes = gallery_tensors(inner_env(envs).gallery)
    shown = torch.zeros(b, n, dtype=torch.bool)
    shown[torch.arange(b), torch.as_tensor(info["shown"])] = True
    turns, candidate_sets, best_positions, alive_by_turn, gains = [], [], [], [], []
    alive = np.ones(b, dtype=bool)
    with torch.no_grad():
        items = net.encode_items(features, attributes)
        state = net.initial_state(b)
        for _ in range(inner_env(envs).config.max_turns):
            tensors = observation_tensors(obs)
            state, query = net.step(state, *tensors)
            scores = query @ items.T
            candidates = scores.masked_fill(shown, float("-inf")).topk(k, dim=1).indices
            best, ranks = lookahead_choice(net, envs, state, items, features, attributes, candidates, targets)
            choice = candidates.gather(1, best[:, None]).squeeze(1)
            gains.append((ranks[:, 0] - ranks.min(dim=1).values).float().mean().item())
            action = scores.clamp(-1.0, 0.9999)
            action[torch.arange(b), choice] = 1.0
            turns.append(tensors)
            candidate_sets.append(candidates)
            best_positions.append(best)
            alive_by_turn.append(alive.copy())
            obs, _, terminated, truncated, info = envs.step(action.numpy())
            shown[torch.arange(b), choice] = True
            alive &= ~(terminated | truncated)
    return turns, candidate_sets, best_positions, np.array(alive_by_turn), targets, float(np.mean(gains))


def train(args: Args, progress: bool = True) -> tuple[RetrieverNet, EvaluationResult | None]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    envs = make_envs(args, args.num_envs)
    gallery = inner_env(envs).gallery
    net, optimizer, start, _ = start_retriever_run(args, envs)
    writer = SummaryWriter(str(out / "tb"))
    writer.add_text("args", str(dataclasses.asdict(args)))
    result = None
    n = gallery.num_items
    bar = tqdm(
        range(start, args.rounds),
        initial=start,
        total=args.rounds,
        desc="policy improvement",
        disable=not progress,
    )
    for rnd in bar:
        t0 = time.perf_counter()
        turns, candidate_sets, best_positions, alive, targets, gain = play_round(
            net, envs, args.candidates, seed=args.seed * 1_000_003 + rnd * args.num_envs
        )
        generator = torch.Generator().manual_seed(args.seed * 7919 + rnd)
        net.train()
        negatives_by_turn = []
        for _ in turns:
            negatives = torch.randint(0, n - 1, (args.num_envs, args.negatives), generator=generator)
            negatives += (negatives >= targets[:, None]).long()
            negatives_by_turn.append(negatives)
        items = UpdateItems(net, gallery, [targets, *candidate_sets, *negatives_by_turn])
        state = net.initial_state(args.num_envs)
        imitation, ranking = torch.zeros(()), torch.zeros(())
        for t, tensors in enumerate(turns):
            state, query = net.step(state, *tensors)
            mask = torch.as_tensor(alive[t], dtype=torch.float32)
            denominator = mask.sum().clamp_min(1.0)
            # Improve the policy among its own top-k only: re-order what it would show, rather
            # than drag the whole ranking towards a probe item that is not the target.
            logits = torch.einsum("bd,bkd->bk", query, items[candidate_sets[t]]) / args.tau
            per_row = F.cross_entropy(logits, best_positions[t], reduction="none")
            imitation = imitation + (per_row * mask).sum() / denominator
            ranking = (
                ranking
                + (triplet_loss(query, items, targets, args.margin, negatives_by_turn[t]) * mask).sum()
                / denominator
            )
        loss = (args.imitation_coef * imitation + args.ranking_coef * ranking) / len(turns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.eval()

        env_steps = (rnd + 1) * args.num_envs * args.max_turns  # TensorBoard's x axis
        writer.add_scalar("losses/imitation", imitation.item() / len(turns), env_steps)
        writer.add_scalar("losses/triplet", ranking.item() / len(turns), env_steps)
        writer.add_scalar("charts/lookahead_rank_gain", gain, env_steps)
        writer.add_scalar("charts/steps_per_second", int(alive.sum()) / (time.perf_counter() - t0), env_steps)
        bar.set_postfix(loss=f"{loss.item():.3f}", gain=f"{gain:.1f}")
        if (rnd + 1) % args.eval_every == 0 or rnd + 1 == args.rounds:
            result = evaluate_retriever(net, args, name="policy improvement")
            for name, value in result.scalars().items():
                writer.add_scalar(name, value, env_steps)
            save_retriever_run(args, envs, net, optimizer, rnd + 1, agent="policy improvement")
    writer.close()
    envs.close()
    return net, result


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Args:
    return parse_dataclass_args(
        Args, argv, "Model-based policy improvement of the dialog retriever.", prog=prog
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, result = train(parse_args(argv, prog))
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
