"""A CleanRL-style single-file PPO on the shortlist, on the public API only.

It uses ``gym.make_vec`` (the native vector env, ``NEXT_STEP`` autoreset), the observation
dict and the sealed evaluation harness to train, and :mod:`fiq_gym.checkpoint` to keep its run
directory and write its checkpoint; nothing else of fiq-gym. The policy scores each of
the K candidates with one shared MLP over (candidate features and attribute scores,
first-stage score, mean word embedding of the caption, shown item) and samples a slot.
The dialog ends at ``max_turns`` by the env's rules, so the last turn's value is 0 (no
bootstrap on truncation; see docs/agents.md).

    fiq-gym train cleanrl-ppo-shortlist --total-timesteps 200000 --out runs/cleanrl-ppo
    tensorboard --logdir runs/cleanrl-ppo/tb
    fiq-gym eval runs/cleanrl-ppo/checkpoint

``OUT/checkpoint`` holds the policy's weights (``model.safetensors``) and ``config.json``
(format ``fiq-gym-cleanrl-ppo-shortlist``), which ``fiq-gym eval``, ``play``, ``record`` and
``bench`` load. TensorBoard's x axis (``charts/``, ``losses/``, ``eval/``) is the env steps
taken so far, every sub-env's step counted, as Stable-Baselines3 counts them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401  (registers the ids)
from fiq_gym.checkpoint import CLEANRL_PPO_FORMAT, PolicyConfig, prepare_run, save_policy
from fiq_gym.env_config import trainer_env_kwargs
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, training_evaluation_seed
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.arguments import CatalogArgument, PathArgument, SpecArgument, parse_dataclass_args


@dataclass
class Args:
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    catalog: CatalogArgument | None = None
    """catalog directory (default: the built-in synthetic catalog)"""
    start: str = "uniform"
    """where dialogs start: uniform (a random target and first item) or annotated (a pair of the human captions of --start-split, on a catalog made by fiq-gym catalog import, so user=dataset answers turn 0 with human text); evaluations during training start the same way"""
    start_split: str = "train"
    """with --start annotated: the split whose annotated pairs start the dialogs (train to train; fiq-gym eval --start-split val to evaluate, as the papers do)"""
    shortlist_size: int = 32
    """K, the candidates per turn"""
    shortlist: SpecArgument = "retriever"
    """the first stage (retriever, retriever:DIR or random)"""
    explore: float = 0.0
    """fraction of random candidates"""
    num_envs: int = 16
    """dialogs in parallel"""
    num_steps: int = 32
    """steps per env per rollout"""
    total_timesteps: int = 100_000
    """environment steps to train for"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    update_epochs: int = 4
    """passes over each rollout"""
    num_minibatches: int = 4
    """minibatches per pass"""
    clip_coef: float = 0.2
    """PPO clip"""
    ent_coef: float = 0.0
    """entropy bonus"""
    vf_coef: float = 0.5
    """value loss weight"""
    seed: int = 0
    """seeds the dialogs and the weights"""
    eval_episodes: int = 256
    """dialogs in the final evaluation"""
    out: PathArgument = "runs/cleanrl-ppo-shortlist"
    """run directory: TensorBoard events in tb/, the policy in checkpoint/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it; these runs do not resume)"""


class Agent(nn.Module):
    """Slot logits and a value; ``config`` (its sizes) comes from the observation space
    (``PolicyConfig.for_space``) or from a checkpoint."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if config.shortlist_size is None:
            raise ValueError("the CleanRL PPO policy scores a shortlist: its config needs a shortlist_size")
        self.config = config
        self.k, self.d, self.a = config.shortlist_size, config.feature_dim, config.attribute_dim
        embed, hidden = config.embed_dim, config.hidden
        self.words = nn.Embedding(config.vocab_size, embed, padding_idx=0)
        self.item = nn.Sequential(nn.Linear(self.d + self.a, embed), nn.ReLU())
        self.score = nn.Sequential(nn.Linear(3 * embed + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.value = nn.Sequential(nn.Linear(2 * embed + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        b = obs["caption"].shape[0]
        tokens = obs["caption"].long()
        real = (tokens != 0).float().unsqueeze(-1)
        caption = (self.words(tokens) * real).sum(1) / real.sum(1).clamp_min(1)
        shown = self.item(torch.cat([obs["shown_features"], obs["shown_attributes"]], -1))
        cand = self.item(
            torch.cat(
                [
                    obs["candidate_features"].view(b, self.k, self.d),
                    obs["candidate_attributes"].view(b, self.k, self.a),
                ],
                -1,
            )
        )
        context = caption + shown
        first = obs["candidate_scores"].view(b, self.k, 1)
        logits = self.score(
            torch.cat([cand, cand * context[:, None], context[:, None].expand_as(cand), first], -1)
        )
        logits = logits.squeeze(-1).masked_fill(obs["candidate_mask"] == 0, -1e9)
        value = self.value(torch.cat([caption, shown, obs["turn"].float()], -1)).squeeze(-1)
        return logits, value


def to_tensors(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in obs.items()}


class Policy:
    """The trained network as a retrieval agent for the evaluation harness (greedy slot)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent.eval()

    def reset(self, observation: dict, info: dict, mask: np.ndarray) -> None:
        """Stateless."""

    @torch.no_grad()
    def act(self, observation: dict, info: dict) -> np.ndarray:
        logits, _ = self.agent(to_tensors(observation))
        return logits.argmax(-1).numpy()


