"""Behaviour cloning from a Minari dataset: the offline-RL starting point, in one file.

Read a dataset that ``fiq-gym record`` wrote, fit a small policy to its (observation ->
action) pairs by cross-entropy, and evaluate it with the sealed harness on the env the dataset
was recorded in (the dataset's env spec rebuilds it). The dataset must be of the ``shortlist``
action mode (``Discrete(K)``: pick one of K candidates), the mode offline and off-the-shelf
agents learn in. Needs the offline extra: ``pip install -e ".[offline]"``.

    fiq-gym record --agent greedy --episodes 2000 --out datasets
    fiq-gym train behaviour-cloning --dataset-id fiq_gym/FashionIQ-v3/greedy-shortlist-v0 \\
        --datasets-path datasets --out runs/bc
    tensorboard --logdir runs/bc/tb
    fiq-gym eval runs/bc/checkpoint

The policy scores each candidate slot with one shared MLP (so the order of the slots does not
matter) over the candidate's features and attribute scores, its first-stage score and the
dialog context (mean word embedding of the caption, the shown item); the action is the
best-scored valid slot.

``OUT/checkpoint`` holds the policy's weights (``model.safetensors``) and ``config.json``
(format ``fiq-gym-behaviour-cloning``, with the recorded env's settings among its ``args``),
which ``fiq-gym eval``, ``play``, ``record`` and ``bench`` load. Training takes no env steps:
TensorBoard's x axis (``charts/``, ``losses/``, ``eval/``) is the recorded env steps
(transitions) trained on so far, epochs x the dataset's transitions.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import fiq_gym  # noqa: F401  (registers the ids)
from fiq_gym.checkpoint import BEHAVIOUR_CLONING_FORMAT, PolicyConfig, prepare_run, save_policy
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, training_evaluation_seed
from fiq_gym.envs.offline import open_dataset
from fiq_gym.envs.registration import EARLIER_RELEASE, EARLIER_VERSION, successor_env_id
from fiq_gym.utils.arguments import PathArgument, parse_dataclass_args

if TYPE_CHECKING:  # the import above already needs Minari; this is for the annotations
    from minari import MinariDataset

__all__ = ["Args", "BCAgent", "SlotPolicy", "load_transitions", "train"]

#: The recorded env's arguments a checkpoint keeps (with its id), so that ``fiq-gym eval``
#: rebuilds the env the dataset was recorded in.
ENV_SETTINGS = ("catalog", "user", "max_turns", "shortlist_size", "shortlist", "explore")


@dataclass
class Args:
    dataset_id: str = "fiq_gym/FashionIQ-v3/greedy-shortlist-v0"
    """Minari dataset id (written by fiq-gym record, shortlist action mode)"""
    datasets_path: PathArgument | None = None
    """Minari datasets root that holds it (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)"""
    epochs: int = 20
    """passes over the dataset"""
    batch_size: int = 256
    """transitions per gradient step"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    embed_dim: int = 64
    """word and item embedding size"""
    hidden: int = 128
    """hidden units of the slot scorer"""
    seed: int = 0
    """seeds the weights and the minibatch order"""
    eval_episodes: int = 500
    """dialogs of the final evaluation (0: skip it)"""
    eval_seed: int | None = None
    """seed of the evaluation set (default: 10000 + --seed, the set every trainer evaluates on; the recording's dialogs come from another stream)"""
    num_envs: int = 64
    """dialogs evaluated in parallel"""
    sealed: bool = True
    """evaluate with the env in another process (the published protocol)"""
    out: PathArgument = "runs/behaviour-cloning"
    """run directory: TensorBoard events in tb/, the policy in checkpoint/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it)"""


class SlotPolicy(nn.Module):
    """One logit per candidate slot; empty slots (``candidate_mask`` 0) get -1e9.

    ``config``: its sizes, from the observation space (``PolicyConfig.for_space``) or from a
    checkpoint."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if config.shortlist_size is None:
            raise ValueError(
                "the behaviour-cloning policy scores a shortlist: its config needs a shortlist_size"
            )
        self.config = config
        self.k, self.d, self.a = config.shortlist_size, config.feature_dim, config.attribute_dim
        embed, hidden = config.embed_dim, config.hidden
        self.words = nn.Embedding(config.vocab_size, embed, padding_idx=0)
        self.item = nn.Sequential(nn.Linear(self.d + self.a, embed), nn.ReLU())
        self.score = nn.Sequential(nn.Linear(3 * embed + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.first_stage_gain = nn.Parameter(torch.zeros(()))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        b = obs["caption"].shape[0]
        tokens = obs["caption"].long()
        real = (tokens != 0).float().unsqueeze(-1)  # id 0 is padding
        caption = (self.words(tokens) * real).sum(1) / real.sum(1).clamp_min(1)
        shown = self.item(torch.cat([obs["shown_features"], obs["shown_attributes"]], -1).float())
        cand = torch.cat(
            [
                obs["candidate_features"].view(b, self.k, self.d),
                obs["candidate_attributes"].view(b, self.k, self.a),
            ],
            -1,
        )
        cand = self.item(cand.float())
        context = (caption + shown)[:, None].expand_as(cand)
        # First-stage scores standardised within each shortlist (their scale differs between
        # first stages), as an input and through a learned gain: trusting the first stage is
        # one weight away, whatever the candidates are.
        valid = obs["candidate_mask"].view(b, self.k) > 0
        first = obs["candidate_scores"].view(b, self.k).float()
        count = valid.sum(1, keepdim=True).clamp_min(1)
        mean = (first * valid).sum(1, keepdim=True) / count
        std = (((first - mean) * valid) ** 2).sum(1, keepdim=True).div(count).sqrt().clamp_min(1e-6)
        z = (first - mean) / std * valid
        logits = self.score(torch.cat([cand, cand * context, context, z[..., None]], -1)).squeeze(-1)
        return (logits + self.first_stage_gain * z).masked_fill(~valid, -1e9)


KEYS = (
    "caption",
    "shown_features",
    "shown_attributes",
    *(f"candidate_{k}" for k in ("features", "attributes", "scores", "mask")),
)


def load_transitions(dataset: MinariDataset) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every step of every episode: the observation the agent acted on (all but the episode's
    last observation) and the action it took."""
    obs: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    actions = []
    for episode in dataset.iterate_episodes():
        for k in KEYS:
            obs[k].append(episode.observations[k][:-1])
        actions.append(episode.actions)
    return {k: torch.as_tensor(np.concatenate(v)) for k, v in obs.items()}, torch.as_tensor(
        np.concatenate(actions)
    )


