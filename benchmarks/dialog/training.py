"""Training the benchmark's agents, with a cache in the run directory.

Which agents are trained, by which trainer, on which budget, from which start, with which
arguments of their own: each agent's :class:`~fiq_gym.agents.registry.BenchRole`. Every agent
trained here goes through its trainer's ``Args`` and ``train(args, progress=)``, as ``fiq-gym
train`` runs it; a run whose ``checkpoint/config.json`` holds the same arguments is not run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fiq_gym.agents import registry
from fiq_gym.benchmarks.dialog.presets import Preset, bench_agents, role_of
from fiq_gym.benchmarks.dialog.records import Budget

__all__ = ["BASE", "train_agents", "user_directory"]

#: The benchmark's base: the supervised retriever that the fine-tuned agents and the controls
#: continue, and the first stage of the shortlist agents on a catalog other than the built-in one.
BASE = "supervised"


def _cached(out: Path, args: Any) -> bool:
    """True if ``out/checkpoint`` was trained with exactly these arguments (``overwrite``,
    which only says how the run directory was claimed, aside)."""
    config = out / "checkpoint" / "config.json"
    if not config.exists():
        return False
    stored = dict(json.loads(config.read_text()).get("args", {}))
    wanted = json.loads(json.dumps(dataclasses.asdict(args), default=str))
    stored.pop("overwrite", None)
    wanted.pop("overwrite", None)
    return stored == wanted


def _train(module: Any, args: Any, progress: bool) -> tuple[Path, float | None]:
    """The checkpoint and the training wall time (None when the cache had it)."""
    out = Path(args.out)
    if _cached(out, args):
        return out / "checkpoint", None
    # The benchmark owns its run directories: a stale run (other arguments) is replaced.
    started = time.perf_counter()
    module.train(dataclasses.replace(args, overwrite=True), progress=progress)
    return out / "checkpoint", time.perf_counter() - started


def _trainer(name: str) -> tuple[Any, bool]:
    """The trainer module of benchmark agent ``name`` and whether its budget counts rounds
    (its ``Args`` has ``rounds``) rather than env steps."""
    role = role_of(name)
    module = importlib.import_module(str(registry.get(role.trained_by or name).trainer))
    return module, "rounds" in {f.name for f in dataclasses.fields(module.Args)}


def _budget_field(name: str) -> str:
    """The preset field with agent ``name``'s budget (a control's: the agent it controls)."""
    role = role_of(name)
    if role.role == "control":
        return str(role_of(str(role.controls)).budget)
    return str(role.budget)


def _continues(name: str) -> bool:
    """Agent ``name`` starts from the benchmark's supervised retriever (``--init``)."""
    role = role_of(name)
    return role.starts_from_supervised or role.role == "control"


def _training_order(agents: Sequence[str]) -> list[str]:
    """The agents to train, in the order they are trained: the base first (the others may start
    from it), then those trained in rounds, the controls after the agents they control, then
    those trained in env steps; in the report's order within each group."""
    chosen = [a for a in bench_agents() if a in agents and a != BASE and role_of(a).trained]
    rounds = {a: _trainer(a)[1] for a in chosen}
    return sorted(chosen, key=lambda a: (not rounds[a], role_of(a).role == "control"))


def train_agents(
    preset: Preset,
    agents: Sequence[str],
    user: str,
    seed: int,
    catalog: str | None,
    run: Path,
    progress: bool,
    max_turns: int,
    env_id: str = "fiq_gym/FashionIQ-v3",
    start: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Budget], str]:
    """Train (or load) every requested agent for one (user, seed); return what evaluates them,
    what each one's training cost and the shortlist agents' first stage. ``start``: the
    trainers' ``start`` and ``start_split`` (none: uniform starts)."""
    base = run / user_directory(user) / f"seed{seed}"
    # One torch thread: the networks are small, and a second thread would fight the env's
    # numpy work (and anything else on a 2-core machine) for the cores.
    common: dict[str, Any] = {
        "env_id": env_id,
        "catalog": catalog,
        "user": user,
        "seed": seed,
        "max_turns": max_turns,
        "threads": 1,
        **(start or {}),
    }
    trained: dict[str, Any] = {}
    budgets: dict[str, Budget] = {}
    own_first_stage = catalog is not None and any(role_of(a).action_mode == "shortlist" for a in agents)
    order = _training_order(agents)
    if BASE in agents or own_first_stage or any(_continues(a) for a in order):
        order.insert(0, BASE)
    init = str(None)  # the base's checkpoint, once trained
    first_stage = "retriever"
    continued = ""
    controls: dict[str, dict[str, Any]] = {}  # control -> its arguments but ``out``
    for name in order:
        role = role_of(name)
        module, in_rounds = _trainer(name)
        budget = getattr(preset, _budget_field(name))
        kwargs = dict(common)
        if name != BASE and _continues(name):
            kwargs["init"] = init
        if in_rounds:
            kwargs.update(num_envs=preset.num_envs, rounds=budget, eval_every=budget)
        else:
            kwargs["timesteps"] = budget
        if role.action_mode == "shortlist":
            kwargs["shortlist"] = first_stage
        kwargs.update(eval_episodes=min(64, preset.episodes), **role.trainer_args(budget))
        kwargs["out"] = str(base / (role.run_dir or name.replace("-", "_")))
        args = module.Args(**kwargs)
        if role.role == "control":
            # The same rounds, dialogs per round and round seeds as the agent it controls
            # (every trainer seeds round r's dialogs with seed * 1_000_003 + r * num_envs).
            same = {k: v for k, v in dataclasses.asdict(args).items() if k != "out"}
            twin = next((c for c, other in controls.items() if other == same), None)
            controls[name] = same
            if twin is not None:
                # the same training as another control (equal rounds): reuse it rather than run it twice
                trained[name], budgets[name] = trained[twin], budgets[twin]
                continue
        trained[name], seconds = _train(module, args, progress)
        starts_from = continued if name != BASE and _continues(name) else "scratch"
        if in_rounds:
            budgets[name] = Budget(args.rounds, args.rounds * args.num_envs, 0, seconds, starts_from)
        else:
            budgets[name] = Budget(0, 0, args.timesteps, seconds, starts_from)  # dialogs vary in length
        if name == BASE:
            init = str(trained[BASE])
            first_stage = f"retriever:{init}" if own_first_stage else "retriever"
            continued = f"{BASE} ({budgets[BASE].rounds} rounds)"
    for name in bench_agents():
        if name in agents and not role_of(name).trained:
            trained[name] = None
            budgets[name] = Budget()
    if BASE not in agents:
        trained.pop(BASE, None)
        budgets.pop(BASE, None)
    return trained, budgets, first_stage


def user_directory(user: str) -> str:
    """A shopper's name as one directory name: as it is when it is one (``template``), else
    its characters that are safe in a path and a digest of the whole name."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", user):
        return user
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-")[-40:]
    return f"{slug}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"
