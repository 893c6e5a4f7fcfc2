"""Policy-gradient fine-tuning of the dialog retriever (REINFORCE with a baseline),
CleanRL style: read top to bottom.

The policy samples the item to show from a softmax over the retriever's cosine scores of
its top-k items not yet shown (temperature ``tau``), and learns from the environment's rank-based
reward with a running per-turn baseline and an entropy bonus. It usually starts from a
supervised checkpoint (``--init``), as in Guo et al. (NeurIPS 2018).

    fiq-gym train policy-gradient --init runs/supervised/checkpoint --rounds 200

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

import fiq_gym  # noqa: F401
from fiq_gym.agents.loading import save_retriever_run, start_retriever_run
from fiq_gym.agents.retriever import (
    RetrieverNet,
    UpdateItems,
    evaluate_retriever,
    gallery_tensors,
    observation_tensors,
)
from fiq_gym.env_config import DialogFlags, trainer_env_kwargs
from fiq_gym.envs.evaluation import EvaluationResult
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.arguments import PathArgument, parse_dataclass_args

__all__ = ["Args", "train"]


@dataclass
class Args(DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    init: PathArgument | None = None
    """supervised checkpoint to fine-tune (random weights if not given)"""
    num_envs: int = 32
    """dialogs played in parallel (sub-envs of the native vector env)"""
    rounds: int = 200
    """training rounds; each plays num_envs dialogs"""
    reward: str = "delta"
    """env reward: delta (default), percentile or success"""
    learning_rate: float = 1e-4
    """Adam learning rate"""
    tau: float = 0.05
    """softmax temperature over cosine scores"""
    candidates: int = 5
    """k: the policy samples among the top-k unseen items"""
    gamma: float = 1.0
    """discount of later turns' rewards"""
    entropy_coef: float = 0.01
    """weight of the entropy bonus"""
    baseline_momentum: float = 0.9
    """momentum of the running per-turn reward baseline"""
    embed_dim: int = 128
    """width of the retriever's text, image and state embeddings"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the sampling"""
    eval_episodes: int = 256
    """dialogs in each evaluation (a fixed set from the seed)"""
    eval_every: int = 100
    """rounds between evaluations (and checkpoints)"""
    out: PathArgument = "runs/policy_gradient"
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
        **trainer_env_kwargs(args, action_mode="scores"),
    )


def masked_logits(query: torch.Tensor, items: torch.Tensor, shown: torch.Tensor, tau: float) -> torch.Tensor:
    """Logits over items; items already shown in a dialog get -inf."""
    logits = (query @ items.T) / tau
    return logits.masked_fill(shown, float("-inf"))


def play_round(
    net: RetrieverNet, envs: gym.vector.VectorEnv, tau: float, k: int, seed: int, generator: torch.Generator
) -> tuple[
    list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    list[torch.Tensor],
    list[torch.Tensor],
    np.ndarray,
    np.ndarray,
    np.ndarray,
]:
    """Sample one dialog per sub-env from the policy over each turn's top-k unseen items;
    return what replaying it needs."""
    b = envs.num_envs
    n = inner_env(envs).num_items
    obs, info = envs.reset(seed=seed)
    shown = torch.zeros(b, n, dtype=torch.bool)
    shown[torch.arange(b), torch.as_tensor(info["shown"])] = True
    turns, candidate_sets, positions, rewards, alive_by_turn, successes = [], [], [], [], [], []
    alive = np.ones(b, dtype=bool)
    with torch.no_grad():
        items = net.encode_items(*gallery_tensors(inner_env(envs).gallery))
        state = net.initial_state(b)
        for _ in range(inner_env(envs).config.max_turns):
            tensors = observation_tensors(obs)
            state, query = net.step(state, *tensors)
            logits = masked_logits(query, items, shown, tau)
            candidates = logits.topk(k, dim=1).indices
            position = torch.multinomial(
                torch.softmax(logits.gather(1, candidates), dim=-1), 1, generator=generator
            ).squeeze(1)
            action = candidates.gather(1, position[:, None]).squeeze(1)
            # The env shows the best unseen item: give the sampled one the top score.
            scores = (query @ items.T).clamp(-1.0, 0.9999)
            scores[torch.arange(b), action] = 1.0
            turns.append(tensors)
            candidate_sets.append(candidates)
            positions.append(position)
            alive_by_turn.append(alive.copy())
            obs, reward, terminated, truncated, info = envs.step(scores.numpy())
            rewards.append(np.where(alive, reward, 0.0))
            successes.append(alive & info["is_success"])
            shown[torch.arange(b), action] = True
            alive &= ~(terminated | truncated)
    return turns, candidate_sets, positions, np.array(rewards), np.array(alive_by_turn), np.array(successes)


