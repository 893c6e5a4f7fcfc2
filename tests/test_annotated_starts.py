"""Annotated starts (issue 36, item 1): ``start="annotated"`` draws the reset's (target, shown)
pair from the human captions of one split, so a dataset shopper's turn 0 is human, in the
single env, the vector env and the evaluation harness; the default start is unchanged.

The catalog is a Fashion IQ release written in the release's format (stand-in images from a
small synthetic catalog) and imported with ``fiq-gym catalog import``'s code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents.random_agent import RandomAgent
from fiq_gym.catalog.captions import HumanCaptions
from fiq_gym.catalog.fashioniq import plan_fashioniq
from fiq_gym.catalog.importing import write_import
from fiq_gym.catalog.storage import open_catalog
from fiq_gym.envs.evaluation import EvaluationSet, evaluate, human_share_by_turn
from fiq_gym.features.extract import import_extractor
from fiq_gym.users.release_export import export_fashioniq_release

ENV = "fiq_gym/FashionIQ-v3"
VAL_SHOPPER = {"user": "dataset", "user_kwargs": {"split": "val", "fallback": "template"}}


@pytest.fixture(scope="module")
def imported(small_catalog, tmp_path_factory) -> Path:
    """A Fashion IQ import with train, val and test (the test split's targets hidden)."""
    root = tmp_path_factory.mktemp("annotated") / "release"
    export_fashioniq_release(small_catalog, root, pairs_per_split=40, seed=1, progress=False)
    out = root.parent / "catalog"
    plan = plan_fashioniq(root, splits=("train", "val", "test"))
    write_import(plan, out, extractor=import_extractor("attribute-net"), progress=False)
    return out


def _val_pairs(path: Path, category: str | None = None) -> dict[tuple[int, int], set[str]]:
    """Catalog-row pairs of the val split with their captions."""
    catalog = open_catalog(path)
    captions = HumanCaptions.load(path).select("val", category)
    targets, shown = captions.rows(catalog)
    pairs: dict[tuple[int, int], set[str]] = {}
    for t, s, entry in zip(targets.tolist(), shown.tolist(), captions.entries, strict=True):
        pairs.setdefault((t, s), set()).update(entry.captions)
    return pairs


@pytest.mark.parametrize("category", [None, "shirt"])
def test_every_annotated_start_is_a_val_pair_with_its_human_caption(imported, category):
    pairs = _val_pairs(imported, category)
    env = gym.make(
        ENV, catalog=str(imported), category=category, start="annotated", start_split="val", **VAL_SHOPPER
    )
    inner = env.unwrapped
    targets, shown = inner.start_pairs
    # Every distinct val pair with both items in play, as indices in play.
    starts = set(zip(inner.row_of_index(targets).tolist(), inner.row_of_index(shown).tolist(), strict=True))
    assert starts == set(pairs)
    seen = set()
    for seed in range(60):
        _, info = env.reset(seed=seed)
        pair = (inner.row_of_index(int(inner._dialog.target[0])), inner.row_of_index(info["shown"]))
        assert pair in pairs
        assert info["human_caption"] is True
        assert info["caption_text"] in pairs[pair]  # the annotators' words, as recorded
        seen.add(pair)
        # Later turns show what the agent picks; the fallback answers, flagged as not human.
        _, _, _, _, info = env.step(int(np.flatnonzero(np.arange(inner.num_items) != info["shown"])[seed]))
        assert isinstance(info["human_caption"], bool)
    assert len(seen) > 10  # drawn over the pairs, not one pair again and again
    # Reset options still start the pair they name (indices in play).
    t, s = int(targets[-1]), int(shown[-1])
    _, info = env.reset(seed=0, options={"target": t, "shown": s})
    assert info["shown"] == s and info["human_caption"] is True
    # A pickled env keeps its start mode.
    twin = pickle.loads(pickle.dumps(inner))
    assert twin.config.start == "annotated" and twin.config.start_split == "val"
    assert np.array_equal(twin.start_pairs[0], targets)
    env.close()


def test_the_default_start_is_unchanged_and_has_no_start_pairs(imported):
    """The default is the uniform start of every earlier release, draw for draw."""
    made = [
        gym.make(ENV, catalog=str(imported), **VAL_SHOPPER),
        gym.make(ENV, catalog=str(imported), start="uniform", start_split="val", **VAL_SHOPPER),
    ]
    runs = []
    for env in made:
        assert env.unwrapped.start_pairs is None
        run = []
        for seed in range(5):
            obs, info = env.reset(seed=seed)
            run.append((info["shown"], info["rank"], info["caption_text"], obs["caption"].tolist()))
            obs, reward, *_, info = env.step(3)
            run.append((info["shown"], info["rank"], info["caption_text"], reward))
        runs.append(run)
    assert runs[0] == runs[1]
    # The template shopper writes every caption: no human flag in its info.
    _, info = gym.make(ENV, catalog=str(imported)).reset(seed=0)
    assert "human_caption" not in info


def test_vector_env_draws_as_the_single_env(imported):
    kwargs = {"catalog": str(imported), "start": "annotated", "start_split": "val", **VAL_SHOPPER}
    envs = gym.make_vec(ENV, num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    _, info = envs.reset(seed=10)
    assert info["human_caption"].all()
    single = gym.make(ENV, **kwargs)
    for k in range(3):
        _, one = single.reset(seed=10 + k)
        assert one["shown"] == info["shown"][k] and one["caption_text"] == info["caption_text"][k]
    # Autoreset draws annotated pairs too.
    for _ in range(6):
        _, _, _, _, info = envs.step(np.zeros(3, dtype=np.int64))
        restarted = info["dialog_turn"] == 0
        assert info["human_caption"][restarted].all()
    envs.close()


@pytest.mark.parametrize("isolation", ["none", "sealed", "process"])
def test_harness_plays_every_annotated_pair_with_human_turn_0(imported, isolation):
    """The acceptance check of issue 36: a dialog run from annotated starts has human
    captions at turn 0 for every episode, and the result reports the share by turn."""
    kwargs = {"catalog": str(imported), "start": "annotated", "start_split": "val", **VAL_SHOPPER}
    probe = gym.make_vec(ENV, num_envs=1, vectorization_mode="vector_entry_point", **kwargs)
    pairs = probe.unwrapped.start_pairs
    agent = RandomAgent.for_env(probe, seed=0)
    if isolation == "process":  # the agent built in a process of its own
        from fiq_gym.envs.evaluation import AgentSpec

        agent = AgentSpec(
            "fiq_gym.benchmarks.dialog:bench_agent", {"name": "random", "checkpoint": None, "seed": 0}
        )
    probe.close()
    episodes = len(pairs[0])
    result = evaluate(agent, ENV, episodes=episodes, seed=4, isolation=isolation, num_envs=8, **kwargs)
    shares = result.meta["human_captions"]
    assert len(shares) == result.turns + 1
    assert shares[0] == 1.0  # every episode's turn 0 is the annotators' caption
    assert all(x is None or 0.0 <= x < 1.0 for x in shares[1:])  # later turns: mostly the fallback
    assert "human captions by turn 0..5" in result.to_markdown()
    # The set: every annotated pair exactly once.
    eval_set = EvaluationSet.for_env(gym.make(ENV, **kwargs), episodes, seed=4)
    assert sorted(zip(eval_set.targets.tolist(), eval_set.shown.tolist(), strict=True)) == sorted(
        zip(pairs[0].tolist(), pairs[1].tolist(), strict=True)
    )
    # A uniform-start env with the template shopper reports no human share.
    plain = evaluate(agent, ENV, episodes=8, seed=4, isolation=isolation, num_envs=8, catalog=str(imported))
    assert "human_captions" not in plain.meta


def test_evaluation_sets_from_start_pairs():
    starts = (np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7]))
    once = EvaluationSet.generate(10, 4, seed=1, starts=starts)
    assert sorted(once.targets.tolist()) == [0, 1, 2, 3]
    assert np.array_equal(once.shown, once.targets + 4)  # pairs stay together
    more = EvaluationSet.generate(10, 10, seed=1, starts=starts)
    assert sorted(np.bincount(more.targets, minlength=4).tolist()) == [2, 2, 3, 3]  # each pair again
    assert sorted(more.targets[:4].tolist()) == [0, 1, 2, 3] == sorted(more.targets[4:8].tolist())
    assert np.array_equal(EvaluationSet.generate(10, 10, seed=1, starts=starts).targets, more.targets)
    assert not np.array_equal(EvaluationSet.generate(10, 10, seed=2, starts=starts).targets, more.targets)
    # Without starts: the uniform set, as before.
    assert np.array_equal(
        EvaluationSet.generate(10, 5, seed=1).targets, EvaluationSet.generate(10, 5, 1).targets
    )
    assert human_share_by_turn(np.array([[1, 0, -1], [1, 1, 0]], dtype=np.int8)) == [1.0, 0.5, 0.0]
    assert human_share_by_turn(np.array([[1, -1]], dtype=np.int8)) == [1.0, None]
    assert human_share_by_turn(None) is None