def train(args: Args, progress: bool = True) -> tuple[Agent, EvaluationResult]:
    torch.manual_seed(args.seed)
    env_kwargs = trainer_env_kwargs(args, action_mode="shortlist")
    envs = gym.make_vec(
        args.env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point", **env_kwargs
    )
    out = Path(args.out)
    prepare_run(
        out,
        resume=False,
        resumable=False,
        overwrite=args.overwrite,
        state=out / "checkpoint",
        kind="cleanrl-ppo-shortlist",
    )
    writer = SummaryWriter(str(out / "tb"))
    config = PolicyConfig.for_space(envs.single_observation_space)
    agent = Agent(config)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    n, t_max = args.num_envs, args.num_steps
    updates = max(1, args.total_timesteps // (n * t_max))
    bar = tqdm(total=updates * n * t_max, desc="cleanrl-ppo-shortlist", unit="step", disable=not progress)
    obs_buf: list[dict[str, torch.Tensor]] = []
    actions, logprobs = torch.zeros(t_max, n, dtype=torch.long), torch.zeros(t_max, n)
    rewards, values = torch.zeros(t_max, n), torch.zeros(t_max, n)
    ends, valid = torch.zeros(t_max, n), torch.zeros(t_max, n)  # valid: not an autoreset step
    obs, _ = envs.reset(seed=args.seed)
    # A row that ended on the previous step is reset by this one (NEXT_STEP): its action is
    # ignored and its transition is not part of any dialog.
    pending_reset = np.zeros(n, dtype=bool)
    global_step, start = 0, time.time()
    for _update in range(updates):
        obs_buf.clear()
        for t in range(t_max):
            o = to_tensors(obs)
            obs_buf.append(o)
            with torch.no_grad():
                logits, value = agent(o)
            dist = Categorical(logits=logits)
            action = dist.sample()
            actions[t], logprobs[t], values[t] = action, dist.log_prob(action), value
            valid[t] = torch.as_tensor(~pending_reset, dtype=torch.float32)
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            done = terminated | truncated
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
            ends[t] = torch.as_tensor(done, dtype=torch.float32)  # the value after the last turn is 0
            pending_reset = done
            global_step += n
        # GAE over dialogs; autoreset steps (valid = 0) separate them and carry nothing.
        with torch.no_grad():
            _, next_value = agent(to_tensors(obs))
            advantages = torch.zeros(t_max, n)
            last = torch.zeros(n)
            for t in reversed(range(t_max)):
                nxt = next_value if t == t_max - 1 else values[t + 1]
                nonterminal = 1.0 - ends[t]
                delta = rewards[t] + args.gamma * nxt * nonterminal - values[t]
                last = (delta + args.gamma * args.gae_lambda * nonterminal * last) * valid[t]
                advantages[t] = last
            returns = advantages + values
        flat = {k: torch.cat([o[k] for o in obs_buf]) for k in obs_buf[0]}
        b_act, b_logp, b_adv = actions.reshape(-1), logprobs.reshape(-1), advantages.reshape(-1)
        b_ret, b_valid = returns.reshape(-1), valid.reshape(-1) > 0
        index = torch.nonzero(b_valid).squeeze(-1)
        # Normalised once over the rollout's real steps (a minibatch of one has no std).
        b_adv = (b_adv - b_adv[index].mean()) / (b_adv[index].std() + 1e-8)
        size = max(1, len(index) // args.num_minibatches)
        for _ in range(args.update_epochs):
            for mb in index[torch.randperm(len(index))].split(size):
                logits, value = agent({k: v[mb] for k, v in flat.items()})
                dist = Categorical(logits=logits)
                ratio = (dist.log_prob(b_act[mb]) - b_logp[mb]).exp()
                adv = b_adv[mb]
                pg_loss = torch.max(
                    -adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
                ).mean()
                v_loss = 0.5 * ((value - b_ret[mb]) ** 2).mean()
                loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * dist.entropy().mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optimizer.step()
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("charts/mean_reward", rewards[valid > 0].mean().item(), global_step)
        writer.add_scalar("charts/SPS", global_step / (time.time() - start), global_step)
        bar.update(n * t_max)
        bar.set_postfix(reward=f"{rewards[valid > 0].mean().item():.3f}")
    bar.close()
    turns = int(inner_env(envs).config.max_turns)
    envs.close()
    run_args = {**dataclasses.asdict(args), "action_mode": "shortlist", "max_turns": turns}
    save_policy(
        agent,
        config,
        out / "checkpoint",
        format=CLEANRL_PPO_FORMAT,
        agent="CleanRL PPO (shortlist)",
        args=run_args,
    )
    result = evaluate(
        Policy(agent),
        args.env_id,
        episodes=args.eval_episodes,
        seed=training_evaluation_seed(args.seed),
        name="CleanRL PPO (shortlist)",
        **env_kwargs,
    )
    for name, value in result.scalars().items():
        writer.add_scalar(name, value, global_step)
    writer.close()
    return agent, result


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_dataclass_args(Args, argv, "CleanRL-style PPO on the shortlist action mode.", prog=prog)
    _, result = train(args)
    print(result)


if __name__ == "__main__":
    main()
