"""Checkpoints and run directories: one rule for every trainer, one clear error per damage."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sys

import gymnasium as gym
import pytest
import torch

from fiq_gym.agents.loading import load_agent
from fiq_gym.agents.supervised import Args, train
from fiq_gym.checkpoint import RUN_MARKER, prepare_run, read_training_state, run_kind, write_training_state
from fiq_gym.cli import main as cli_main
from fiq_gym.errors import CheckpointError


def _args(catalog, out, **overrides) -> Args:
    base = Args(
        catalog=str(catalog),
        num_envs=4,
        rounds=1,
        eval_every=1,
        eval_episodes=4,
        out=str(out),
        threads=1,
        negatives=8,
        embed_dim=16,
    )
    return dataclasses.replace(base, **overrides)


def test_training_state_round_trips_optimizer_model_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.manual_seed(5)
    write_training_state(tmp_path / "s", record={"round": 7}, optimizer=optimizer, model=model)
    expected_draw = torch.rand(3)

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.5)
    torch.manual_seed(99)
    record, _ = read_training_state(tmp_path / "s", optimizer=fresh_optimizer, model=fresh)
    assert record == {"round": 7}
    assert torch.equal(torch.rand(3), expected_draw)  # the generator continues where it was
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fresh_optimizer.param_groups[0]["lr"] == 0.01
    moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], moments)


def test_prepare_run_refuses_an_existing_run_and_an_empty_resume(tmp_path):
    out = tmp_path / "run"
    assert prepare_run(out, resume=False, overwrite=False, state=out / "checkpoint") is False
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match=r"--resume to continue it, --overwrite to replace it"):
        prepare_run(out, resume=False, overwrite=False, state=out / "checkpoint")
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == b"weights"  # nothing lost
    # A trainer without --resume is not told to use it.
    with pytest.raises(
        FileExistsError, match=r"already holds a run; pass --overwrite to replace it, or"
    ) as caught:
        prepare_run(out, resume=False, overwrite=False, state=out / "checkpoint", resumable=False)
    assert "--resume" not in str(caught.value)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        prepare_run(out, resume=True, overwrite=False, state=out / "checkpoint")
    with pytest.raises(ValueError, match="contradict"):
        prepare_run(out, resume=True, overwrite=True, state=out / "checkpoint")
    (out / "tb").mkdir()
    assert prepare_run(out, resume=False, overwrite=True, state=out / "checkpoint") is False
    # Emptied and marked as a run again, but for the old checkpoint: the new run's first save
    # replaces it atomically, so a run killed before then still leaves one (issue 35).
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "checkpoint"]
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == b"weights"


def test_overwrite_replaces_only_a_previous_run_of_the_same_kind(tmp_path):
    """--overwrite never empties a folder that did not hold a run (issue 35: `--out ~/thesis
    --overwrite` used to delete the thesis), nor a run of another kind; runs written before
    markers existed are still replaced."""
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("my own work")
    with pytest.raises(
        FileExistsError, match=r"refusing to overwrite .*thesis: it is not a fiq-gym run .*chapter1.tex"
    ):
        prepare_run(thesis, resume=False, overwrite=True, state=thesis / "checkpoint", kind="ppo")
    assert (thesis / "chapter1.tex").read_text() == "my own work"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    with pytest.raises(FileExistsError, match="it is not a fiq-gym run .*a file"):
        prepare_run(a_file, resume=False, overwrite=True, state=a_file / "checkpoint", kind="ppo")
    assert a_file.read_text() == "keep"
    run = tmp_path / "run"
    prepare_run(run, resume=False, overwrite=False, state=run / "checkpoint", kind="ppo")
    assert run_kind(run) == "ppo"
    (run / "checkpoint").mkdir()
    with pytest.raises(FileExistsError, match="it holds a ppo run, not a dqn run"):
        prepare_run(run, resume=False, overwrite=True, state=run / "checkpoint", kind="dqn")
    assert (run / "checkpoint").is_dir()
    (run / "events").write_text("old logs")
    prepare_run(run, resume=False, overwrite=True, state=run / "checkpoint", kind="ppo")
    assert not (run / "events").exists() and (run / "checkpoint").is_dir()  # kept until replaced
    legacy = tmp_path / "legacy"
    (legacy / "checkpoint").mkdir(parents=True)
    (legacy / "checkpoint" / "config.json").write_text("{}")
    assert run_kind(legacy) == "unmarked"
    prepare_run(legacy, resume=False, overwrite=True, state=legacy / "checkpoint", kind="retriever")
    assert run_kind(legacy) == "retriever"


def test_a_run_killed_while_overwrite_swaps_it_stays_a_run(tmp_path):
    """The marker is written before the old run is cleared, and a killed marker write's
    temporary does not make a directory "not a run": the next --overwrite takes it back."""
    run = tmp_path / "run"
    prepare_run(run, resume=False, overwrite=False, state=run / "checkpoint", kind="ppo")
    (run / f".{RUN_MARKER}.tmp-dead.part").write_text("{")  # a marker write killed mid-way
    (run / RUN_MARKER).unlink()
    # Only a dead temporary: an empty run directory, not a folder of someone's files.
    assert prepare_run(run, resume=False, overwrite=False, state=run / "checkpoint", kind="ppo") is False
    assert run_kind(run) == "ppo" and not (run / f".{RUN_MARKER}.tmp-dead.part").exists()


@pytest.mark.slow
def test_every_retriever_trainer_refuses_to_replace_a_run(small_catalog_path, tmp_path):
    out = tmp_path / "run"
    train(_args(small_catalog_path, out), progress=False)
    weights = (out / "checkpoint" / "model.safetensors").read_bytes()
    # The command line says what to do, exit code 2, and the trained checkpoint is untouched.
    argv = ["train", "supervised", "--catalog", str(small_catalog_path), "--out", str(out)]
    assert cli_main([*argv, "--rounds", "1", "--threads", "1"]) == 2
    for trainer in ("policy-gradient", "policy-improvement", "ppo"):
        assert cli_main(["train", trainer, "--catalog", str(small_catalog_path), "--out", str(out)]) == 2
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == weights
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(_args(small_catalog_path, tmp_path / "never-trained", resume=True), progress=False)
    assert not (tmp_path / "never-trained" / "checkpoint").exists()
    train(_args(small_catalog_path, out, seed=1, overwrite=True), progress=False)
    assert (out / "checkpoint" / "model.safetensors").read_bytes() != weights


def test_cli_names_the_existing_run_and_both_options(small_agent_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(small_agent_checkpoint, out / "checkpoint")
    assert cli_main(["train", "supervised", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert "Traceback" not in err


DAMAGES = {
    "truncated config": lambda d: (d / "config.json").write_text('{"format": "fiq-gym-retr'),
    "empty config": lambda d: (d / "config.json").write_text(""),
    "config is a list": lambda d: (d / "config.json").write_text("[1, 2]"),
    "missing config field": lambda d: _edit_config(d, lambda c: c["config"].pop("feature_dim")),
    "unknown config field": lambda d: _edit_config(d, lambda c: c["config"].update(colour=3)),
    "other format": lambda d: _edit_config(d, lambda c: c.update(format="something-else")),
    "truncated weights": lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:100]
    ),
    "garbage weights": lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage" * 10),
    "weights missing": lambda d: (d / "model.safetensors").unlink(),
    "no config": lambda d: (d / "config.json").unlink(),
    "string config field": lambda d: _edit_config(d, lambda c: c["config"].update(embed_dim="128")),
    "null config field": lambda d: _edit_config(d, lambda c: c["config"].update(feature_dim=None)),
    "negative config field": lambda d: _edit_config(d, lambda c: c["config"].update(num_items=-5)),
    "bool config field": lambda d: _edit_config(d, lambda c: c["config"].update(text_layers=True)),
    "newer version": lambda d: _edit_config(d, lambda c: c.update(version=99)),
    "string version": lambda d: _edit_config(d, lambda c: c.update(version="1")),
    "args not an object": lambda d: _edit_config(d, lambda c: c.update(args=["catalog"])),
    "string max_turns": lambda d: _edit_config(d, lambda c: c["args"].update(max_turns="4")),
    "negative max_turns": lambda d: _edit_config(d, lambda c: c["args"].update(max_turns=-1)),
    "null user": lambda d: _edit_config(d, lambda c: c["args"].update(user=None)),
    "numeric catalog": lambda d: _edit_config(d, lambda c: c["args"].update(catalog=7)),
    "unknown action mode": lambda d: _edit_config(d, lambda c: c["args"].update(action_mode="teleport")),
    "explore out of range": lambda d: _edit_config(d, lambda c: c["args"].update(explore=1.5)),
    "bool shortlist size": lambda d: _edit_config(d, lambda c: c["args"].update(shortlist_size=True)),
    "caption length out of range": lambda d: _edit_config(d, lambda c: c["args"].update(caption_length=0)),
}
EXPECTED = {
    "truncated config": r"config.json is not valid JSON \(line 1",
    "empty config": r"config.json is not valid JSON",
    "config is a list": r"holds a JSON list, not a checkpoint config object",
    "missing config field": r"missing \['feature_dim'\] fields",
    "unknown config field": r"unknown \['colour'\] fields",
    "other format": r"is a 'something-else' checkpoint, not an agent checkpoint",
    "truncated weights": r"model.safetensors is truncated or not a safetensors file",
    "garbage weights": r"model.safetensors is truncated or not a safetensors file",
    "weights missing": r"model.safetensors is missing",
    "no config": r"is not an agent checkpoint \(it has no config.json\)",
    "string config field": r"'embed_dim' in the model config is '128', not an integer",
    "null config field": r"'feature_dim' in the model config is None, not an integer",
    "negative config field": r"invalid model config \(num_items must be at least 1, got -5\)",
    "bool config field": r"'text_layers' in the model config is True, not an integer",
    "newer version": r"is a version 99 checkpoint, written by a newer fiq-gym; .* reads version 1: upgrade",
    "string version": r"its version is '1', not a positive integer; the checkpoint is damaged",
    "args not an object": r"training arguments not stored as a JSON object \(found list\)",
    "string max_turns": r"'max_turns' in the training arguments is '4', not an integer",
    "negative max_turns": r"invalid training arguments \(max_turns must be an integer from 1 to 1000, got -1\)",
    "null user": r"'user' in the training arguments is None, not a string",
    "numeric catalog": r"'catalog' in the training arguments is 7",
    "unknown action mode": r"action_mode must be one of \['index', 'query', 'scores', 'shortlist', 'slate', 'shortlist_slate'\], got 'teleport'",
    "explore out of range": r"explore must be a fraction in \[0, 1\], got 1.5",
    "bool shortlist size": r"'shortlist_size' in the training arguments is True",
    # an env argument load_agent has no code for is checked by EnvConfig's rule
    "caption length out of range": r"invalid training arguments \(caption_length must be a positive integer, got 0\)",
}


def _edit_config(directory, change) -> None:
    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_names_the_file_and_the_fix(damage, small_agent_checkpoint, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    DAMAGES[damage](checkpoint)
    with pytest.raises(CheckpointError, match=EXPECTED[damage]) as caught:
        load_agent(checkpoint)
    assert "fiq-gym" in str(caught.value)  # the fix names a command
    assert cli_main(["eval", str(checkpoint), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fiq-gym: error: ") and len(err.strip().splitlines()) == 1


def test_a_retriever_checkpoint_is_not_a_shopper(small_agent_checkpoint, small_catalog_path):
    with pytest.raises(
        CheckpointError, match=r"not a relative-captioner checkpoint \(it is a 'fiq-gym-retriever'"
    ):
        gym.make(
            "fiq_gym/FashionIQ-v3",
            catalog=str(small_catalog_path),
            user=f"transformer:{small_agent_checkpoint}",
        )


def test_load_agent_builds_the_training_env_and_checks_the_fit(small_agent_checkpoint, small_catalog_path):
    loaded = load_agent(small_agent_checkpoint)
    assert (loaded.kind, loaded.name, loaded.action_mode, loaded.max_turns) == (
        "retriever",
        "supervised",
        "scores",
        4,
    )
    envs = loaded.make_envs(2)
    try:
        agent = loaded.make_agent(envs)
        obs, info = envs.reset(seed=0)
        agent.reset(obs, info, info["dialog_turn"] == 0)
        assert agent.act(obs, info).shape == (2, envs.unwrapped.num_items)
    finally:
        envs.close()
    index_envs = gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=1,
        vectorization_mode="vector_entry_point",
        catalog=str(small_catalog_path),
        action_mode="index",
    )
    with pytest.raises(CheckpointError, match="speaks action_mode='scores'"):
        loaded.make_agent(index_envs)
    index_envs.close()


def test_the_training_tokenizer_is_the_training_envs_without_building_it(small_agent_checkpoint):
    """An agent evaluated with another shopper reads captions with its training shopper's
    tokenizer: the training env's token ids, learned without making that env."""
    loaded = load_agent(small_agent_checkpoint, load_model=False)
    envs = gym.make_vec(
        loaded.env_id,
        num_envs=1,
        vectorization_mode="vector_entry_point",
        catalog=loaded.catalog,
        user=loaded.user,
    )
    try:
        expected = envs.unwrapped.tokenizer
    finally:
        envs.close()
    tokenizer = loaded.training_tokenizer()
    texts = ["is darker and has longer sleeves", "unknown words here", ""]
    assert tokenizer.vocab_size == expected.vocab_size
    assert (tokenizer.encode_batch(texts, 12)[0] == expected.encode_batch(texts, 12)[0]).all()
    assert loaded.env_kwargs(user="transformer")["tokenizer"].vocab_size == expected.vocab_size


