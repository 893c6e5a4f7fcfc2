"""The benchmark's reports: ``dialog.md`` (success by turn, training budgets, per-turn tables,
paired comparisons, the cross-user table), ``dialog.json`` (every run's per-dialog outcomes),
``dialog.csv`` and ``recall_at_10_by_turn.png``."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from fiq_gym.benchmarks.dialog.presets import METRICS, bench_agents, references, shortlist_agents, untrained
from fiq_gym.benchmarks.dialog.records import BenchmarkResult
from fiq_gym.benchmarks.publishing import git_revision, library_versions
from fiq_gym.envs.configurations import CONFIGURATIONS
from fiq_gym.envs.registration import env_id_for
from fiq_gym.shortlist import FIRST_STAGE_VERSION
from fiq_gym.utils.atomic import atomic_write_bytes, atomic_write_text
from fiq_gym.utils.links import doc_url

__all__ = ["line_styles", "plot_recall", "success_summary", "to_markdown", "write_outputs"]


def _cell(row: dict[str, Any], metric: str) -> str:
    if row["seeds"] > 1:
        return f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}"
    return f"{row[metric]:.3f}"


def to_markdown(result: BenchmarkResult) -> str:
    from fiq_gym.benchmarks.publishing import machine_line

    rows = result.aggregate()
    order = bench_agents()
    p = result.preset
    seeds = sorted({r.seed for r in result.records})
    lines = [
        f"# Dialog retrieval benchmark (`{p.name}` preset)",
        "",
        f"Command: `{result.command}`  ",
        f"Git revision: {git_revision()}  ",
        f"Versions: {library_versions()}  ",
        f"Machine: {machine_line()}  ",
        f"Wall time: {result.seconds / 60:.1f} min; seeds {seeds}; {p.episodes} evaluation episodes; "
        f"training: supervised {p.supervised_rounds} rounds x {p.num_envs} dialogs, policy gradient "
        f"{p.pg_rounds} rounds, policy improvement {p.mbpi_rounds} rounds, PPO {p.ppo_timesteps:,} steps, "
        f"shortlist PPO and DQN {p.shortlist_timesteps:,} steps each.",
        *(
            [
                f"Configuration: `{result.configuration}` (`{env_id_for(result.configuration)}`): "
                f"{CONFIGURATIONS[result.configuration].summary}."
            ]
            if result.configuration != "default"
            else []
        ),
        "",
        "Evaluation: "
        + (
            "isolated harness (each agent runs in a process of its own, the environment and the evaluation set "
            "in the evaluator; agents see observations, caption, shown item, turn and success only)."
            if result.isolation == "process"
            else "sealed harness (the environment runs in a separate process; agents see observations, caption, "
            "shown item, turn and success only)."
            if result.sealed
            else "UNSEALED harness (debugging run: not for publication)."
        ),
        "",
        "Ranks are 0-based among all catalog items; turn 0 is the first (random) item shown before the agent",
        "acts. Hits@10 counts a dialog from the first turn its target entered the top 10 (cumulative, as in",
        "ChatIR); BRI at turn t is the best log-rank integral over turns 0..t (PlugIR; 0 = target first from",
        f"the start, lower is better; defined in {doc_url('docs/benchmarks.md', 'metrics')}).",
        "Values are means over seeds (± std when there are several). `control-pg` / `control-pi`: the",
        "supervised retriever continued from the same checkpoint with the same rounds, dialogs and seeds as",
        "policy gradient / policy improvement (equal-budget controls).",
        "",
    ]
    if any(r.agent in shortlist_agents() for r in result.records):
        lines += [
            "Shortlist agents choose among K = 32 unseen candidates per turn proposed by the env's first",
            "stage (on the built-in catalog the retriever shipped with the package, first stage version "
            f"{FIRST_STAGE_VERSION};",
            "on another catalog the stage's own supervised retriever); `shortlist-greedy` shows the",
            "first stage's best candidate, `shortlist-random` a uniform one.",
            "",
        ]
    if len(seeds) == 1:
        lines += [
            "**A smoke test, not a comparison**: one training seed. The intervals below cover the evaluation",
            "dialogs only; another seed or another CPU can move a cell by more than they say (see",
            f"{doc_url('benchmarks/README.md', 'what-reproduces')}). Only the full preset's tables support claims.",
            "",
        ]
    if result.skipped:
        lines += [
            f"Not run: {', '.join(f'`{a}`' for a in result.skipped)}: {next(iter(result.skipped.values()))}.",
            "",
        ]
    pairs = sorted({(r["train_user"], r["eval_user"]) for r in rows}, key=lambda x: (x[0] != x[1], x))
    for train_user, eval_user in pairs:
        lines += _success_table(result, train_user, eval_user)
    lines += _budget_table(result)
    for train_user, eval_user in pairs:
        part = [r for r in rows if r["train_user"] == train_user and r["eval_user"] == eval_user]
        lines += [f"## Trained with the {train_user} shopper, evaluated with the {eval_user} shopper", ""]
        lines += ["| agent | turn | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
        for row in sorted(part, key=lambda r: (order.index(r["agent"]), r["turn"])):
            if row["turn"] == 0:
                continue
            lines.append(
                f"| {row['agent']} | {row['turn']} | " + " | ".join(_cell(row, m) for m in METRICS) + " |"
            )
        lines.append("")
        lines += _comparison_table(result, train_user, eval_user)
    if len(pairs) > 1:
        last = max(r["turn"] for r in rows)
        lines += [
            "## Cross-user evaluation: R@10 at the last turn",
            "",
            "| agent | " + " | ".join(f"{a} -> {b}" for a, b in pairs) + " |",
            "|---|" + "---:|" * len(pairs),
        ]
        for agent in [a for a in order if any(r["agent"] == a for r in rows)]:
            cells = []
            for a, b in pairs:
                match = [
                    r
                    for r in rows
                    if (r["agent"], r["train_user"], r["eval_user"], r["turn"]) == (agent, a, b, last)
                ]
                cells.append(_cell(match[0], "R@10") if match else "-")
            lines.append(f"| {agent} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def success_summary(
    result: BenchmarkResult, train_user: str, eval_user: str
) -> dict[str, dict[str, tuple[float, float]]]:
    """agent -> success@3, success@5, its mean over turns 1-5 and R@10 at the last turn, as
    (mean, std) over seeds, for one (train, eval) shopper pair."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for agent in bench_agents():
        records = [
            r
            for r in result.records
            if (r.agent, r.train_user, r.eval_user) == (agent, train_user, eval_user)
        ]
        if not records:
            continue
        per_seed: dict[str, list[float]] = {"success@3": [], "success@5": [], "success 1-5": [], "R@10": []}
        for r in records:
            found = np.asarray(r.result.success_turn)
            by = [float(np.mean((found >= 1) & (found <= t))) for t in range(1, 6)]
            per_seed["success@3"].append(by[2])
            per_seed["success@5"].append(by[4])
            per_seed["success 1-5"].append(float(np.mean(by)))
            per_seed["R@10"].append(float(np.mean(np.asarray(r.result.ranks)[:, -1] < 10)))
        out[agent] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in per_seed.items()}
    return out


