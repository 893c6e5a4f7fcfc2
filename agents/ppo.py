"""Stable-Baselines3 PPO on the native vector env, with a caption features extractor.

Action mode: ``query``. The policy outputs a D-dimensional direction in the catalog's
feature space and the env ranks the items by it and shows the best unseen one. Why not the
others: ``index`` is a 10,000-way categorical that PPO would have to learn item by item,
with no notion that similar garments are near each other; ``scores`` is a 10,000-dimensional
Gaussian action, far beyond what PPO's exploration can search. ``query`` is small (D = the
feature size), continuous, and makes similar garments score alike, so a policy that maps
"is red with long sleeves" to a direction can generalise across targets.

    fiq-gym train ppo --timesteps 100000 --num-envs 16 --out runs/ppo

``--action-mode shortlist`` trains on the shortlist instead: the policy picks one of K
candidates proposed by the env's first stage, with :class:`~fiq_gym.agents.shortlist.ShortlistActorCriticPolicy`
(one shared network scores each candidate). docs/agents.md explains why ``query`` mode fails
and the shortlist does not.

    fiq-gym train ppo --action-mode shortlist --timesteps 200000 --out runs/ppo-shortlist

SB3's TensorBoard scalars are written under the tags every fiq-gym trainer uses
(:data:`SB3_TAGS`: ``rollout/`` and ``time/`` in ``charts/``, ``train/`` in ``losses/``),
with the final evaluation's ``eval/`` scalars; TensorBoard's x axis is SB3's own, the env
steps taken so far (``num_timesteps``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import get_latest_run_id
from stable_baselines3.common.vec_env import VecMonitor
from torch import nn

import fiq_gym  # noqa: F401
from fiq_gym.agents.sb3_state import SB3Predictor
from fiq_gym.agents.shortlist import SB3ShortlistAgent, ShortlistActorCriticPolicy
from fiq_gym.checkpoint import PPO_FORMAT, prepare_run, save_sb3_model
from fiq_gym.env_config import DialogFlags, ShortlistFlags, trainer_env_kwargs
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, training_evaluation_seed
from fiq_gym.envs.sb3 import make_sb3_vec_env
from fiq_gym.utils.arguments import PathArgument, parse_dataclass_args

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "SB3_TAGS",
    "Args",
    "CaptionFeaturesExtractor",
    "PPOAgent",
    "log_evaluation",
    "tensorboard_logger",
    "train",
]

#: SB3's TensorBoard tags renamed to those of fiq-gym's other trainers (RLlib's names for the
#: return and episode length, so the two engines' curves share a tag); the rest of
#: ``rollout/`` and ``time/`` go to ``charts/``, the rest of ``train/`` to ``losses/``.
SB3_TAGS = {
    "rollout/ep_rew_mean": "charts/episode_return_mean",
    "rollout/ep_len_mean": "charts/episode_len_mean",
    "time/fps": "charts/SPS",
    "train/policy_gradient_loss": "losses/policy_loss",
    "train/learning_rate": "charts/learning_rate",
    "train/n_updates": "charts/n_updates",
    "train/clip_range": "charts/clip_range",
    "train/std": "charts/std",
}
_SB3_PREFIXES = {"rollout/": "charts/", "time/": "charts/", "train/": "losses/"}


def _tag(key: str) -> str:
    if key in SB3_TAGS:
        return SB3_TAGS[key]
    for prefix, namespace in _SB3_PREFIXES.items():
        if key.startswith(prefix):
            return namespace + key[len(prefix) :]
    return key


class _RenamedTensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard output under fiq-gym's tags (:data:`SB3_TAGS`)."""

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        renamed = {_tag(k): v for k, v in key_values.items()}
        excluded = {_tag(k): v for k, v in key_excluded.items()}
        super().write(renamed, excluded, step)


def tensorboard_logger(tensorboard_log: str | os.PathLike, name: str) -> Logger:
    """An SB3 logger that writes TensorBoard events to ``tensorboard_log/NAME_<n>`` (the run
    folder SB3 itself would make) under fiq-gym's tags; ``model.set_logger`` takes it."""
    root = str(tensorboard_log)
    folder = os.path.join(root, f"{name}_{get_latest_run_id(root, name) + 1}")
    return Logger(folder, [_RenamedTensorBoard(folder)])