@pytest.mark.parametrize(
    ("recorded", "successor"),
    [
        ("fiq_gym/FashionIQ-v1", "fiq_gym/FashionIQ-v3"),
        ("fiq_gym/FashionIQ-v0", "fiq_gym/FashionIQ-v3"),
        ("fiq_gym/FashionIQDress-v1", "fiq_gym/FashionIQDress-v3"),
    ],
)
def test_a_checkpoint_of_an_earlier_env_version_is_refused_with_the_fix(
    recorded, successor, small_agent_checkpoint, tmp_path, capsys
):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    _edit_config(checkpoint, lambda c: c["args"].update(env_id=recorded))
    with pytest.raises(CheckpointError) as caught:
        load_agent(checkpoint)
    message = str(caught.value)
    assert f"trained on {recorded}, an environment version this fiq-gym no longer has" in message
    assert f"Retrain it on {successor} (fiq-gym train AGENT --env-id {successor}" in message
    assert "fiq-gym 0.1.0 (pip install 'fiq-gym @ git+https://github.com/fiq-gym/fiq-gym@1aa6837'" in message
    assert cli_main(["eval", str(checkpoint), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fiq-gym: error: ") and len(err.strip().splitlines()) == 1


def test_a_checkpoint_without_an_env_id_plays_the_current_default_id(small_agent_checkpoint, tmp_path):
    """Single-shot retrievers learn from human captions, not in an env, and record no env id."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    _edit_config(checkpoint, lambda c: c["args"].pop("env_id"))
    assert load_agent(checkpoint).env_id == "fiq_gym/FashionIQ-v3"


# --- the training env of a loaded agent: one record of EnvConfig arguments ----------------------


def test_an_env_argument_a_checkpoint_records_reaches_its_env_through_the_one_record(
    small_agent_checkpoint, tmp_path
):
    """``caption_length`` is an env argument no trainer records yet and LoadedAgent names
    nowhere: recorded by name, it reaches the env, and the env is the record's config."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    _edit_config(checkpoint, lambda c: c["args"].update(caption_length=12))
    loaded = load_agent(checkpoint, load_model=False)
    assert loaded.env_arguments["caption_length"] == 12
    assert loaded.env_kwargs()["caption_length"] == 12
    env = loaded.make_env()
    try:
        assert env.unwrapped.env_config.caption_length == 12
        assert env.observation_space["caption"].shape == (12,)
        assert env.unwrapped.env_config == loaded.env_config
    finally:
        env.close()


def test_an_override_replaces_exactly_that_argument(small_agent_checkpoint, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    _edit_config(checkpoint, lambda c: c["args"].update(caption_length=12))
    loaded = load_agent(checkpoint, load_model=False)
    base = loaded.env_kwargs()
    assert loaded.env_kwargs(caption_length=7) == {**base, "caption_length": 7}
    assert loaded.env_kwargs(max_turns=2) == {**base, "max_turns": 2}
    assert loaded.env_kwargs(catalog="/elsewhere") == {**base, "catalog": "/elsewhere"}
    assert loaded.env_kwargs(start="annotated") == {**base, "start": "annotated"}
    # The record itself is not changed by an override.
    assert loaded.env_arguments["caption_length"] == 12 and loaded.max_turns == 4


def _settings_only_checkpoint(directory, checkpoint_format, args):
    """A checkpoint's config.json alone: what load_agent(..., load_model=False) reads."""
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"format": checkpoint_format, "args": args}))
    return directory


