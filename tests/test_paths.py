"""Paths from the command line are made absolute once, at parsing, for every command; a
checkpoint stores paths that work from another working directory (issue: relative paths)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
from pathlib import Path

import pytest

from fiq_gym.agents.loading import load_agent
from fiq_gym.checkpoint import portable_args
from fiq_gym.cli import TRAINERS, build_parser
from fiq_gym.cli import main as cli_main
from fiq_gym.errors import CheckpointError
from fiq_gym.utils.arguments import absolute_catalog, absolute_spec, add_dataclass_arguments

# Options that name a file or directory, and those that take NAME or NAME:DIR (with a name
# that carries a directory for the check).
PATH_DESTS = {
    "out",
    "catalog",
    "checkpoint",
    "root",
    "images",
    "features",
    "feature_ids",
    "attributes",
    "image_dir",
    "save",
    "dialogs",
    "held_out_seed_file",
    "init",
    "datasets_path",
    "work_dir",
    "agent",
}
SPEC_DESTS = {
    "user": "transformer:{}",
    "shortlist": "retriever:{}",
    "encoder": "hf:{}",
    "captions": "fashioniq:{}",
}
# Options with these names that are not paths: `fiq-gym eval --agent FACTORY` names a Python
# function ('package.module:function' or 'file.py:function', resolved in the agent's process).
NOT_PATHS = {("fiq-gym eval", "agent")}


def _parsers(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _every_parser():
    from fiq_gym.benchmarks.dialog import build_parser as bench_parser

    yield from _parsers(build_parser(), "fiq-gym")
    yield "fiq-gym bench", bench_parser()
    for agent, module in TRAINERS.items():
        try:
            trainer = importlib.import_module(module)
        except ImportError:  # the rllib / offline extras
            continue
        parser = argparse.ArgumentParser(prog=f"fiq-gym train {agent}")
        add_dataclass_arguments(parser, trainer.Args)
        yield parser.prog, parser


def _parse_one(action: argparse.Action, text: str):
    assert callable(action.type), f"{'/'.join(action.option_strings) or action.dest} has no path type"
    return action.type(text)


def test_every_path_option_of_every_command_is_made_absolute_at_parsing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checked = 0
    for prog, parser in _every_parser():
        for action in parser._actions:
            if (prog, action.dest) in NOT_PATHS or action.choices is not None:
                continue  # a choice among names (e.g. `catalog build --images stored|lazy`)
            where = f"{prog} {'/'.join(action.option_strings) or action.dest}"
            if action.dest in PATH_DESTS:
                value = _parse_one(action, "relative/dir")
                assert str(value) == str(tmp_path / "relative" / "dir"), where
                checked += 1
            elif action.dest in SPEC_DESTS:
                value = _parse_one(action, SPEC_DESTS[action.dest].format("relative/dir"))
                assert value == SPEC_DESTS[action.dest].format(tmp_path / "relative" / "dir"), where
                checked += 1
    assert checked >= 60  # the walk reached every command (today: every subcommand and trainer)


def test_specs_keep_names_and_synthetic_catalogs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("template") == "template"
    assert absolute_spec("dataset") == "dataset"
    assert absolute_spec("transformer") == "transformer"
    assert absolute_spec("lm:models/gpt") == f"lm:{tmp_path}/models/gpt"
    assert absolute_catalog("synthetic:300:1") == "synthetic:300:1"
    assert absolute_catalog("~/cat") == str(Path("~/cat").expanduser())
    home = portable_args({"catalog": "cat", "user": "template", "seed": 3, "init": None, "out": "runs/x"})
    assert home == {
        "catalog": f"{tmp_path}/cat",
        "user": "template",
        "seed": 3,
        "init": None,
        "out": f"{tmp_path}/runs/x",
    }


def test_the_command_line_refuses_an_empty_path(capsys):
    with pytest.raises(SystemExit) as caught:
        cli_main(["eval", "", "--episodes", "2"])
    assert caught.value.code == 2
    assert "must be a path, got an empty value" in capsys.readouterr().err


def test_a_checkpoint_trained_with_a_relative_catalog_evaluates_from_another_directory(
    small_catalog_path, tmp_path, monkeypatch, capsys
):
    """`fiq-gym train ... --catalog cat` in one directory, `fiq-gym eval` from another."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copytree(small_catalog_path, workdir / "cat")
    monkeypatch.chdir(workdir)
    from fiq_gym.agents.supervised import main as train_supervised

    train_supervised(
        ["--catalog", "cat", "--out", "run", "--rounds", "1", "--num-envs", "4", "--eval-episodes", "4"],
        prog="fiq-gym train supervised",
    )
    stored = json.loads((workdir / "run" / "checkpoint" / "config.json").read_text())["args"]
    assert stored["catalog"] == str(workdir / "cat") and stored["out"] == str(workdir / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert (
        cli_main(["eval", str(workdir / "run" / "checkpoint"), "--episodes", "4", "--isolation", "none"]) == 0
    )


def test_an_older_checkpoint_with_a_relative_catalog_names_the_fix(
    small_agent_checkpoint, tmp_path, monkeypatch
):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["args"]["catalog"] = "catalogs/small"  # as fiq-gym stored it before paths were resolved
    (checkpoint / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    agent = load_agent(checkpoint, load_model=False)
    with pytest.raises(
        CheckpointError, match=r"relative path 'catalogs/small', which is not found from .*--catalog"
    ):
        agent.env_kwargs()
    # The fix the message names works: the catalog given explicitly.
    assert agent.env_kwargs(catalog=str(small_catalog_path_of(small_agent_checkpoint)))["catalog"]
    # From the directory it was trained in, the relative path still means its catalog.
    (tmp_path / "catalogs").mkdir()
    os.symlink(small_catalog_path_of(small_agent_checkpoint), tmp_path / "catalogs" / "small")
    assert load_agent(checkpoint, load_model=False).catalog == str(tmp_path / "catalogs" / "small")


def small_catalog_path_of(checkpoint: Path) -> str:
    return json.loads((checkpoint / "config.json").read_text())["args"]["catalog"]


def test_fiq_gym_eval_defaults_to_the_set_the_trainer_evaluated_on(small_catalog_path, tmp_path, capsys):
    """The same run must read the same at the end of training and from `fiq-gym eval`."""
    from fiq_gym.agents import supervised
    from fiq_gym.envs.evaluation import training_evaluation_seed

    args = supervised.Args(
        catalog=str(small_catalog_path),
        out=str(tmp_path / "run"),
        rounds=2,
        num_envs=4,
        eval_episodes=12,
        seed=3,
    )
    _, trained = supervised.train(args, progress=False)
    checkpoint = tmp_path / "run" / "checkpoint"
    assert load_agent(checkpoint, load_model=False).training_evaluation == (training_evaluation_seed(3), 12)
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert cli_main(["eval", str(checkpoint), "--isolation", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "evaluation set: seed 10003, 12 dialogs (the set its trainer evaluated it on" in printed
    result = json.loads(out.read_text())
    assert result["episodes"] == 12 and "trainer evaluated it on" in result["meta"]["evaluation_set"]
    assert result["per_turn"] == trained.per_turn()
    # Another seed is named as another set.
    assert cli_main(["eval", str(checkpoint), "--isolation", "none", "--seed", "0"]) == 0
    assert (
        "evaluation set: seed 0, 12 dialogs (not the set its trainer evaluated it on"
        in capsys.readouterr().out
    )


def test_every_option_of_every_command_says_what_it_does():
    """`--help` of every command and trainer explains each option (issue 37: options without
    help text)."""
    silent = [
        f"{prog} {'/'.join(action.option_strings) or action.dest}"
        for prog, parser in _every_parser()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction)
        and not action.help
    ]
    assert not silent, f"options without help: {silent}"