def log_evaluation(model: BaseAlgorithm, result: EvaluationResult) -> None:
    """Log ``result``'s ``eval/`` scalars at the env steps ``model`` has taken."""
    for name, value in result.scalars().items():
        model.logger.record(name, value)
    model.logger.dump(model.num_timesteps)


class CaptionFeaturesExtractor(BaseFeaturesExtractor):
    """Caption tokens -> mean of learned word embeddings; shown item -> MLP; concatenated.

    SB3 hands observations over as floats: the ``MultiDiscrete`` caption arrives one-hot,
    (B, L * V), and is embedded by a product with the embedding matrix.
    """

    def __init__(
        self, observation_space: gym.spaces.Dict, embed_dim: int = 64, features_dim: int = 128
    ) -> None:
        super().__init__(observation_space, features_dim)
        caption = cast(gym.spaces.MultiDiscrete, observation_space["caption"])
        boxes = cast("dict[str, gym.spaces.Box]", observation_space.spaces)  # all but the caption
        vocab = int(caption.nvec[0])
        self.vocab = vocab
        item_dim = boxes["shown_features"].shape[0] + boxes["shown_attributes"].shape[0]
        self.embedding = nn.Embedding(vocab, embed_dim, padding_idx=0)
        self.item = nn.Sequential(nn.Linear(item_dim, embed_dim), nn.ReLU())
        self.max_turns = float(np.max(boxes["turn"].high)) if "turn" in observation_space.spaces else 1.0
        self.head = nn.Sequential(nn.Linear(2 * embed_dim + 1, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        one_hot = observations["caption"].view(observations["caption"].shape[0], -1, self.vocab)
        mask = (1.0 - one_hot[..., :1]).float()  # id 0 is padding
        embedded = one_hot @ self.embedding.weight
        words = (embedded * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        item = self.item(
            torch.cat([observations["shown_features"], observations["shown_attributes"]], dim=-1)
        )
        turn = observations.get("turn", torch.zeros(words.shape[0], 1)) / self.max_turns
        return self.head(torch.cat([words, item, turn], dim=-1))


@dataclass
class Args(ShortlistFlags, DialogFlags):
    env_id: str = "fiq_gym/FashionIQ-v3"
    """registered environment id"""
    num_envs: int = 16
    """dialogs played in parallel (sub-envs of the native vector env)"""
    timesteps: int = 100_000
    """environment steps to train for"""
    action_mode: str = "query"
    """query (a Gaussian query in feature space), shortlist (pick one of K candidates) or shortlist_slate (show slate_size of the candidates at once)"""
    slate_size: int = 4
    """shortlist_slate mode: the candidates shown at once"""
    first_stage_gain: float = 0.0
    """shortlist mode: initial weight of the first stage's standardised scores in the policy's logits (0: start near uniform over the shortlist; a few units: near the greedy first stage)"""
    reward: str = "percentile"
    """env reward kind (see the env's docstring)"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    n_steps: int = 64
    """SB3: steps per sub-env between updates"""
    batch_size: int = 256
    """samples per gradient step"""
    n_epochs: int = 4
    """SB3: passes over each rollout"""
    ent_coef: float = 0.0
    """SB3: entropy coefficient"""
    log_std_init: float = -2.0
    """initial log std of the Gaussian policy: SB3's 0 makes early queries mostly noise"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the sampling"""
    eval_episodes: int = 256
    """dialogs in each evaluation (a fixed set from the seed)"""
    out: PathArgument = "runs/ppo"
    """run directory: TensorBoard events in tb/, the model in checkpoint/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it; PPO runs do not resume)"""
    threads: int = 1
    """torch threads; 1 is fastest for these small networks (more fight the env's numpy for cores); 0: torch's default"""


class PPOAgent:
    """A trained SB3 PPO model (or sb3-contrib's ``RecurrentPPO``, whose LSTM state it keeps
    through each dialog) as a batched :class:`~fiq_gym.envs.evaluation.RetrievalAgent`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.predictor = SB3Predictor(model)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Rows in ``mask`` begin a dialog (a recurrent policy's memory of them is cleared)."""
        self.predictor.reset(mask)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        keys = self.model.observation_space.spaces
        action = self.predictor.predict({k: observation[k] for k in keys})
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class ProgressCallback(BaseCallback):
    """A tqdm bar over timesteps (SB3's own bar needs the optional ``rich`` package)."""

    def __init__(self, total: int, desc: str = "ppo") -> None:
        super().__init__()
        self.total = total
        self.desc = desc
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        # SB3 stops at the first rollout boundary at or after the total (PPO collects n_steps
        # per env at a time, DQN train_freq): the bar's total is where it really stops.
        chunk = self.training_env.num_envs * int(
            getattr(self.model, "n_steps", 0)
            or getattr(getattr(self.model, "train_freq", None), "frequency", 1)
        )
        self.bar = tqdm(total=-(-self.total // chunk) * chunk, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
            if self.bar.total is not None and self.bar.n > self.bar.total:  # never past its end
                self.bar.total = self.bar.n
                self.bar.refresh()
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(args: Args, progress: bool = True) -> tuple[PPO, EvaluationResult]:
    shortlist = args.action_mode in SHORTLIST_MODES
    # Checked before the run directory is made: a wrong flag leaves nothing behind.
    if args.first_stage_gain and not shortlist:
        raise ValueError(
            f"--first-stage-gain applies to the shortlist's first stage, not action_mode={args.action_mode!r}: "
            "pass --action-mode shortlist, or drop it"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    prepare_run(
        out, resume=False, resumable=False, overwrite=args.overwrite, state=out / "checkpoint", kind="ppo"
    )
    env_kwargs = env_kwargs_of(args)
    # VecMonitor: SB3 logs rollout/ep_rew_mean and ep_len_mean to TensorBoard from it.
    vec_env = VecMonitor(make_sb3_vec_env(args.env_id, num_envs=args.num_envs, **env_kwargs))
    vec_env.seed(args.seed)
    policy_kwargs: dict[str, Any] = (
        {"features_extractor_kwargs": {"first_stage_gain": args.first_stage_gain}}
        if shortlist
        else {"features_extractor_class": CaptionFeaturesExtractor, "log_std_init": args.log_std_init}
    )
    model = PPO(
        ShortlistActorCriticPolicy if shortlist else "MultiInputPolicy",
        vec_env,
        learning_rate=args.learning_rate,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        ent_coef=args.ent_coef,
        seed=args.seed,
        device="cpu",
        policy_kwargs=policy_kwargs,
        verbose=0,
    )
    model.set_logger(tensorboard_logger(out / "tb", "ppo"))
    callback = ProgressCallback(args.timesteps) if progress else None
    model.learn(total_timesteps=args.timesteps, callback=callback)
    save(model, out / "checkpoint", args)
    vec_env.close()
    result = evaluate_model(model, args)
    log_evaluation(model, result)
    return model, result


#: The action modes with a first stage's candidates, where the shortlist policies act.
SHORTLIST_MODES = ("shortlist", "shortlist_slate")


def env_kwargs_of(args: Any, modes: tuple[str, ...] = ("query", *SHORTLIST_MODES)) -> dict[str, Any]:
    """The env arguments a PPO, DQN or RLlib run's ``args`` describe: every flag named as an
    env argument, where the env reads it (:func:`~fiq_gym.env_config.trainer_env_kwargs`: the
    shortlist's in the shortlist modes, the slate's size in ``shortlist_slate``); ``modes``:
    the action modes the trainer supports."""
    if args.action_mode not in modes:
        raise ValueError(f"--action-mode must be {' or '.join(modes)}, got {args.action_mode!r}")
    return trainer_env_kwargs(args)


def evaluate_model(model: Any, args: Any, name: str = "PPO") -> EvaluationResult:
    envs = gym.make_vec(
        args.env_id,
        num_envs=min(64, args.eval_episodes),
        vectorization_mode="vector_entry_point",
        **env_kwargs_of(args),
    )
    agent = SB3ShortlistAgent(model) if args.action_mode in SHORTLIST_MODES else PPOAgent(model)
    try:
        return evaluate(
            agent, envs, episodes=args.eval_episodes, seed=training_evaluation_seed(args.seed), name=name
        )
    finally:
        envs.close()


def save(model: PPO, directory: Path, args: Args) -> Path:
    """The run's checkpoint: SB3's zip, the policy as safetensors and the arguments."""
    return save_sb3_model(model, directory, format=PPO_FORMAT, agent="PPO", args=dataclasses.asdict(args))


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Args:
    return parse_dataclass_args(
        Args, argv, "Train Stable-Baselines3 PPO on the native vector env.", prog=prog
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, result = train(parse_args(argv, prog))
    print(result)


if __name__ == "__main__":
    main()