def test_annotated_starts_refuse_what_cannot_start_them(imported, small_catalog_path):
    def make(**kwargs):
        return gym.make(
            ENV, **{"catalog": str(imported), "start": "annotated", "start_split": "val", **kwargs}
        )

    cases = [
        ({"catalog": str(small_catalog_path)}, r"fiq-gym catalog import.*start='uniform'"),
        ({"start_split": "test"}, r"start_split='test' has no pair with a target.*\['train', 'val'\]"),
        ({"start_split": "eval"}, r"start_split='eval' is not a split of this import"),
        (
            {"user": "dataset", "user_kwargs": {"split": "train", "fallback": "template"}},
            r"no human caption for \d+ of the \d+ start pairs.*user_kwargs=\{'split': 'val'",
        ),
        ({"start": "human"}, r"start must be one of \['uniform', 'annotated'\]"),
        ({"start_split": ""}, r"start_split must be a split name"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            make(**kwargs)
        assert "\n" not in str(caught.value)
    # A dataset shopper replaying every split covers the val pairs.
    assert make(user="dataset", user_kwargs={"fallback": "template"}).unwrapped.start_pairs is not None


def test_a_category_without_captions_in_the_start_split_is_named(imported, tmp_path):
    import shutil

    from fiq_gym.catalog.captions import CAPTIONS_FILE

    copy = tmp_path / "catalog"
    shutil.copytree(imported, copy)
    data = json.loads((copy / CAPTIONS_FILE).read_text())
    data["entries"] = [e for e in data["entries"] if (e["category"], e["split"]) != ("toptee", "val")]
    (copy / CAPTIONS_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"no caption entries of category 'toptee'.*\['dress', 'shirt'\]"):
        gym.make(ENV, catalog=str(copy), category="toptee", start="annotated", start_split="val")
    assert gym.make(ENV, catalog=str(copy), category="dress", start="annotated", start_split="val")


def test_trainers_start_from_annotated_pairs_and_checkpoints_remember_it(imported, tmp_path, capsys):
    """A trainer's --start/--start-split reach its training and evaluation envs; the checkpoint
    records them, so fiq-gym eval plays annotated starts too (on val with --start-split val)."""
    from fiq_gym.agents import policy_gradient, policy_improvement, ppo, recurrent_reinforce, supervised
    from fiq_gym.agents.evaluate_checkpoint import evaluate_checkpoint
    from fiq_gym.agents.loading import load_agent
    from fiq_gym.cli import main as cli
    from fiq_gym.utils.arguments import parse_dataclass_args

    flags = [
        "--catalog",
        str(imported),
        "--user",
        "dataset:template",
        "--start",
        "annotated",
        "--start-split",
        "val",
    ]
    made = [
        supervised.make_envs(parse_dataclass_args(supervised.Args, flags, ""), training=True, num_envs=2),
        policy_gradient.make_envs(parse_dataclass_args(policy_gradient.Args, flags, ""), 2),
        policy_improvement.make_envs(parse_dataclass_args(policy_improvement.Args, flags, ""), 2),
        recurrent_reinforce.make_envs(parse_dataclass_args(recurrent_reinforce.Args, flags, ""), 2),
        gym.make_vec(
            ENV,
            num_envs=2,
            vectorization_mode="vector_entry_point",
            **ppo.env_kwargs_of(parse_dataclass_args(ppo.Args, [*flags, "--action-mode", "query"], "")),
        ),
    ]
    for envs in made:
        assert (envs.unwrapped.config.start, envs.unwrapped.config.start_split) == ("annotated", "val")
        _, info = envs.reset(seed=0)
        assert info["human_caption"].all()
        envs.close()
    # Without the flags, the env arguments are what they always were.
    assert "start" not in ppo.env_kwargs_of(parse_dataclass_args(ppo.Args, ["--action-mode", "query"], ""))

    out = tmp_path / "run"
    train = [
        "train",
        "supervised",
        "--out",
        str(out),
        "--rounds",
        "1",
        "--num-envs",
        "4",
        "--eval-every",
        "1",
    ]
    assert cli([*train, "--eval-episodes", "8", *flags[:4], "--start", "annotated"]) == 0
    loaded = load_agent(out / "checkpoint", load_model=False)
    assert loaded.env_kwargs()["start"] == "annotated" and loaded.env_kwargs()["start_split"] == "train"
    result = evaluate_checkpoint(out / "checkpoint", episodes=8, seed=0, start_split="val", isolation="none")
    assert result.meta["human_captions"][0] == 1.0
    # That evaluation drew its dialogs from the val pairs, not the train pairs it trained on.
    pairs = {}
    for split in ("train", "val"):
        venv = loaded.make_envs(1, start_split=split)
        pairs[split] = set(zip(*(x.tolist() for x in venv.unwrapped.start_pairs), strict=True))
        if split == "val":
            played = EvaluationSet.for_env(venv, 8, seed=0)
        venv.close()
    assert not pairs["train"] & pairs["val"]
    assert set(zip(played.targets.tolist(), played.shown.tolist(), strict=True)) <= pairs["val"]
    # The command line: the result's table is followed by the human share by turn.
    assert (
        cli(
            [
                "eval",
                str(out / "checkpoint"),
                "--isolation",
                "none",
                "--episodes",
                "8",
                "--start-split",
                "val",
            ]
        )
        == 0
    )
    assert "human captions by turn 0..5 (the rest the shopper's fallback): 1.000" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--start-split applies to annotated starts.*--start annotated"):
        evaluate_checkpoint(
            out / "checkpoint", episodes=8, start="uniform", start_split="val", isolation="none"
        )


def test_the_bench_trains_on_train_pairs_and_evaluates_on_val_pairs(imported, tmp_path):
    from fiq_gym.benchmarks.dialog import main as bench
    from fiq_gym.benchmarks.dialog import user_directory

    out = tmp_path / "bench"
    args = [
        "--preset",
        "tiny",
        "--catalog",
        str(imported),
        "--agents",
        "random",
        "supervised",
        "--out",
        str(out),
    ]
    args += ["--train-users", "dataset:template", "--eval-users", "dataset:template", "--isolation", "none"]
    assert bench([*args, "--start", "annotated", "--start-split", "train", "--eval-start-split", "val"]) == 0
    report = json.loads(next(out.rglob("dialog.json")).read_text())
    assert {run["agent"] for run in report["runs"]} == {"random", "supervised"}
    assert all(run["human_captions"][0] == 1.0 for run in report["runs"])  # every turn 0 human
    run = next(out.iterdir())
    saved = list(run.glob("evaluation_set_*_annotated-val.json"))
    assert len(saved) == 1  # the set was drawn from the val pairs
    eval_set = EvaluationSet.load(saved[0])
    envs = gym.make_vec(
        ENV,
        num_envs=1,
        vectorization_mode="vector_entry_point",
        catalog=str(imported),
        start="annotated",
        start_split="val",
    )
    val_pairs = set(zip(*(x.tolist() for x in envs.unwrapped.start_pairs), strict=True))
    envs.close()
    assert set(zip(eval_set.targets.tolist(), eval_set.shown.tolist(), strict=True)) <= val_pairs
    # The supervised agent trained from train pairs: its checkpoint says so.
    checkpoint = run / "runs" / user_directory("dataset:template") / "seed0" / "supervised" / "checkpoint"
    config = json.loads((checkpoint / "config.json").read_text())["args"]
    assert (config["start"], config["start_split"]) == ("annotated", "train")
    with pytest.raises(SystemExit):
        bench([*args, "--train-users", "nobody"])


def test_a_trainers_dataset_shopper_names_its_fallback_directory_absolutely(tmp_path, monkeypatch):
    """--user dataset:transformer:DIR is recorded with DIR absolute, so fiq-gym eval finds the
    shopper from any directory."""
    from fiq_gym.utils.arguments import absolute_spec

    monkeypatch.chdir(tmp_path)
    assert absolute_spec("dataset:transformer:runs/shopper") == f"dataset:transformer:{tmp_path}/runs/shopper"
    assert absolute_spec("dataset:template") == "dataset:template"
    assert absolute_spec("dataset") == "dataset"
