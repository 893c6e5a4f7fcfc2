"""The docs that restate the spec are written from the code (tools/spec_docs.py): the env
docstring's gym.make block and argument list from EnvConfig, the action-mode tables of the env
docstring and docs/rl.md from the ActionMode classes. Committed text that the code no longer
gives fails here, naming the command that rewrites it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from fiq_gym import action_modes
from fiq_gym.action_modes import MODES, IndexMode
from fiq_gym.env_config import EnvConfig
from fiq_gym.envs.fashion_iq import FashionIQEnv

TOOL = Path(__file__).resolve().parents[1] / "tools" / "spec_docs.py"


@pytest.fixture(scope="module")
def spec_docs():
    spec = importlib.util.spec_from_file_location("spec_docs", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["spec_docs"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("spec_docs", None)


def test_the_generated_docs_are_what_the_code_gives(spec_docs):
    assert spec_docs.stale() == [], "run python tools/spec_docs.py and commit what it writes"


def test_every_argument_is_listed_once_with_its_docstring(spec_docs):
    docs = spec_docs.field_docs()
    assert list(docs) == list(EnvConfig.names())
    arguments = FashionIQEnv.__doc__.split("## Arguments")[1].split("## Registered")[0]
    for name in EnvConfig.names():
        assert arguments.count(f"* ``{name}``:") == 1, name
        # The bullet carries the docstring's words (its first few, rewrapped).
        first_words = " ".join(docs[name].split()[1:4])
        assert first_words in " ".join(arguments.split()), name
    assert f"max_turns={EnvConfig().max_turns}" in arguments


def test_the_mode_tables_have_every_mode_and_the_spaces_the_classes_build(spec_docs):
    rl = (TOOL.parents[1] / "docs" / "rl.md").read_text(encoding="utf-8")
    table = rl.split("<!-- spec:action-modes")[1].split("<!-- /spec:action-modes -->")[0]
    for row in spec_docs.mode_rows():
        assert f"`{row.name}`" in table and f"`{row.space}`" in table
    assert "`index` (default)" in table
    spaces = {row.name: row.space for row in spec_docs.mode_rows()}
    assert spaces == {
        "index": "Discrete(N)",
        "query": "Box(-1, 1, (D,), float32)",
        "scores": "Box(-1, 1, (N,), float32)",
        "shortlist": "Discrete(K)",
        "slate": "MultiDiscrete([N] * K)",
        "shortlist_slate": "MultiDiscrete([M] * K)",
    }
    assert list(spaces) == list(MODES)


def test_a_drifted_table_or_mode_docstring_is_caught(spec_docs, monkeypatch):
    # A hand edit of a generated block is stale.
    block = next(b for b in spec_docs.BLOCKS if b.path.name == "rl.md")
    text = block.path.read_text(encoding="utf-8")
    edited = text.replace("`Discrete(N)`", "`Discrete(M)`", 1)
    assert edited != text and spec_docs.render(edited, block) == text

    # A new mode appears in the tables; one whose docstring names another space is refused.
    class WideMode(IndexMode):
        """``Discrete(N)``: the item, twice as wide."""

        name = "wide"

    class WrongMode(IndexMode):
        """``Discrete(K)``: says K, builds N."""

        name = "wrong"

    monkeypatch.setitem(action_modes.MODES, "wide", WideMode)
    assert "`wide`" in spec_docs.mode_table()
    monkeypatch.setitem(action_modes.MODES, "wrong", WrongMode)
    with pytest.raises(SystemExit, match=r"WrongMode's docstring must open with ``Discrete\(N\)``"):
        spec_docs.mode_rows()


def test_check_mode_writes_nothing_and_says_what_is_stale(spec_docs, tmp_path, monkeypatch, capsys):
    page = tmp_path / "rl.md"
    page.write_text("x\n<!-- spec:action-modes -->\nold\n<!-- /spec:action-modes -->\n", encoding="utf-8")
    block = spec_docs.Block("a test page", page, spec_docs._marked("action-modes"), spec_docs.mode_table)
    monkeypatch.setattr(spec_docs, "REPOSITORY", tmp_path)
    monkeypatch.setattr(spec_docs, "BLOCKS", (block,))
    assert spec_docs.main(["--check"]) == 1
    assert "stale: rl.md: a test page" in capsys.readouterr().err
    assert "old" in page.read_text(encoding="utf-8")
    assert spec_docs.main([]) == 0
    assert spec_docs.main(["--check"]) == 0
    assert "`shortlist_slate`" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("action_mode", list(MODES))
def test_the_key_tables_list_what_an_env_of_each_mode_returns_with_the_spaces_it_builds(
    spec_docs, small_catalog_path, action_mode
):
    """The observation and info tables are the code's keys, spaces and descriptions: every key
    a real env returns is a row of a mode that adds it, with the space the env built written
    back for its sizes, and every key its mode adds is returned."""
    settings: dict[str, Any] = {"max_turns": 4, "caption_length": 11, "shortlist_size": 7, "slate_size": 3}
    if MODES[action_mode].uses_first_stage:
        settings["shortlist"] = "random"  # the shipped first stage fits the default catalog only
    env = FashionIQEnv(catalog=small_catalog_path, action_mode=action_mode, expose_target=True, **settings)
    observation_rows = {row.name: row for row in spec_docs.observation_rows()}
    info_rows = {row.name: row for row in spec_docs.info_rows()}
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert set(info) <= set(info_rows)
    assert {k for k, r in info_rows.items() if action_mode in r.modes} <= set(info)
    inner = env.unwrapped
    sizes = {
        "N": inner.gallery.features.shape[0],
        "D": inner.gallery.features.shape[1],
        "A": inner.gallery.side_info.shape[1],
        "V": inner.tokenizer.vocab_size,
        "L": settings["caption_length"],
        "T": settings["max_turns"],
    }
    for key, space in env.observation_space.spaces.items():
        row = observation_rows[key]
        assert row.modes == () or action_mode in row.modes, key
        k = settings["slate_size"] if key.startswith("slate_") else settings["shortlist_size"]
        names = _evaluated(spec_docs._expressions(spec_docs._OBSERVATION_SIZES), {**sizes, "K": k})
        assert spec_docs.written_space(space, names) == row.kind, key
    env.close()


def _evaluated(expressions: dict[int, str], sizes: dict[str, int]) -> dict[int, str]:
    """The docs' size expressions (``"(T+1)*D"``...) keyed by their value for ``sizes``; the
    test's sizes are chosen so that no two coincide."""
    out = {eval(expression, {}, dict(sizes)): expression for expression in expressions.values()}
    assert len(out) == len(expressions), f"sizes coincide: {sizes}"
    return out


