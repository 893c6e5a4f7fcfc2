"""The retriever a person plays against: a trained checkpoint, or the shipped default.

:func:`load_play_agent` reads a checkpoint written by ``fiq-gym train`` (a retriever:
supervised, policy gradient, policy improvement; or SB3 PPO), works out the environment it
was trained for (env id, catalog, the shopper whose words it learned, action mode, turns) and
checks that it fits. Without a checkpoint it loads the supervised retriever shipped in
``fiq_gym/play/default_agent/`` for the default catalog, after checking that the default
catalog is still the one it was trained on (same generator version and image features);
if not, the error gives the command that retrains it (:data:`RETRAIN_DEFAULT_COMMAND`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents.loading import load_agent
from fiq_gym.agents.retriever import load_checkpoint
from fiq_gym.catalog.model import Catalog
from fiq_gym.default_catalog import resolve_catalog
from fiq_gym.envs.evaluation import RetrievalAgent
from fiq_gym.envs.registration import EARLIER_VERSION, env_id_for, successor_env_id
from fiq_gym.text import CaptionTokenizer
from fiq_gym.utils.arguments import path_arg

__all__ = [
    "DEFAULT_AGENT_DIR",
    "RETRAIN_DEFAULT_COMMAND",
    "PlayAgent",
    "default_catalog_record",
    "export_default_agent",
    "load_play_agent",
]

DEFAULT_AGENT_DIR = Path(__file__).resolve().parent / "default_agent"
RETRAIN_DEFAULT_COMMAND = (
    "fiq-gym train supervised --out runs/play-default --threads 1 && "
    "python -m fiq_gym.play.agent runs/play-default/checkpoint"
)
_CATALOG_RECORD = "catalog.json"
_RETRAIN_DEFAULT = (
    f"; retrain it (about 3 minutes on one core), from the repository root: {RETRAIN_DEFAULT_COMMAND}"
)


@dataclass
class PlayAgent:
    """A loaded retriever plus the environment settings it was trained for.

    Attributes:
        name: shown to the person (``"supervised (shipped default)"``, a checkpoint path...).
        checkpoint: the checkpoint directory.
        kind: ``"retriever"`` (:class:`~fiq_gym.agents.RetrieverAgent`) or ``"ppo"``.
        catalog: the opened catalog it plays on.
        env_id: the registered env id it was trained on (fixes the category).
        shopper: the simulated shopper it was trained with (``"template"``, ``"transformer"``);
            a person's words are tokenized with that shopper's tokenizer (or with the
            checkpoint's own ``tokenizer.json`` when it has one), and watch mode plays that
            shopper.
        action_mode: the env action mode the agent speaks.
        max_turns: turns per dialog.
        tokenizer: the training shopper's tokenizer.
    """

    name: str
    checkpoint: Path
    kind: str
    catalog: Catalog
    env_id: str
    shopper: str
    action_mode: str
    max_turns: int
    tokenizer: CaptionTokenizer
    _model: Any = field(default=None, repr=False)

    @property
    def category(self) -> str | None:
        return gym.spec(self.env_id).kwargs.get("category")

    def describe(self) -> dict[str, Any]:
        """JSON-able summary, recorded with every dialog."""
        return {
            "name": self.name,
            "checkpoint": str(self.checkpoint),
            "kind": self.kind,
            "trained_with": self.shopper,
        }

    def make(self, env: gym.Env) -> RetrievalAgent:
        """A fresh batched agent (its own dialog state) for ``env``; raises ``ValueError`` if
        the checkpoint does not fit it."""
        return self._model.make_agent(env)


def default_catalog_record(catalog: Catalog) -> dict[str, Any]:
    """What the shipped agent remembers about the catalog it was trained on."""
    p = catalog.provenance
    features = p.get("features")
    if not isinstance(features, dict):
        features = {}
    return {
        "source": p.get("source"),
        "generator_version": p.get("generator_version"),
        "size": p.get("size"),
        "seed": p.get("seed"),
        "image_size": p.get("image_size"),
        "features_weights_sha256": features.get("weights_sha256"),
    }


def _check_default_fits(record: dict[str, Any], catalog: Catalog | None) -> None:
    """Fail loudly if the default catalog is no longer the one the shipped agent learned."""
    from fiq_gym.catalog import synthetic

    if record.get("generator_version") != synthetic.GENERATOR_VERSION:
        raise ValueError(
            f"the shipped default agent was trained on synthetic catalog generator version "
            f"{record.get('generator_version')}, but this fiq-gym generates version {synthetic.GENERATOR_VERSION}"
            + _RETRAIN_DEFAULT
        )
    if catalog is not None:
        mine = default_catalog_record(catalog)
        differs = [k for k, v in record.items() if mine.get(k) != v]
        if differs:
            raise ValueError(
                f"the shipped default agent was trained on another default catalog ({', '.join(differs)} differ: "
                f"{', '.join(f'{k}={record[k]!r} vs {mine.get(k)!r}' for k in differs)})" + _RETRAIN_DEFAULT
            )


def load_play_agent(
    checkpoint: str | os.PathLike | None = None,
    *,
    catalog: Catalog | str | os.PathLike | None = None,
    max_turns: int | None = None,
) -> PlayAgent:
    """Load an agent to play against.

    Args:
        checkpoint: a directory written by ``fiq-gym train AGENT`` (``.../checkpoint``), or
            None for the shipped supervised retriever (default catalog only).
        catalog: the catalog to play on; default: the one the agent was trained on.
        max_turns: turns per dialog; default: the agent's training setting.

    Raises:
        FileNotFoundError, ValueError: not a checkpoint, or it does not fit the catalog (the
            message names the mismatch and, for the shipped agent, the retrain command).
    """
    shipped = checkpoint is None
    path = DEFAULT_AGENT_DIR if checkpoint is None else Path(checkpoint).expanduser()
    if shipped:
        if not (path / "config.json").is_file() or not (path / _CATALOG_RECORD).is_file():
            raise FileNotFoundError(
                f"the shipped default agent is missing from the installation ({path}); train it with: "
                f"{RETRAIN_DEFAULT_COMMAND}"
            )
        record = json.loads((path / _CATALOG_RECORD).read_text(encoding="utf-8"))
        _check_default_fits(record, None)  # before building a catalog of a stale generator
        if catalog is not None:
            raise ValueError(
                "the shipped default agent only plays on the default catalog; for another catalog train one "
                "(fiq-gym train supervised --catalog DIR --out RUN) and pass --agent RUN/checkpoint"
            )
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        trained_on = str(config.get("args", {}).get("env_id"))
        if successor_env_id(trained_on) is not None:
            raise ValueError(
                f"the shipped default agent was trained on {trained_on}, {EARLIER_VERSION}" + _RETRAIN_DEFAULT
            )
    loaded = load_agent(path)
    opened = resolve_catalog(catalog if catalog is not None else loaded.catalog)
    if shipped:
        _check_default_fits(record, opened)
    turns = int(max_turns if max_turns is not None else loaded.max_turns)
    if turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {turns}")
    # A person's words are numbered as the agent learned them: the checkpoint's own
    # tokenizer, or the one of the shopper it was trained with.
    tokenizer = loaded.training_tokenizer(opened)
    label = "ppo" if loaded.kind == "ppo" else loaded.name
    name = f"{label} (shipped default)" if shipped else f"{label} ({path})"
    return PlayAgent(
        name=name,
        checkpoint=path,
        kind=loaded.kind,
        catalog=opened,
        env_id=loaded.env_id,
        shopper=loaded.user,
        action_mode=loaded.action_mode,
        max_turns=turns,
        tokenizer=tokenizer,
        _model=loaded,
    )


def export_default_agent(checkpoint: str | os.PathLike, out: str | os.PathLike = DEFAULT_AGENT_DIR) -> Path:
    """Copy a supervised checkpoint trained on the default catalog into ``out`` (the package's
    ``default_agent/``), with a record of that catalog so a stale copy fails loudly."""
    from fiq_gym.utils.atomic import atomic_directory

    checkpoint = Path(checkpoint)
    net, meta = load_checkpoint(checkpoint)
    args = meta.get("args", {})
    env_id = env_id_for("default")
    if args.get("catalog") is not None or args.get("env_id") != env_id:
        raise ValueError(
            f"{checkpoint} was not trained on the default catalog with {env_id} "
            f"(catalog={args.get('catalog')!r}, env_id={args.get('env_id')!r})"
        )
    catalog = resolve_catalog(None)
    with atomic_directory(out, overwrite=True) as tmp:
        shutil.copyfile(checkpoint / "model.safetensors", tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / _CATALOG_RECORD).write_text(json.dumps(default_catalog_record(catalog), indent=2) + "\n")
    del net
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m fiq_gym.play.agent CHECKPOINT [OUT]``: export the shipped default agent."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Copy a supervised retriever trained on the default catalog into the package "
        "as the default agent of `fiq-gym play` / `fiq-gym serve`."
    )
    parser.add_argument("checkpoint", type=path_arg, help="e.g. runs/play-default/checkpoint")
    parser.add_argument(
        "out", type=path_arg, nargs="?", default=str(DEFAULT_AGENT_DIR), help="default: the package's copy"
    )
    a = parser.parse_args(argv)
    out = export_default_agent(a.checkpoint, a.out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote the default agent to {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