class BCAgent:
    """The trained policy as a retrieval agent for the evaluation harness (best valid slot)."""

    def __init__(self, policy: SlotPolicy) -> None:
        self.policy = policy.eval()

    def reset(self, observation: dict, info: dict, mask: np.ndarray) -> None:
        """Stateless: the shortlist and the caption are in the observation."""

    @torch.no_grad()
    def act(self, observation: dict, info: dict) -> np.ndarray:
        return self.policy({k: torch.as_tensor(observation[k]) for k in KEYS}).argmax(-1).numpy()


def train(args: Args, progress: bool = True) -> tuple[SlotPolicy, EvaluationResult | None]:
    torch.manual_seed(args.seed)
    dataset = open_dataset(args.dataset_id, args.datasets_path)
    spec = dataset.env_spec
    if spec is None or spec.kwargs.get("action_mode") != "shortlist":
        raise ValueError(
            f"{args.dataset_id} was not recorded in the shortlist action mode (or has no env spec); this example "
            "clones Discrete(K) shortlist actions: record with `fiq-gym record --action-mode shortlist`"
        )
    successor = successor_env_id(spec.id)
    if successor is not None:
        raise ValueError(
            f"{args.dataset_id} was recorded on {spec.id}, {EARLIER_VERSION}: record it again on {successor} "
            f"(fiq-gym record --env-id {successor} --action-mode shortlist ...), or use {EARLIER_RELEASE}"
        )
    obs, actions = load_transitions(dataset)
    n = len(actions)
    out = Path(args.out)
    prepare_run(
        out,
        resume=False,
        resumable=False,
        overwrite=args.overwrite,
        state=out / "checkpoint",
        kind="behaviour-cloning",
    )
    print(f"{args.dataset_id}: {dataset.total_episodes} episodes, {n} transitions")
    writer = SummaryWriter(str(out / "tb"))
    config = PolicyConfig.for_space(dataset.observation_space, embed_dim=args.embed_dim, hidden=args.hidden)
    policy = SlotPolicy(config)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(args.seed)
    # The run's checkpoint keeps the recorded env's settings, so it plays where it was recorded.
    eval_seed = training_evaluation_seed(args.seed) if args.eval_seed is None else args.eval_seed
    recorded = {k: spec.kwargs[k] for k in ENV_SETTINGS if k in spec.kwargs}
    run_args: dict[str, Any] = {
        **dataclasses.asdict(args),
        "eval_seed": eval_seed,
        "env_id": spec.id,
        "action_mode": "shortlist",
        **recorded,
    }
    bar = tqdm(total=args.epochs * n, desc="behaviour-cloning", unit="transition", disable=not progress)
    step, start = 0, time.time()
    for epoch in range(args.epochs):
        total_loss, correct = 0.0, 0
        for batch in torch.randperm(n, generator=generator).split(args.batch_size):
            logits = policy({k: v[batch] for k, v in obs.items()})
            loss = F.cross_entropy(logits, actions[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(-1) == actions[batch]).sum())
            step += len(batch)  # transitions trained on: TensorBoard's x axis
            bar.update(len(batch))
        writer.add_scalar("losses/cross_entropy", total_loss / n, step)
        writer.add_scalar("charts/action_accuracy", correct / n, step)  # agreement with the dataset
        writer.add_scalar("charts/seconds", time.time() - start, step)
        bar.write(
            f"epoch {epoch + 1}/{args.epochs}: loss {total_loss / n:.4f}, action accuracy {correct / n:.3f}"
        )
    bar.close()
    policy.eval()
    save_policy(
        policy,
        config,
        out / "checkpoint",
        format=BEHAVIOUR_CLONING_FORMAT,
        agent="behaviour cloning",
        args=run_args,
    )
    result = None
    if args.eval_episodes > 0:
        env_kwargs = dict(spec.kwargs)
        result = evaluate(
            BCAgent(policy),
            spec.id,
            episodes=args.eval_episodes,
            seed=eval_seed,
            sealed=args.sealed,
            num_envs=min(args.num_envs, args.eval_episodes),
            name="behaviour cloning",
            **env_kwargs,
        )
        for name, value in result.scalars().items():
            writer.add_scalar(name, value, step)
    writer.close()
    return policy, result


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_dataclass_args(
        Args, argv, "Behaviour cloning from a Minari dataset (shortlist mode).", prog=prog
    )
    _, result = train(args)
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