def test_a_key_without_a_description_is_refused(spec_docs, monkeypatch):
    from fiq_gym import dialog_engine

    docs = dict(dialog_engine.OBSERVATION_KEY_DOCS)
    del docs["turn"]
    monkeypatch.setattr(dialog_engine, "OBSERVATION_KEY_DOCS", docs)
    with pytest.raises(SystemExit, match=r"observation keys without a description: \['turn'\]"):
        spec_docs.observation_rows()
    monkeypatch.setitem(action_modes.MODE_INFO_KEY_DOCS, "never_made", ("int", "no mode adds it"))
    with pytest.raises(SystemExit, match=r"described but never made: \['never_made'\]"):
        spec_docs.info_rows()


def test_a_field_added_to_the_config_becomes_a_parameter_of_both_envs(spec_docs, tmp_path, monkeypatch):
    """Adding an env argument is adding an EnvConfig field (and reading it where it is used):
    this script writes it into both constructors' parameters and the docstring's lists."""
    source = spec_docs.CONFIG_MODULE.read_text(encoding="utf-8")
    anchor = "\n    def __post_init__(self)"
    assert source.count(anchor) == 1
    added = '    patience: int | None = field(default=3, metadata={})\n    """Turns to wait."""\n' + anchor
    config = tmp_path / "env_config.py"
    config.write_text(source.replace(anchor, added), encoding="utf-8")
    monkeypatch.setattr(spec_docs, "CONFIG_MODULE", config)
    lines = spec_docs.parameter_lines().splitlines()
    assert lines[-1] == "        patience: int | None = 3,"
    assert lines[-2] == '        scoring: str = "float32",'
    for block in spec_docs.BLOCKS[:2]:
        text = block.path.read_text(encoding="utf-8")
        written = spec_docs.render(text, block)
        assert "        patience: int | None = 3,\n" in written and written != text
        # Only the parameter block changes: the rest of the module is left as it was.
        assert written.replace("        patience: int | None = 3,\n", "", 1) == text
    # Its docstring is read from the same source for the docstring's argument list.
    assert spec_docs.field_docs()["patience"] == "Turns to wait."


def test_a_hand_edited_parameter_is_stale(spec_docs):
    block = spec_docs.BLOCKS[1]  # the vector env's
    text = block.path.read_text(encoding="utf-8")
    edited = text.replace("        caption_length: int = 32,\n", "        caption_length: int = 16,\n", 1)
    assert edited != text and spec_docs.render(edited, block) == text
    assert "        max_turns: int | None = None,\n" in text  # its override