def test_the_earlier_attributes_read_the_record_and_the_learning_signal_stays_out(tmp_path):
    """A shortlist PPO run's arguments, as `fiq-gym train ppo` records them: its env arguments
    are replayed where its mode reads them, its reward and the slate's size (not read in the
    shortlist mode) are not, and what its env id fixes is left to the id."""
    from fiq_gym.agents.loading import NOT_REPLAYED
    from fiq_gym.checkpoint import PPO_FORMAT

    args = {
        "env_id": "fiq_gym/FashionIQDress-v3",
        "catalog": "/catalogs/small",
        "user": "transformer",
        "max_turns": 6,
        "action_mode": "shortlist",
        "shortlist_size": 8,
        "shortlist": "random",
        "explore": 0.25,
        "slate_size": 3,
        "start": "annotated",
        "start_split": "val",
        "reward": "delta",
        "learning_rate": 0.001,
        "seed": 1,
    }
    loaded = load_agent(_settings_only_checkpoint(tmp_path / "ppo", PPO_FORMAT, args), load_model=False)
    expected = {
        "catalog": "/catalogs/small",
        "user": "transformer",
        "action_mode": "shortlist",
        "max_turns": 6,
        "shortlist_size": 8,
        "shortlist": "random",
        "explore": 0.25,
        "start": "annotated",
        "start_split": "val",
    }
    assert dict(loaded.env_arguments) == expected
    assert loaded.env_kwargs() == {**expected, "tokenizer": None}
    assert "reward" in NOT_REPLAYED
    assert (loaded.catalog, loaded.user, loaded.action_mode, loaded.max_turns) == (
        "/catalogs/small",
        "transformer",
        "shortlist",
        6,
    )
    assert loaded.shortlist == {"shortlist_size": 8, "shortlist": "random", "explore": 0.25}
    assert loaded.start == {"start": "annotated", "start_split": "val"}
    assert loaded.observation_keys is None
    with pytest.raises(AttributeError):
        loaded.max_turns = 3  # read-only: the record is the one place they live
    # The whole config: the id's category, the env's defaults for what nobody recorded.
    config = loaded.env_config
    assert (config.category, config.shortlist_size, config.reward, config.slate_size) == (
        "dress",
        8,
        "percentile",
        4,
    )