def action_returns(rewards: np.ndarray, success: np.ndarray, gamma: float) -> np.ndarray:
    """Credit for the item shown at each turn (T x B).

    The reward of turn t mostly reflects the scores the retriever had *before* seeing what
    the shopper says about item a_t; a_t itself shapes only the turns after it. So a_t is
    credited with the discounted rewards of the later turns, plus its own turn's reward
    when it was the target (the dialog ends there).
    """
    later = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        later[t] = running
        running = rewards[t] + gamma * running
    return np.where(success, rewards, 0.0) + gamma * later


def train(args: Args, progress: bool = True) -> tuple[RetrieverNet, EvaluationResult | None]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    envs = make_envs(args, args.num_envs)
    gallery = inner_env(envs).gallery
    net, optimizer, start, record = start_retriever_run(args, envs)
    baseline = np.asarray(record.get("baseline", np.zeros(args.max_turns)), dtype=np.float64)
    writer = SummaryWriter(str(out / "tb"))
    writer.add_text("args", str(dataclasses.asdict(args)))
    result = None
    bar = tqdm(
        range(start, args.rounds),
        initial=start,
        total=args.rounds,
        desc="policy gradient",
        disable=not progress,
    )
    for rnd in bar:
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(args.seed * 7919 + rnd)
        turns, candidate_sets, positions, rewards, alive, success = play_round(
            net,
            envs,
            args.tau,
            args.candidates,
            seed=args.seed * 1_000_003 + rnd * args.num_envs,
            generator=generator,
        )
        # Credit per shown item, and a running per-turn baseline.
        returns = action_returns(rewards, success, args.gamma)
        for t in range(len(rewards)):
            if alive[t].any():
                mean_return = returns[t][alive[t]].mean()
                baseline[t] = (
                    args.baseline_momentum * baseline[t] + (1 - args.baseline_momentum) * mean_return
                )
        advantages = torch.as_tensor(returns - baseline[: len(rewards), None], dtype=torch.float32)

        net.train()
        items = UpdateItems(net, gallery, list(candidate_sets))
        state = net.initial_state(args.num_envs)
        policy_loss = torch.zeros(())
        entropy_sum = torch.zeros(())
        count = max(1, int(alive.sum()))
        for t, tensors in enumerate(turns):
            state, query = net.step(state, *tensors)
            # The policy over this turn's top-k: its gradient re-orders what the retriever would
            # show next, instead of pulling the whole ranking towards probe items.
            logits = torch.einsum("bd,bkd->bk", query, items[candidate_sets[t]]) / args.tau
            log_probs = torch.log_softmax(logits, dim=-1)
            chosen = log_probs.gather(1, positions[t][:, None]).squeeze(1)
            mask = torch.as_tensor(alive[t], dtype=torch.float32)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            policy_loss = policy_loss - (chosen * advantages[t] * mask).sum() / count
            entropy_sum = entropy_sum + (entropy * mask).sum() / count
        loss = policy_loss - args.entropy_coef * entropy_sum
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.eval()

        env_steps = (rnd + 1) * args.num_envs * args.max_turns  # TensorBoard's x axis
        writer.add_scalar("losses/policy", policy_loss.item(), env_steps)
        writer.add_scalar("losses/entropy", entropy_sum.item(), env_steps)
        writer.add_scalar("charts/episodic_return", float(rewards.sum(0).mean()), env_steps)
        writer.add_scalar("charts/steps_per_second", int(alive.sum()) / (time.perf_counter() - t0), env_steps)
        bar.set_postfix(ret=f"{rewards.sum(0).mean():.3f}")
        if (rnd + 1) % args.eval_every == 0 or rnd + 1 == args.rounds:
            result = evaluate_retriever(net, args, name="policy gradient")
            for name, value in result.scalars().items():
                writer.add_scalar(name, value, env_steps)
            save_retriever_run(
                args,
                envs,
                net,
                optimizer,
                rnd + 1,
                agent="policy gradient",
                extra_state={"baseline": baseline.tolist()},
            )
    writer.close()
    envs.close()
    return net, result


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Args:
    return parse_dataclass_args(Args, argv, "Fine-tune the dialog retriever with REINFORCE.", prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, result = train(parse_args(argv, prog))
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
