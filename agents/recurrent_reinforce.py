"""A recurrent REINFORCE retriever in one file, on fiq-gym's public API only (CleanRL style).

Reads top to bottom: arguments, the policy, the training loop, the evaluation. It uses
nothing but what any Gymnasium user has: ``gym.make_vec("fiq_gym/FashionIQ-v3", ...)``, the
observation dict, ``env.unwrapped.gallery`` (the items' features, which a retrieval system
knows) and :func:`fiq_gym.envs.evaluation.evaluate`. No target, no look-ahead, rewards only.

* Action mode ``query``: the policy outputs a query in feature space; the env ranks every
  item by its dot product with the query and shows the best one not yet shown.
* Policy: a GRU over turns reads each caption (mean of word embeddings; token ids come as a
  ``MultiDiscrete`` space, id 0 is padding) and the shown item's features and attribute scores;
  the query is a Gaussian around ``tanh(linear(hidden))``.
* Learning: REINFORCE on the ``percentile`` reward (the return is the benchmark's summed
  percentile), discounted with ``gamma``, advantages normalised per turn; the steps after a
  dialog ended (the vector env auto-resets it on the next step) are masked out.

Run: ``fiq-gym train recurrent-reinforce --minutes 15`` (or ``python -m
fiq_gym.agents.recurrent_reinforce``); TensorBoard scalars go to ``OUT/tb``, the evaluation
curve to ``OUT/curve.csv`` and the policy, at each evaluation, to ``OUT/checkpoint``
(``model.safetensors`` and ``config.json`` of format ``fiq-gym-recurrent-reinforce``, which
``fiq-gym eval``, ``play``, ``record`` and ``bench`` load; :mod:`fiq_gym.checkpoint` writes it
and keeps the run directory). TensorBoard's x axis (``charts/``, ``losses/``, ``eval/``) is the
env steps taken so far (``num_envs`` x ``max_turns`` per update, as Stable-Baselines3 counts
them). docs/rl.md reports its measured curve.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.checkpoint import RECURRENT_REINFORCE_FORMAT, PolicyConfig, prepare_run, save_policy
from fiq_gym.env_config import DialogFlags, trainer_env_kwargs
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, training_evaluation_seed
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.arguments import PathArgument, parse_dataclass_args

__all__ = ["Args", "RecurrentPolicy", "RecurrentQueryAgent", "main", "train"]


@dataclass
class Args(DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    num_envs: int = 256
    """dialogs played in parallel per update"""
    minutes: float = 15.0
    """wall-clock training budget"""
    updates: int = 100_000
    """at most this many updates (the time budget usually ends training first)"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    gamma: float = 0.0
    """discount of later turns' rewards in each action's return (0: each query is judged by the
    rank it gives at once, which learned fastest here; 0.5 with lr 3e-3 stalled near R@10 0.03)"""
    hidden: int = 128
    """GRU state size"""
    embed_dim: int = 64
    """word and item embedding size"""
    init_log_std: float = -1.5
    """initial log standard deviation of the Gaussian query"""
    entropy_coef: float = 0.0
    """weight of the policy's entropy in the loss"""
    eval_every_seconds: float = 60.0
    """evaluate (and log a curve point) this often"""
    eval_episodes: int = 500
    """dialogs of the fixed evaluation set"""
    seed: int = 0
    """seed of the network and the training dialogs"""
    threads: int = 1
    """torch CPU threads"""
    out: PathArgument = "runs/recurrent-reinforce"
    """output directory: curve.csv, checkpoint/, tb/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it; these runs do not resume)"""