def test_a_checkpoint_recording_only_some_arguments_gets_the_env_defaults_for_the_rest(tmp_path):
    from fiq_gym.checkpoint import DQN_FORMAT

    loaded = load_agent(_settings_only_checkpoint(tmp_path / "dqn", DQN_FORMAT, {}), load_model=False)
    assert dict(loaded.env_arguments) == {
        "catalog": None,
        "user": "template",
        "action_mode": "shortlist",
        "max_turns": 5,
    }
    assert (loaded.shortlist, loaded.start) == ({}, {})


def test_the_record_is_read_only_and_checked_by_the_env_configs_rules():
    from fiq_gym.agents.loading import TrainingEnvArguments

    record = TrainingEnvArguments({"action_mode": "index", "max_turns": 3})
    with pytest.raises(TypeError):
        record["max_turns"] = 4  # type: ignore[index]  # a Mapping, not a dict
    assert record.replace(max_turns=4)["max_turns"] == 4 and record["max_turns"] == 3
    with pytest.raises(ValueError, match=r"max_turns must be an integer from 1 to 1000, got 0"):
        record.replace(max_turns=0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'max_turn'; did you mean 'max_turns'"):
        TrainingEnvArguments({"max_turn": 3})


TRAINER_ARGS = [
    "fiq_gym.agents.supervised:Args",
    "fiq_gym.agents.policy_gradient:Args",
    "fiq_gym.agents.policy_improvement:Args",
    "fiq_gym.agents.ppo:Args",
    "fiq_gym.agents.single_shot:Args",
    "fiq_gym.features.train_args:TrainArgs",
    "fiq_gym.users.transformer.train_args:TrainArgs",
]


@pytest.mark.parametrize("where", TRAINER_ARGS)
def test_every_trainer_flag_has_help_and_one_spelling(where):
    import importlib

    from fiq_gym.utils.arguments import field_docs

    module, name = where.split(":")
    cls = getattr(importlib.import_module(module), name)
    names = [f.name for f in dataclasses.fields(cls)]
    assert not [n for n in names if not field_docs(cls).get(n)], "fields without help text"
    # One spelling per concept across trainers.
    assert "lr" not in names and "num_rounds" not in names


@pytest.mark.parametrize(
    "agent", ["supervised", "policy-gradient", "policy-improvement", "ppo", "single-shot"]
)
def test_train_help_names_the_subcommand(agent, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", agent, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fiq-gym train {agent} ")
    assert "--learning-rate" in out and "(default: " in out


def test_init_optimizer_continues_the_init_runs_adam(small_catalog_path, tmp_path):
    from fiq_gym.agents.loading import start_retriever_run
    from fiq_gym.agents.supervised import make_envs

    first = _args(small_catalog_path, tmp_path / "first", rounds=2)
    train(first, progress=False)
    init = str(tmp_path / "first" / "checkpoint")
    envs = make_envs(first, training=True, num_envs=2)
    try:
        restarted = start_retriever_run(_args(small_catalog_path, tmp_path / "a", init=init), envs)[1]
        continued = start_retriever_run(
            _args(small_catalog_path, tmp_path / "b", init=init, init_optimizer=True, learning_rate=5e-4),
            envs,
        )[1]
    finally:
        envs.close()
    assert restarted.state_dict()["state"] == {}  # a fresh Adam
    state = continued.state_dict()["state"]
    assert state and all(int(v["step"]) == 2 for v in state.values())  # two rounds of moments
    assert continued.param_groups[0]["lr"] == 5e-4  # this run's learning rate, not the saved one


def test_weights_get_the_same_file_mode_as_every_other_file(tmp_path):
    """safetensors creates its files 0600; a run's other files follow the umask (0644 under
    022), so a shared checkpoint was unreadable to others for its weights only (issue 35)."""
    import os

    import torch

    from fiq_gym.checkpoint import save_tensors
    from fiq_gym.utils.atomic import atomic_directory

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "ckpt") as tmp:
            save_tensors(tmp / "model.safetensors", {"w": torch.zeros(3)})
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.json": 0o644}