def _success_table(result: BenchmarkResult, train_user: str, eval_user: str) -> list[str]:
    """The headline table: success by turn first, the ceiling (the better reference agent) and
    each agent's share of the headroom over the greedy first stage closed."""
    summary = success_summary(result, train_user, eval_user)
    reference = references()
    present = [a for a in reference if a in summary]
    ceiling = max(present, key=lambda a: summary[a]["success@5"][0]) if present else None
    low = summary["shortlist-greedy"]["success@5"][0] if "shortlist-greedy" in summary else None
    several = len({r.seed for r in result.records}) > 1
    lines = [
        f"## Success by turn: trained with the {train_user} shopper, evaluated with the {eval_user} shopper",
        "",
        "| agent | success@3 | success@5 | success, mean over turns 1-5 | R@10 at the last turn | headroom closed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    order = sorted(summary, key=lambda a: (a not in reference, -summary[a]["success@5"][0]))
    for agent in order:
        cells = [
            f"{summary[agent][k][0]:.3f} ± {summary[agent][k][1]:.3f}"
            if several
            else f"{summary[agent][k][0]:.3f}"
            for k in ("success@3", "success@5", "success 1-5", "R@10")
        ]
        closed = "-"
        if ceiling is not None and low is not None and agent not in reference:
            top = summary[ceiling]["success@5"][0]
            closed = f"{(summary[agent]['success@5'][0] - low) / (top - low):+.2f}" if top > low else "-"
        name = f"**{agent}** (ceiling)" if agent == ceiling else agent
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {closed} |")
    lines.append("")
    if ceiling is not None:
        rules = "its own rules" if eval_user == "template" else "the noise-free template shopper's rules"
        lines += [
            f"The ceiling: `{ceiling}`, the Bayesian reader of the shopper's captions ({rules}; untrained, "
            "fiq_gym.agents.posterior). Headroom closed: (success@5 - `shortlist-greedy`'s) / (the "
            "ceiling's - `shortlist-greedy`'s)." + (" Cells: mean ± std over seeds." if several else ""),
            "",
        ]
    return lines


def _budget_table(result: BenchmarkResult) -> list[str]:
    """What each agent's training cost (the first train user's runs; all seeds alike)."""
    if not result.budgets:
        return []
    user = result.records[0].train_user if result.records else ""
    lines = [
        "## Training budgets",
        "",
        "| agent | starts from | rounds | dialogs | env steps | training time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for agent in bench_agents():
        found = [b for (a, u, _), b in sorted(result.budgets.items()) if a == agent and u == user]
        if not found:
            continue
        b = found[0]
        times = [x.seconds for x in found if x.seconds is not None]
        took = f"{np.mean(times):.0f} s" if times else ("-" if agent in untrained() else "cached")
        lines.append(
            f"| {agent} | {b.starts_from} | {b.rounds or '-'} | {b.dialogs or '-'} | {b.env_steps or '-'} | {took} |"
        )
    return [*lines, ""]


def _comparison_table(result: BenchmarkResult, train_user: str, eval_user: str) -> list[str]:
    rows = result.comparisons(train_user, eval_user)
    if not rows:
        return []
    first = rows[0]["success"]
    over = (
        f"{first.seeds} seeds x {first.dialogs} dialogs, resampling seeds and dialogs"
        if first.seeds > 1
        else f"{first.dialogs} dialogs of one seed, resampling dialogs only"
    )
    lines = [
        f"Paired differences at turn {rows[0]['turn']} (same dialogs; 95% bootstrap interval over {over}):",
        "",
        "| comparison | Δ success [95% CI] | Δ R@10 [95% CI] | reading |",
        "|---|---:|---:|---|",
    ]
    for row in rows:
        success, recall = row["success"], row["R@10"]
        if success.excludes_zero:
            reading = f"{row['agent'] if success.mean > 0 else row['against']} succeeds more often"
        elif recall.excludes_zero:
            reading = f"no detectable success difference; R@10 favours {row['agent'] if recall.mean > 0 else row['against']}"
        else:
            reading = "no detectable difference"
        lines.append(f"| {row['agent']} - {row['against']} | {success} | {recall} | {reading} |")
    return [*lines, ""]


def line_styles(count: int) -> list[tuple[str, str, str]]:
    """``(colour, line style, marker)`` for ``count`` lines, no two alike: matplotlib's ten
    default colours, then the same colours dashed with another marker, and so on (its default
    cycle would give lines 1 and 11 the same blue)."""
    colours = [f"C{i}" for i in range(10)]
    styles, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D")
    if count > len(colours) * len(styles):
        raise ValueError(f"at most {len(colours) * len(styles)} distinguishable lines, got {count}")
    return [(colours[i % 10], styles[i // 10], markers[i // 10]) for i in range(count)]


def plot_recall(result: BenchmarkResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.aggregate() if r["train_user"] == r["eval_user"]]
    order = bench_agents()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    lines = sorted({(r["agent"], r["train_user"]) for r in rows}, key=lambda x: (x[1], order.index(x[0])))
    for (agent, user), (colour, style, marker) in zip(lines, line_styles(len(lines)), strict=True):
        part = sorted(
            (r for r in rows if r["agent"] == agent and r["train_user"] == user), key=lambda r: r["turn"]
        )
        turns = [r["turn"] for r in part]
        mean = np.array([r["R@10"] for r in part])
        std = np.array([r["R@10_std"] for r in part])
        label = agent if len({r["train_user"] for r in rows}) == 1 else f"{agent} ({user})"
        ax.plot(turns, mean, color=colour, linestyle=style, marker=marker, label=label)
        ax.fill_between(turns, mean - std, mean + std, color=colour, alpha=0.2)
    ax.set_xlabel("turn")
    ax.set_ylabel("R@10")
    ax.set_title(f"Recall@10 by dialog turn ({result.preset.name} preset)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _json_with_one_line_per_run(data: dict[str, Any]) -> str:
    """``data`` as indented JSON, except that each entry of ``runs`` (thousands of per-dialog
    ranks) takes one compact line: a full run's file shrinks about fourfold and stays readable."""
    runs = data["runs"]
    head = json.dumps({k: v for k, v in data.items() if k != "runs"}, indent=2)
    lines = ",\n".join("    " + json.dumps(run, separators=(",", ":")) for run in runs)
    return head[: -len("\n}")] + ',\n  "runs": [\n' + lines + "\n  ]\n}\n"


def write_outputs(result: BenchmarkResult, out: Path) -> list[Path]:
    rows = result.aggregate()
    markdown = to_markdown(result)
    atomic_write_text(out / "dialog.md", markdown)
    atomic_write_text(
        out / "dialog.json",
        _json_with_one_line_per_run(
            {
                "preset": dataclasses.asdict(result.preset),
                "configuration": result.configuration,
                "env_id": env_id_for(result.configuration),
                "command": result.command,
                "sealed": result.sealed,
                "isolation": result.isolation,
                "skipped": result.skipped,
                "seconds": result.seconds,
                "git_revision": git_revision(),
                "versions": library_versions(),
                "aggregate": rows,
                "budgets": [
                    {"agent": a, "train_user": u, "seed": seed, **dataclasses.asdict(b)}
                    for (a, u, seed), b in sorted(result.budgets.items())
                ],
                "comparisons": [
                    {
                        "train_user": tu,
                        "eval_user": eu,
                        **{
                            k: (dataclasses.asdict(v) if k in ("success", "R@10") else v)
                            for k, v in c.items()
                        },
                    }
                    for tu, eu in sorted({(r.train_user, r.eval_user) for r in result.records})
                    for c in result.comparisons(tu, eu)
                ],
                "runs": [
                    {
                        "agent": r.agent,
                        "train_user": r.train_user,
                        "eval_user": r.eval_user,
                        "seed": r.seed,
                        "per_turn": r.result.per_turn(),
                        "mean_turns_to_success": r.result.mean_turns_to_success,
                        "bri": r.result.bri,
                        # per-dialog outcomes, so any comparison can be recomputed from the file
                        "ranks": np.asarray(r.result.ranks).tolist(),
                        "success_turn": np.asarray(r.result.success_turn).tolist(),
                        # dataset shoppers: the share of human captions by turn
                        **{k: v for k, v in r.result.meta.items() if k == "human_captions"},
                    }
                    for r in result.records
                ],
            }
        ),
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "dialog.csv", buffer.getvalue())
    atomic_write_bytes(out / "recall_at_10_by_turn.png", plot_recall(result))
    return [out / n for n in ("dialog.md", "dialog.json", "dialog.csv", "recall_at_10_by_turn.png")]
