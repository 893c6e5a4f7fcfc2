"""Shoppers by name on a real catalog (issue 36, item 3): a transformer shopper trained on an
import's own captions is named ``"transformer:DIR"`` as the shopper, as the dataset shopper's
fallback (``fallback="transformer:DIR"``) and in one string (``"dataset:transformer:DIR"``, what
a trainer's ``--user`` takes); a shopper whose inputs do not fit the catalog is one line
naming the command that trains one that does.

The catalog is a Fashion IQ release written in the release's format (stand-in images) and
imported; the shopper is trained by ``fiq-gym user train --captions fashioniq:ROOT``.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.catalog.fashioniq import plan_fashioniq
from fiq_gym.catalog.importing import write_import
from fiq_gym.cli import main as cli
from fiq_gym.features.extract import import_extractor
from fiq_gym.users import DatasetUser
from fiq_gym.users.release_export import export_fashioniq_release
from fiq_gym.users.transformer.user import CheckpointMismatchError, TransformerUser

ENV = "fiq_gym/FashionIQ-v3"


@pytest.fixture(scope="module")
def release_and_import(small_catalog, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shoppers") / "release"
    export_fashioniq_release(small_catalog, root, pairs_per_split=40, seed=2, progress=False)
    out = root.parent / "catalog"
    write_import(
        plan_fashioniq(root, splits=("train", "val")),
        out,
        extractor=import_extractor("attribute-net"),
        progress=False,
    )
    return root, out


@pytest.fixture(scope="module")
def human_shopper(release_and_import) -> Path:
    """A small transformer shopper trained on the release's captions, by the documented command."""
    root, catalog = release_and_import
    out = catalog.parent / "shopper"
    status = cli(
        [
            "user", "train", "--catalog", str(catalog), "--captions", f"fashioniq:{root}", "--out", str(out),
            "--epochs", "1", "--bleu-pairs", "8", "--d-model", "32", "--num-heads", "2", "--ffn-dim", "64",
            "--num-decoder-layers", "1", "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    return out


def test_the_human_trained_shopper_by_name_as_shopper_and_as_fallback(release_and_import, human_shopper):
    _, catalog = release_and_import
    shopper = gym.make(ENV, catalog=str(catalog), user=f"transformer:{human_shopper}")
    assert isinstance(shopper.unwrapped.user, TransformerUser)
    _, info = shopper.reset(seed=0)
    assert info["caption_text"] and "human_caption" not in info
    # As the dataset shopper's fallback: turn 0 replays an annotator, turn 1 is the transformer's.
    with_fallback = gym.make(
        ENV,
        catalog=str(catalog),
        user="dataset",
        user_kwargs={"split": "val", "fallback": f"transformer:{human_shopper}"},
        start="annotated",
        start_split="val",
    )
    user = with_fallback.unwrapped.user
    assert isinstance(user, DatasetUser) and user.fallback is shopper.unwrapped.user  # one shopper, shared
    _, info = with_fallback.reset(seed=1)
    assert info["human_caption"] is True
    _, _, _, _, info = with_fallback.step((info["shown"] + 1) % with_fallback.unwrapped.num_items)
    assert info["human_caption"] is False and user.replayed == 1 and user.answered == 2
    # In one string, as a trainer's --user flag takes it.
    one_string = gym.make(ENV, catalog=str(catalog), user=f"dataset:transformer:{human_shopper}")
    assert one_string.unwrapped.user.fallback is shopper.unwrapped.user
    assert one_string.unwrapped.user.num_pairs > user.num_pairs  # every split replayed


def test_fallback_directories_resolve_from_the_working_directory(
    release_and_import, human_shopper, monkeypatch
):
    _, catalog = release_and_import
    monkeypatch.chdir(human_shopper.parent)
    env = gym.make(
        ENV,
        catalog=str(catalog),
        user="dataset",
        user_kwargs={"fallback": f"transformer:{human_shopper.name}"},
    )
    assert Path(env.unwrapped.user.fallback.checkpoint).resolve() == human_shopper.resolve()


def test_a_shopper_that_does_not_fit_the_import_names_the_command_that_trains_one(release_and_import):
    _, catalog = release_and_import
    fix = rf"fiq-gym user train --catalog {catalog} --captions catalog --out DIR, then name it 'transformer:DIR'"
    for kwargs in (
        {"user": "transformer"},
        {"user": "dataset", "user_kwargs": {"fallback": "transformer"}},
        {"user": "dataset:transformer"},
    ):
        # The shipped shopper reads 38 attribute columns; an import without --attributes has 0.
        with pytest.raises(
            CheckpointMismatchError, match=r"38 attribute columns vs the catalog's 0.*" + fix
        ) as caught:
            gym.make(ENV, catalog=str(catalog), **kwargs)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"user": "dataset:lm"},
            r"fallback must be one of \['template', 'transformer', 'transformer:DIR', 'lm:DIR'\]",
        ),
        ({"user": "dataset:dataset"}, r"fallback must be one of .*got 'dataset'"),
        ({"user": "dataset", "user_kwargs": {"fallback": "human"}}, r"fallback must be one of .*got 'human'"),
        (
            {"user": "dataset:template", "user_kwargs": {"fallback": "template"}},
            r"user='dataset:template' names the fallback.*name it once",
        ),
    ],
)
def test_fallback_names_that_cannot_work_are_refused(release_and_import, kwargs, message):
    _, catalog = release_and_import
    with pytest.raises(ValueError, match=message):
        gym.make(ENV, catalog=str(catalog), **kwargs)


def test_dataset_with_a_named_fallback_is_the_same_shopper_as_with_user_kwargs(release_and_import):
    _, catalog = release_and_import
    named = gym.make(ENV, catalog=str(catalog), user="dataset:template")
    spelled = gym.make(ENV, catalog=str(catalog), user="dataset", user_kwargs={"fallback": "template"})
    assert named.unwrapped.user.fallback is spelled.unwrapped.user.fallback
    assert named.reset(seed=3)[1]["caption_text"] == spelled.reset(seed=3)[1]["caption_text"]