FEATURE_DAMAGES = {
    "string feature_dim": (
        lambda c: c["architecture"].update(feature_dim="45"),
        r"feature_dim must be an integer",
    ),
    "negative channel": (
        lambda c: c["architecture"].update(channels=[32, -48, 96, 128]),
        r"channels\[1\] must be",
    ),
    "zero pooled side": (
        lambda c: c["architecture"].update(pooled_side=0),
        r"pooled_side must be an integer of at least 1",
    ),
    "string image size": (
        lambda c: c["architecture"].update(image_size="64"),
        r"image_size must be 2 integers",
    ),
    "string multilabel": (
        lambda c: c["architecture"]["heads"][0].update(multilabel="no"),
        r"heads\[0\] needs",
    ),
    "no heads": (lambda c: c["architecture"].pop("heads"), r"has no 'heads' field"),
}


@pytest.mark.parametrize("damage", sorted(FEATURE_DAMAGES))
def test_a_damaged_attribute_network_checkpoint_is_one_line(damage, tmp_path):
    """Values that built a network failing deep in torch, or loaded silently ("45", -48)."""
    from fiq_gym.features.model import DEFAULT_CHECKPOINT, load_checkpoint

    checkpoint = tmp_path / "net"
    shutil.copytree(DEFAULT_CHECKPOINT, checkpoint)
    edit, expected = FEATURE_DAMAGES[damage]
    config = json.loads((checkpoint / "config.json").read_text())
    edit(config)
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=expected) as caught:
        load_checkpoint(checkpoint)
    assert str(caught.value).startswith(str(checkpoint / "config.json")) and "\n" not in str(caught.value)


