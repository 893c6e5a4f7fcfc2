"""What the dialog benchmark runs: its agents (from the agent registry), the comparisons every
report makes, the per-turn metrics and the presets (budgets, seeds, dialogs, shoppers)."""

from __future__ import annotations

from dataclasses import dataclass

from fiq_gym.agents import registry
from fiq_gym.agents.registry import BenchRole
from fiq_gym.envs.evaluation import RECALL_KS

__all__ = [
    "COMPARISONS",
    "METRICS",
    "PRESETS",
    "Preset",
    "bench_agents",
    "controls",
    "references",
    "role_of",
    "shortlist_agents",
    "untrained",
]


# The benchmark's agents are the registered agents with a bench role
# (fiq_gym.agents.registry.BenchRole), in registration order: the order of the report's rows.
# Each list below is read from the registry when asked, so an agent registered later is in it.


def bench_agents() -> tuple[str, ...]:
    """Every agent the benchmark can run (``AGENTS``), in the order of its reports."""
    return registry.bench_agents()


def role_of(name: str) -> BenchRole:
    """Agent ``name``'s part in the benchmark (its registered bench role)."""
    role = registry.get(name).bench
    if role is None:
        raise ValueError(f"{name!r} is not a benchmark agent; choose from {list(bench_agents())}")
    return role


def _with(*roles: str) -> tuple[str, ...]:
    return tuple(a for a in bench_agents() if role_of(a).role in roles)


def references() -> tuple[str, ...]:
    """The reference agents (``REFERENCES``): the Bayesian reader of the shopper's captions
    (fiq_gym.agents.posterior), showing the most probable item or planning one step; the
    better is each table's ceiling. They need the shipped features (their readout's inputs);
    on other catalogs they are skipped."""
    return _with("reference")


def untrained() -> tuple[str, ...]:
    """Agents that need no training (``UNTRAINED``): they play the env's shortlist (or its
    index space) as is; the references among them."""
    return _with("untrained", "reference")


def shortlist_agents() -> tuple[str, ...]:
    """Agents that play the env's ``shortlist`` action mode (``SHORTLIST_AGENTS``). Their first
    stage is the env's default (the retriever shipped with the package) on the built-in
    catalog; on another catalog, which the shipped one does not fit, it is the stage's own
    supervised retriever."""
    return tuple(a for a in bench_agents() if role_of(a).action_mode == "shortlist")


def controls() -> dict[str, str]:
    """Equal-budget controls (``CONTROLS``), agent -> its control: the supervised retriever
    continued from the same checkpoint, with the same rounds, dialogs per round and seeds as
    the fine-tuning agent it controls, so a difference between the two is the method's, not
    the extra training's."""
    found = {}
    for name in _with("control"):
        controlled = role_of(name).controls
        if controlled is not None:
            found[controlled] = name
    return found


#: The comparisons every report makes, (agent, against), at the last turn, with paired intervals.
COMPARISONS = (
    ("policy-gradient", "control-pg"),
    ("policy-improvement", "control-pi"),
    ("policy-gradient", "supervised"),
    ("policy-improvement", "supervised"),
    ("control-pg", "supervised"),
    ("control-pi", "supervised"),
    ("ppo", "random"),
    # does a policy trained with rewards beat showing the first stage's best candidate?
    ("ppo-shortlist", "shortlist-greedy"),
    ("dqn-shortlist", "shortlist-greedy"),
    ("shortlist-greedy", "shortlist-random"),
    # the value of planning what to show, for the Bayesian reader
    ("posterior-lookahead", "posterior-map"),
)
#: The per-turn columns of the report, CSV and JSON (keys of ``EvaluationResult.per_turn``):
#: the older ones first, so existing columns keep their positions. ``Hits@10`` is cumulative
#: (ChatIR); ``BRI`` at turn t is the best log-rank integral over turns 0..t (PlugIR), so the
#: last turn's is the dialog's BRI (docs/benchmarks.md, "Metrics").
METRICS = (*(f"R@{k}" for k in RECALL_KS), "mean_percentile", "success_rate", "Hits@10", "BRI")


@dataclass(frozen=True)
class Preset:
    name: str
    seeds: tuple[int, ...]
    episodes: int
    supervised_rounds: int
    pg_rounds: int
    mbpi_rounds: int
    ppo_timesteps: int
    #: env steps for each off-the-shelf shortlist agent (PPO and DQN get the same budget)
    shortlist_timesteps: int
    num_envs: int = 32
    train_users: tuple[str, ...] = ("template",)
    eval_users: tuple[str, ...] = ("template",)
    #: run the slate section after the dialog tables (:mod:`fiq_gym.benchmarks.slates`, with
    #: this preset's seeds; on the ``default`` configuration only)
    slate_section: bool = False


PRESETS = {
    # Seconds: for tests and smoke runs on a small catalog.
    "tiny": Preset(
        "tiny",
        seeds=(0,),
        episodes=16,
        supervised_rounds=2,
        pg_rounds=2,
        mbpi_rounds=3,
        ppo_timesteps=256,
        shortlist_timesteps=256,
        num_envs=8,
    ),
    # The README's main job: about 11 minutes on an idle 2-core machine.
    "quick": Preset(
        "quick",
        seeds=(0,),
        episodes=500,
        supervised_rounds=250,
        pg_rounds=80,
        mbpi_rounds=40,
        ppo_timesteps=48_000,
        shortlist_timesteps=10_000,
        # Training with the template shopper, evaluating with both: the cross-user check is
        # nearly free because only evaluation runs with the learned shopper.
        eval_users=("template", "transformer"),
    ),
    # The leaderboard's budget (benchmarks/results/leaderboard.md): the quick preset's training
    # with 3 seeds and 1,000 dialogs, template shopper only, so a configuration costs ~30 min.
    "leaderboard": Preset(
        "leaderboard",
        seeds=(0, 1, 2),
        episodes=1000,
        supervised_rounds=250,
        pg_rounds=80,
        mbpi_rounds=40,
        ppo_timesteps=48_000,
        shortlist_timesteps=10_000,
    ),
    # 3 seeds x 2,000 paired dialogs: a 0.02 difference in success at turn 5 is detectable when
    # the agents disagree on up to ~15% of dialogs (benchmarks/README.md, "Power").
    "full": Preset(
        "full",
        seeds=(0, 1, 2),
        episodes=2000,
        supervised_rounds=600,
        pg_rounds=200,
        mbpi_rounds=100,
        ppo_timesteps=100_000,
        # 2.5x the quick preset's; ~150 env steps/s each on one free core.
        shortlist_timesteps=25_000,
        # Trained with the template shopper, evaluated with both (the cross-simulator check).
        # Training with the learned shopper as well doubles the cost (~5 h on 2 cores with
        # eleven agents); ask for it with --train-users template transformer.
        train_users=("template",),
        eval_users=("template", "transformer"),
        # PPO (SB3 and RLlib) on the shortlist slate beside its control and the reader's slates:
        # about an hour more on a busy 2-core machine (results/full/slates.md; --no-slates skips it).
        slate_section=True,
    ),
}