class RecurrentPolicy(nn.Module):
    """Caption + shown item -> GRU state -> Gaussian query over the feature space.

    ``config``: its sizes, from the observation space (``PolicyConfig.for_space``, with the
    run's ``embed_dim`` and ``hidden``) or from a checkpoint."""

    def __init__(self, config: PolicyConfig, init_log_std: float = -1.5) -> None:
        super().__init__()
        self.config = config
        embed, feature_dim = config.embed_dim, config.feature_dim
        self.embedding = nn.Embedding(config.vocab_size, embed, padding_idx=0)
        self.item = nn.Sequential(nn.Linear(feature_dim + config.attribute_dim, embed), nn.ReLU())
        self.gru = nn.GRUCell(2 * embed, config.hidden)
        self.query = nn.Linear(config.hidden, feature_dim)
        self.log_std = nn.Parameter(torch.full((feature_dim,), init_log_std))

    def step(self, hidden: torch.Tensor, obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Read one observation per row; return the new hidden state and the query mean."""
        tokens = torch.as_tensor(obs["caption"], dtype=torch.long)
        mask = (tokens != 0).float().unsqueeze(-1)
        words = (self.embedding(tokens) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        shown = torch.cat(
            [torch.as_tensor(obs["shown_features"]), torch.as_tensor(obs["shown_attributes"])], dim=-1
        )
        hidden = self.gru(torch.cat([words, self.item(shown)], dim=-1), hidden)
        return hidden, torch.tanh(self.query(hidden))


class RecurrentQueryAgent:
    """The trained policy as a batched :class:`~fiq_gym.envs.evaluation.RetrievalAgent` (mean query).

    Its GRU state (``hidden``, one row per dialog) carries a dialog's turns, and starts afresh
    where a dialog starts: the rows ``reset`` names, and rows at turn 0 in ``act``."""

    def __init__(self, policy: RecurrentPolicy) -> None:
        self.policy = policy
        self.hidden = torch.zeros(0, policy.config.hidden)

    def _rows(self, b: int) -> None:
        if self.hidden.shape[0] != b:  # a batch of another size: every row a new dialog
            self.hidden = torch.zeros(b, self.policy.config.hidden)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        self._rows(len(mask))
        self.hidden[torch.as_tensor(mask)] = 0.0

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        # A vector env auto-resets finished rows and still asks for their action: turn 0
        # marks a new dialog, so its memory starts afresh.
        turn = observation["turn"] if "turn" in observation else info["dialog_turn"]
        fresh = torch.as_tensor(np.asarray(turn).reshape(-1) == 0)
        self._rows(len(fresh))
        self.hidden[fresh] = 0.0
        with torch.no_grad():
            self.hidden, mean = self.policy.step(self.hidden, observation)
        return mean.numpy().astype(np.float32)


def make_envs(args: Args, num_envs: int) -> gym.vector.VectorEnv:
    return gym.make_vec(
        args.env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        **trainer_env_kwargs(
            args,
            action_mode="query",
            reward="percentile",
            observation_keys=("caption", "shown_features", "shown_attributes", "turn"),
        ),
    )


def run_evaluation(policy: RecurrentPolicy, args: Args) -> EvaluationResult:
    envs = make_envs(args, min(100, args.eval_episodes))
    try:
        agent = RecurrentQueryAgent(policy)
        return evaluate(
            agent,
            envs,
            episodes=args.eval_episodes,
            seed=training_evaluation_seed(args.seed),
            name="recurrent-reinforce",
        )
    finally:
        envs.close()


def train(args: Args, progress: bool = True) -> tuple[RecurrentPolicy, list[dict[str, float]]]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    envs = make_envs(args, args.num_envs)
    prepare_run(
        out,
        resume=False,
        resumable=False,
        overwrite=args.overwrite,
        state=out / "checkpoint",
        kind="recurrent-reinforce",
    )
    writer = SummaryWriter(str(out / "tb"))
    writer.add_text("args", json.dumps(dataclasses.asdict(args)))
    config = PolicyConfig.for_space(
        envs.single_observation_space, embed_dim=args.embed_dim, hidden=args.hidden
    )
    turns = int(inner_env(envs).config.max_turns)
    policy = RecurrentPolicy(config, args.init_log_std)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    run_args = {**dataclasses.asdict(args), "action_mode": "query", "max_turns": turns}
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    last_eval = -np.inf
    episodes = 0
    env_steps = 0  # every sub-env's steps, as SB3 counts them: TensorBoard's x axis
    # Training ends at the first of two budgets (minutes, updates): the bar shows the nearer.
    bar = tqdm(
        total=100.0,
        desc="recurrent-reinforce",
        bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}{postfix}]",
        disable=not progress,
    )

    def record(update: int) -> None:
        result = run_evaluation(policy, args)
        row = result.per_turn()[-1]
        point = {
            "seconds": round(time.perf_counter() - start, 1),
            "episodes": episodes,
            "update": update,
            "R@10": row["R@10"],
            "R@50": row["R@50"],
            "mean_percentile": row["mean_percentile"],
            "success_rate": row["success_rate"],
            "env_steps": env_steps,
        }
        curve.append(point)
        for name, value in result.scalars().items():
            writer.add_scalar(name, value, env_steps)
        save_policy(
            policy,
            config,
            out / "checkpoint",
            format=RECURRENT_REINFORCE_FORMAT,
            agent="recurrent REINFORCE",
            args=run_args,
        )
        tqdm.write(json.dumps(point))

    trained = 0  # updates done so far
    for update in range(1, args.updates + 1):
        elapsed = time.perf_counter() - start
        budget = args.minutes * 60
        bar.update(
            100.0 * min(1.0, max(elapsed / budget if budget > 0 else 1.0, trained / args.updates)) - bar.n
        )
        if elapsed - last_eval >= args.eval_every_seconds:
            record(trained)
            last_eval = elapsed
        if elapsed >= budget:
            break
        # --- play num_envs dialogs of up to `turns` turns ---------------------------------
        obs, _ = envs.reset(seed=args.seed * 1_000_003 + update * args.num_envs)
        hidden = torch.zeros(args.num_envs, args.hidden)
        alive = np.ones(args.num_envs, dtype=bool)
        log_probs, rewards, masks, entropies = [], [], [], []
        for _ in range(turns):
            hidden, mean = policy.step(hidden, obs)
            dist = torch.distributions.Normal(mean, policy.log_std.exp())
            action = dist.sample()
            log_probs.append(dist.log_prob(action).sum(-1))
            entropies.append(dist.entropy().sum(-1))
            obs, reward, terminated, truncated, _ = envs.step(action.clamp(-1, 1).numpy().astype(np.float32))
            rewards.append(torch.as_tensor(reward * alive, dtype=torch.float32))
            masks.append(torch.as_tensor(alive, dtype=torch.float32))
            alive = alive & ~(terminated | truncated)  # later steps of a finished dialog do not count
        episodes += args.num_envs
        env_steps += args.num_envs * turns
        # --- REINFORCE with per-turn normalised advantages -------------------------------
        r, m = torch.stack(rewards), torch.stack(masks)  # (T, B)
        returns = torch.zeros_like(r)
        running = torch.zeros(args.num_envs)
        for t in reversed(range(turns)):
            running = r[t] + args.gamma * running * m[t]
            returns[t] = running
        adv = torch.zeros_like(returns)
        for t in range(turns):
            live = m[t] > 0
            if live.sum() > 1:
                x = returns[t][live]
                adv[t][live] = (x - x.mean()) / (x.std() + 1e-6)
        lp, ent = torch.stack(log_probs), torch.stack(entropies)
        loss = -(adv * lp * m).sum() / m.sum() - args.entropy_coef * (ent * m).sum() / m.sum()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        trained = update
        episodic_return = float((r * m).sum(0).mean())
        writer.add_scalar("charts/episodic_return", episodic_return, env_steps)
        writer.add_scalar("charts/log_std", policy.log_std.mean().item(), env_steps)
        writer.add_scalar("losses/policy_loss", loss.item(), env_steps)
        bar.set_postfix(updates=trained, ret=f"{episodic_return:.3f}")
    if curve[-1]["update"] != trained:
        record(trained)
    bar.update(100.0 - bar.n)
    bar.close()
    envs.close()
    writer.close()
    with open(out / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)
    return policy, curve


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_dataclass_args(
        Args, argv, "Train a recurrent REINFORCE retriever on fiq_gym/FashionIQ-v3 (query mode).", prog=prog
    )
    _, curve = train(args)
    print(f"final: R@10 at the last turn {curve[-1]['R@10']:.3f} after {curve[-1]['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