CAPTIONER_DAMAGES = {
    "string d_model": ({"d_model": "x"}, r"'d_model' in the captioner config is 'x', not an integer"),
    "zero heads": ({"num_heads": 0}, r"num_heads must be at least 1, got 0"),
    "negative heads": ({"num_heads": -2}, r"num_heads must be at least 1, got -2"),
    "negative layers": ({"num_encoder_layers": -1}, r"num_encoder_layers must be at least 0"),
    "null vocabulary": ({"vocab_size": None}, r"'vocab_size' in the captioner config is None"),
    "dropout out of range": ({"dropout": 5.0}, r"dropout must be in \[0, 1\)"),
    "string flag": (
        {"use_attributes": "yes"},
        r"'use_attributes' in the captioner config is 'yes', not true or false",
    ),
    "word id outside the vocabulary": (
        {"bos_token_id": -5},
        r"bos_token_id must be a word id below vocab_size",
    ),
    "names not a list": ({"attribute_names": 3}, r"'attribute_names' .* is 3, not a list of strings"),
}


@pytest.mark.parametrize("damage", sorted(CAPTIONER_DAMAGES))
def test_a_damaged_captioner_checkpoint_is_one_line(damage, small_catalog_path, tmp_path, capsys):
    """num_heads=-2 used to load a model without layers; 0 ended in a ZeroDivisionError."""
    from fiq_gym.users.transformer.user import DEFAULT_CHECKPOINT, load_captioner

    checkpoint = tmp_path / "captioner"
    shutil.copytree(DEFAULT_CHECKPOINT, checkpoint)
    change, expected = CAPTIONER_DAMAGES[damage]
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(change)
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=expected):
        load_captioner(checkpoint)
    command = ["user", "caption", "--checkpoint", str(checkpoint), "--catalog", str(small_catalog_path)]
    assert cli_main([*command, "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fiq-gym: error: ") and len(err.strip().splitlines()) == 1


def test_the_old_module_of_load_agent_still_works_and_warns(monkeypatch):
    """``fiq_gym.agents.checkpoint`` (renamed ``fiq_gym.agents.loading``) stays importable for
    users' scripts, with a DeprecationWarning that names the new module."""
    from fiq_gym.agents import loading

    monkeypatch.delitem(sys.modules, "fiq_gym.agents.checkpoint", raising=False)
    with pytest.warns(DeprecationWarning, match="fiq_gym.agents.loading"):
        old = importlib.import_module("fiq_gym.agents.checkpoint")
    assert old.load_agent is loading.load_agent and old.LoadedAgent is loading.LoadedAgent
    assert old.ACTION_MODES == loading.ACTION_MODES and set(old.__all__) == set(loading.__all__)
