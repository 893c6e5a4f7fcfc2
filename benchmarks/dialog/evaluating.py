"""Evaluating the benchmark's agents: every (train shopper, seed) stage trained, then each
agent played on the run's fixed evaluation set with every evaluation shopper (sealed, in a
process of its own, or in this one), serially or in several stage processes at once."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym

from fiq_gym.agents import registry
from fiq_gym.benchmarks.dialog.presets import Preset, bench_agents, references, role_of
from fiq_gym.benchmarks.dialog.records import BenchmarkResult, Budget, Record
from fiq_gym.benchmarks.dialog.training import train_agents, user_directory
from fiq_gym.envs.evaluation import AgentSpec, EvaluationSet, RetrievalAgent, evaluate
from fiq_gym.envs.inner import inner_env
from fiq_gym.envs.registration import env_id_for
from fiq_gym.starts import start_kwargs

__all__ = ["bench_agent", "references_unavailable", "run_benchmark"]


def _bench_envs(
    name: str,
    checkpoint: Path | None,
    user: str,
    catalog: str | None,
    num_envs: int,
    max_turns: int,
    first_stage: str,
    env_id: str,
    start: dict[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """The env agent ``name`` is evaluated in with shopper ``user`` (``start``: the env's
    ``start`` and ``start_split``; none: uniform starts)."""
    from fiq_gym.agents.loading import load_agent

    if checkpoint is None:
        mode = role_of(name).action_mode
        shortlist: dict[str, Any] = {"shortlist": first_stage} if mode == "shortlist" else {}
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            catalog=catalog,
            user=user,
            action_mode=mode,
            max_turns=max_turns,
            **shortlist,
            **(start or {}),
        )
    return load_agent(checkpoint, load_model=False).make_envs(
        num_envs, catalog=catalog, user=user, max_turns=max_turns, **(start or {})
    )


def bench_agent(envs: gym.vector.VectorEnv, name: str, checkpoint: str | None, seed: int) -> RetrievalAgent:
    """Benchmark agent ``name`` for ``envs``: loaded from ``checkpoint`` if it was trained, else
    built by its registered ``make`` (the untrained agents and the references). Also the agent
    factory of an isolated evaluation (``AgentSpec("fiq_gym.benchmarks.dialog:bench_agent", ...)``)."""
    from fiq_gym.agents.loading import load_agent

    if checkpoint is not None:
        return load_agent(checkpoint).make_agent(envs)
    make = role_of(name).make
    if make is None:
        raise ValueError(f"benchmark agent {name!r} is trained: pass its checkpoint")
    agent: RetrievalAgent = registry.resolve(make)(envs, seed)
    return agent


def references_unavailable(catalog: str | None, env_id: str) -> str | None:
    """Why the reference agents cannot play on ``catalog`` (None: they can)."""
    from fiq_gym.agents.posterior import Readout

    envs = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", catalog=catalog)
    try:
        inner = inner_env(envs)
        Readout.load().beliefs(inner.gallery, inner.catalog.vocabulary)
    except ValueError as e:
        return str(e)
    finally:
        envs.close()
    return None


def run_benchmark(
    preset: Preset,
    out: Path,
    *,
    catalog: str | None = None,
    agents: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    train_users: Sequence[str] | None = None,
    eval_users: Sequence[str] | None = None,
    max_turns: int = 5,
    progress: bool = True,
    command: str = "",
    sealed: bool = True,
    isolation: str | None = None,
    jobs: int = 1,
    configuration: str = "default",
    start: str = "uniform",
    start_split: str = "train",
    eval_start_split: str | None = None,
) -> BenchmarkResult:
    """Train and evaluate ``agents`` (default: every benchmark agent) for every (train user,
    seed) stage of ``preset``.

    ``start="annotated"`` (an imported catalog): training dialogs start from the annotated
    pairs of ``start_split`` and evaluation dialogs from those of ``eval_start_split``
    (default: the same split), the evaluation set drawn from them (each pair once); each
    result's ``meta["human_captions"]`` then has the human share by turn for dataset shoppers.

    With ``jobs > 1`` the stages run in that many separate processes at once (each with one
    thread; ``python -m fiq_gym.benchmarks.dialog``, so nothing re-imports the caller's
    script) and this process gathers their records; the numbers are those of ``jobs=1``.

    Sealed, every evaluation of a process (the trainers' evaluations during training and the
    benchmark's own) runs on the warm child that :func:`fiq_gym.envs.evaluation.evaluate`
    keeps: one child process per run (per stage process with ``jobs > 1``), which keeps its
    imports, the shoppers it loaded and, while the env spec stays the same, its env. The
    numbers are those of a new child per evaluation (tested).
    """
    started_at = time.perf_counter()
    seeds = tuple(seeds if seeds is not None else preset.seeds)
    train_users = tuple(train_users or preset.train_users)
    eval_users = tuple(eval_users or preset.eval_users)
    known = bench_agents()
    agents = list(known if agents is None else agents)
    unknown = [a for a in agents if a not in known]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {list(known)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    env_id = env_id_for(configuration)
    train_start = start_kwargs(SimpleNamespace(start=start, start_split=start_split))
    eval_start = start_kwargs(SimpleNamespace(start=start, start_split=eval_start_split or start_split))
    if eval_start_split is not None and not eval_start:
        raise ValueError("--eval-start-split applies to annotated starts: add --start annotated")
    out.mkdir(parents=True, exist_ok=True)
    isolation = isolation or ("sealed" if sealed else "none")
    sealed = isolation != "none"
    result = BenchmarkResult(
        preset, command=command, sealed=sealed, isolation=isolation, configuration=configuration
    )
    reference = references()
    reason = references_unavailable(catalog, env_id) if any(a in reference for a in agents) else None
    if reason is not None:
        result.skipped = {a: reason for a in agents if a in reference}
        agents = [a for a in agents if a not in reference]
        if progress:
            print(f"skipping {', '.join(result.skipped)}: {reason}", flush=True)
    stages = [(u, s) for u in train_users for s in seeds]
    if jobs > 1 and len(stages) > 1:
        worker_args = ["--agents", *agents, "--eval-users", *eval_users, "--turns", str(max_turns)]
        worker_args += ["--preset", preset.name, "--run-dir", str(out), "--config", configuration]
        worker_args += ([] if catalog is None else ["--catalog", str(catalog)]) + ["--isolation", isolation]
        if train_start:
            worker_args += ["--start", start, "--start-split", start_split]
            worker_args += ["--eval-start-split", eval_start["start_split"]]
        for stage_records, stage_budgets in _run_stages_in_processes(
            stages, worker_args, out, jobs, progress
        ):
            result.records += stage_records
            result.budgets.update(stage_budgets)
        # the serial order, whatever order the processes finished in
        order = {stage: i for i, stage in enumerate(stages)}
        result.records.sort(key=lambda r: order[(r.train_user, r.seed)])
        result.seconds = time.perf_counter() - started_at
        return result
    for k, (user, seed) in enumerate(stages, 1):
        if progress:
            print(
                f"[{k}/{len(stages)}] training {', '.join(agents)} with the {user} shopper, seed {seed}",
                flush=True,
            )
        trained, budgets, first_stage = train_agents(
            preset, agents, user, seed, catalog, out / "runs", progress, max_turns, env_id, train_start
        )
        result.budgets.update({(name, user, seed): b for name, b in budgets.items()})
        for eval_user in eval_users:
            for name in agents:
                checkpoint = trained.get(name)
                envs = _bench_envs(
                    name,
                    checkpoint,
                    eval_user,
                    catalog,
                    min(64, preset.episodes),
                    max_turns,
                    first_stage,
                    env_id,
                    eval_start,
                )
                try:
                    eval_set = _evaluation_set(out, envs, preset.episodes)
                    agent: Any
                    if isolation == "process":
                        # the agent built and run in a process of its own, from the checkpoint
                        where = None if checkpoint is None else str(Path(checkpoint).resolve())
                        agent = AgentSpec(
                            "fiq_gym.benchmarks.dialog:bench_agent",
                            {"name": name, "checkpoint": where, "seed": seed},
                        )
                    else:
                        agent = bench_agent(envs, name, None if checkpoint is None else str(checkpoint), seed)
                    # sealed: on the process-wide warm child, shared with the trainers' evaluations
                    evaluation = evaluate(agent, envs, eval_set, seed=seed, name=name, isolation=isolation)
                finally:
                    envs.close()
                result.records.append(Record(name, user, eval_user, seed, evaluation))
                if progress:
                    final = evaluation.per_turn()[-1]
                    print(
                        f"    {name:<20} trained {user:<11} evaluated {eval_user:<11} "
                        f"R@10 {final['R@10']:.3f}  success {final['success_rate']:.3f}",
                        flush=True,
                    )
    result.seconds = time.perf_counter() - started_at
    return result


def _run_stages_in_processes(
    stages: Sequence[tuple[str, int]], worker_args: list[str], out: Path, jobs: int, progress: bool
) -> list[tuple[list[Record], dict[tuple[str, str, int], Budget]]]:
    """Run each (user, seed) stage as ``python -m fiq_gym.benchmarks.dialog ... --stage-records
    FILE``, at most ``jobs`` at once; return what each wrote. A failed stage stops the run
    with the end of its log."""
    import os
    import pickle
    import subprocess

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Each process gets one core's worth of threads: jobs processes share the machine.
    env.update({v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    pending = list(stages)
    running: dict[tuple[str, int], tuple[subprocess.Popen, Path, Path, float]] = {}
    finished = []
    while pending or running:
        while pending and len(running) < jobs:
            user, seed = pending.pop(0)
            log = logs / f"{user_directory(user)}-seed{seed}.log"
            records = logs / f"{user_directory(user)}-seed{seed}.records.pkl"
            records.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "fiq_gym.benchmarks.dialog", *worker_args]
            cmd += ["--train-users", user, "--seeds", str(seed), "--stage-records", str(records)]
            with open(log, "w", encoding="utf-8") as handle:
                proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
            running[(user, seed)] = (proc, log, records, time.perf_counter())
            if progress:
                print(f"started {user} shopper, seed {seed} (log: {log})", flush=True)
        time.sleep(1.0)
        for stage, (proc, log, records, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[stage]
            if proc.returncode != 0 or not records.exists():
                for other, *_ in running.values():
                    other.kill()
                tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
                raise RuntimeError(
                    f"the benchmark stage {stage[0]} shopper, seed {stage[1]} failed (exit {proc.returncode}); "
                    f"its log {log} ends with:\n{tail}"
                )
            plain_records, plain_budgets = pickle.loads(records.read_bytes())
            finished.append(
                (
                    [Record(*fields) for fields in plain_records],
                    {key: Budget(**b) for key, b in plain_budgets.items()},
                )
            )
            if progress:
                minutes = (time.perf_counter() - started) / 60
                print(f"finished {stage[0]} shopper, seed {stage[1]} in {minutes:.1f} min", flush=True)
                for record in finished[-1][0]:
                    final = record.result.per_turn()[-1]
                    print(
                        f"    {record.agent:<20} trained {record.train_user:<11} evaluated {record.eval_user:<11} "
                        f"R@10 {final['R@10']:.3f}  success {final['success_rate']:.3f}",
                        flush=True,
                    )
    return finished


def _evaluation_set(out: Path, envs: gym.vector.VectorEnv, episodes: int) -> EvaluationSet:
    """One fixed set per run directory, saved beside the results (like the papers' files);
    from the env's annotated start pairs when it starts from them."""
    inner = inner_env(envs)
    num_items = inner.num_items
    starts = "" if inner.start_pairs is None else f"_annotated-{inner.config.start_split}"
    path = out / f"evaluation_set_{num_items}items_{episodes}episodes{starts}.json"
    if path.exists():
        return EvaluationSet.load(path)
    eval_set = EvaluationSet.for_env(envs, episodes, seed=2021)
    eval_set.save(path)
    return eval_set
