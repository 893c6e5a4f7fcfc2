"""Checkpoints and training state: the one place that reads and writes them.

Every trainer in fiq-gym (the retrievers, the feature network, the transformer shopper) keeps
two kinds of directory, both written atomically (see :mod:`fiq_gym.utils.atomic`):

* a **checkpoint**: what a trained model needs to be used. ``config.json`` (an object with a
  ``format`` string, the model's config, the training arguments and library versions) and
  ``model.safetensors`` (or a Hugging Face ``save_pretrained`` directory);
* a **training state**: what a run needs to continue exactly where it stopped. ``state.json``
  (counters, arguments, optimizer hyper-parameters) and ``state.safetensors`` (optimizer
  moments, the torch RNG state, optionally the weights). No pickles: a checkpoint from
  elsewhere can be opened without running its code.

A **run directory** (``--out``) holds a run's checkpoint, training state and logs.
:func:`prepare_run` decides, the same way for every trainer, what happens when it already
exists: ``--resume`` continues it (and fails if there is nothing to continue),
``--overwrite`` replaces it, and neither refuses to touch it.

Reading is strict and every failure names the file and the fix: a missing directory, a
``config.json`` that is not JSON, not an object, of another format, or with missing or
unknown fields, and a truncated or foreign ``.safetensors`` file all raise
:class:`~fiq_gym.errors.CheckpointError` (a ``ValueError``), or ``FileNotFoundError`` for
paths that do not exist.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model

from fiq_gym import __version__
from fiq_gym.checkpoint_formats import (
    BEHAVIOUR_CLONING_FORMAT,
    CLEANRL_PPO_FORMAT,
    DQN_FORMAT,
    PPO_FORMAT,
    RECURRENT_REINFORCE_FORMAT,
    RLLIB_PPO_FORMAT,
)
from fiq_gym.errors import CheckpointError
from fiq_gym.utils.arguments import absolute_catalog, absolute_path, absolute_spec
from fiq_gym.utils.atomic import atomic_directory, atomic_write_text, recover_directory
from fiq_gym.utils.jsonfile import read_json

__all__ = [
    "BEHAVIOUR_CLONING_FORMAT",
    "CHECKPOINT_VERSION",
    "CLEANRL_PPO_FORMAT",
    "DQN_FORMAT",
    "PPO_FORMAT",
    "RECURRENT_REINFORCE_FORMAT",
    "RLLIB_PPO_FORMAT",
    "RUN_MARKER",
    "STATE_JSON",
    "STATE_TENSORS",
    "CheckpointError",
    "PolicyConfig",
    "config_fields",
    "load_policy_weights",
    "load_tensors",
    "portable_args",
    "prepare_run",
    "read_config",
    "read_training_state",
    "run_kind",
    "save_policy",
    "save_sb3_model",
    "save_tensors",
    "versions",
    "write_training_state",
]

# The agents' checkpoint formats (PPO_FORMAT...) live in fiq_gym.checkpoint_formats, which
# imports nothing, so the agent registry reads them without torch; trainers import them here.
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
#: the weights of a :func:`save_policy` checkpoint
POLICY_TENSORS = "model.safetensors"
#: The layout version of every agent checkpoint's ``config.json`` (its ``version`` field; a
#: checkpoint without one is version 1). A reader refuses versions it does not know rather than
#: guess what a newer fiq-gym meant.
CHECKPOINT_VERSION = 1

#: Training-argument fields that hold a path or a ``NAME:DIR`` spec: a checkpoint stores them
#: absolute, so it still works from another working directory.
_PATH_ARGUMENTS = {
    "out": absolute_path,
    "init": absolute_path,
    "datasets_path": absolute_path,
    "work_dir": absolute_path,
    "catalog": absolute_catalog,
    "user": absolute_spec,
    "shortlist": absolute_spec,
    "captions": absolute_spec,
}


def portable_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """A run's arguments as a checkpoint stores them: the paths and ``NAME:DIR`` specs among
    them made absolute against the current directory (the command line already did this for
    arguments it parsed; this covers runs started from Python with relative paths)."""
    return {
        key: _PATH_ARGUMENTS[key](value)
        if key in _PATH_ARGUMENTS and isinstance(value, str) and value
        else value
        for key, value in args.items()
    }


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint (to explain a later mismatch)."""
    return {
        "fiq_gym": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --- reading checkpoints --------------------------------------------------------------------------


def read_config(
    directory: str | os.PathLike, *, formats: Collection[str], what: str, fix: str
) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory whose ``format`` is one of
    ``formats``.

    Args:
        directory: the checkpoint directory.
        formats: accepted values of the config's ``format`` field.
        what: how to name the expected checkpoint in messages ("a retriever checkpoint").
        fix: what the user should do instead ("train one with `fiq-gym train supervised`").
    """
    directory = Path(directory)
    if not directory.exists():
        # A save that died while replacing the checkpoint may have left it set aside.
        recover_directory(directory)
    if not directory.exists():
        raise FileNotFoundError(f"{directory} does not exist; pass {what} directory ({fix})")
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is a file, not {what} directory; {fix}")
    file = directory / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{directory} is not {what} (it has no config.json); {fix}")
    try:
        config = read_json(file, CheckpointError, f"the checkpoint is damaged; {fix}")
    except PermissionError:
        raise CheckpointError(f"cannot read {file} (permission denied); fix its permissions") from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{file} holds a JSON {type(config).__name__}, not a checkpoint config object; "
            f"the checkpoint is damaged or not {what}; {fix}"
        )
    found = config.get("format")
    if found not in formats:
        described = f"a {found!r} checkpoint" if isinstance(found, str) else "no fiq-gym checkpoint format"
        raise CheckpointError(f"{file} is {described}, not {what}; {fix}")
    version = config.get("version", CHECKPOINT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{file}: its version is {version!r}, not a positive integer; the checkpoint is damaged; {fix}"
        )
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{file} is a version {version} checkpoint, written by a newer fiq-gym; this fiq-gym "
            f"{__version__} reads version {CHECKPOINT_VERSION}: upgrade fiq-gym (pip install -U fiq-gym), "
            f"or {fix.removeprefix('or ')}"
        )
    return config


def config_fields(
    cls: type,
    values: Any,
    file: str | os.PathLike,
    *,
    what: str = "model config",
    known_only: bool = True,
    retrain: str = "the `fiq-gym train` command that made it",
) -> Any:
    """Build the dataclass ``cls`` from a checkpoint's stored config, naming missing, unknown
    and mistyped fields instead of failing with a ``TypeError``; its ``__post_init__`` checks
    ranges.

    Args:
        what: how messages name the config ("model config", "training arguments").
        known_only: refuse fields ``cls`` does not have; False reads only ``cls``'s fields
            (e.g. the env settings among a trainer's arguments) and ignores the others.
        retrain: the command that writes such a checkpoint, for the messages' fix.
    """
    if not isinstance(values, Mapping):
        raise CheckpointError(
            f"{file}: {what} not stored as a JSON object (found {type(values).__name__}); the checkpoint is "
            f"damaged or edited by hand: restore it, or retrain it with {retrain}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not known_only:
        values = {k: v for k, v in values.items() if k in fields}
    required = {
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(values))
    unknown = sorted(set(values) - set(fields))
    if missing or unknown:
        problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
        raise CheckpointError(
            f"{file}: the {what} has {' and '.join(problems)} fields for {cls.__name__}; it was written "
            "by another fiq-gym version or edited by hand. Use the fiq-gym version that wrote it, or retrain"
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _matches(value, hints[name]):
            raise CheckpointError(
                f"{file}: {name!r} in the {what} is {value!r}, not {_type_name(hints[name])}; the "
                f"checkpoint was edited by hand or is damaged: restore it, or retrain it with {retrain}"
            )
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:  # the dataclass's own range checks
        raise CheckpointError(
            f"{file}: invalid {what} ({e}); restore the checkpoint, or retrain it with {retrain}"
        ) from None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type (int is not a float's bool, and so on)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        if origin is tuple and args:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: the dataclass decides


_TYPE_NAMES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


_PLURALS = {int: "integers", float: "finite numbers", str: "strings", bool: "true/false values"}


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (list, tuple) and args:
        return f"a list of {_PLURALS.get(args[0], str(args[0]))}"
    return _TYPE_NAMES.get(hint, f"of type {hint}")


def load_tensors(file: str | os.PathLike, *, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a missing, truncated or foreign file raises
    :class:`CheckpointError` naming it and ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the checkpoint is incomplete; {fix}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{file} is truncated or not a safetensors file ({str(e).splitlines()[0][:120]}); {fix}"
        ) from None


def save_sb3_model(
    model: Any, directory: str | os.PathLike, *, format: str, agent: str, args: dict[str, Any]
) -> Path:
    """Write a Stable-Baselines3 model as a checkpoint directory, atomically: SB3's own
    ``model.zip`` (for ``PPO.load``/``DQN.load``; without a replay buffer), the policy's
    weights as ``policy.safetensors`` and ``config.json`` (``format``, ``agent``, the run's
    ``args``, library versions), which :func:`fiq_gym.agents.loading.load_agent` reads."""
    directory = Path(directory)
    with atomic_directory(directory, overwrite=True) as tmp:
        model.save(tmp / "model.zip", exclude=["replay_buffer"])
        # save_model de-duplicates tensors SB3 shares (a feature extractor, a target network).
        save_model(model.policy, str(tmp / "policy.safetensors"))
        meta = {
            "format": format,
            "version": CHECKPOINT_VERSION,
            "agent": agent,
            "args": portable_args(args),
            "versions": versions(),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory


@dataclass(frozen=True)
class PolicyConfig:
    """The sizes of a single-file trainer's torch policy, stored as its checkpoint's ``config``.

    The observation space fixes the first four (:meth:`for_space`); a loaded policy fits an env
    whose space gives the same ones. ``shortlist_size`` is K for a policy that scores the
    shortlist's candidates, None for one that reads none."""

    vocab_size: int
    feature_dim: int
    attribute_dim: int
    shortlist_size: int | None = None
    embed_dim: int = 64
    hidden: int = 128

    def __post_init__(self) -> None:
        for name in ("vocab_size", "feature_dim", "attribute_dim", "shortlist_size", "embed_dim", "hidden"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    @classmethod
    def for_space(cls, space: Any, *, embed_dim: int = 64, hidden: int = 128) -> PolicyConfig:
        """The sizes a policy for observation space ``space`` (a ``gym.spaces.Dict``) has."""
        spaces = space.spaces
        candidates = spaces.get("candidate_scores")
        return cls(
            vocab_size=int(spaces["caption"].nvec[0]),
            feature_dim=int(spaces["shown_features"].shape[0]),
            attribute_dim=int(spaces["shown_attributes"].shape[0]),
            shortlist_size=None if candidates is None else int(candidates.shape[0]),
            embed_dim=embed_dim,
            hidden=hidden,
        )


def save_policy(
    module: torch.nn.Module,
    config: PolicyConfig,
    directory: str | os.PathLike,
    *,
    format: str,
    agent: str,
    args: dict[str, Any],
) -> Path:
    """Write a torch policy as a checkpoint directory, atomically: its weights as
    ``model.safetensors`` and ``config.json`` (``format``, ``version``, ``agent``, the
    network's ``config``, the run's ``args``, library versions), which
    :func:`fiq_gym.agents.loading.load_agent` reads (no pickles)."""
    directory = Path(directory)
    with atomic_directory(directory, overwrite=True) as tmp:
        save_tensors(tmp / POLICY_TENSORS, module.state_dict())
        meta = {
            "format": format,
            "version": CHECKPOINT_VERSION,
            "agent": agent,
            "config": dataclasses.asdict(config),
            "args": portable_args(args),
            "versions": versions(),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory


def load_policy_weights(module: torch.nn.Module, directory: str | os.PathLike, *, fix: str) -> None:
    """Load the weights :func:`save_policy` wrote into ``module`` (built from the checkpoint's
    ``config``); missing, foreign or mismatched weights raise :class:`CheckpointError`."""
    file = Path(directory) / POLICY_TENSORS
    weights = load_tensors(file, fix=fix)
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{file} does not hold the weights its config.json describes "
            f"({str(e).splitlines()[0][:160]}); the checkpoint is damaged; {fix}"
        ) from None


def save_tensors(file: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write tensors as safetensors (contiguous CPU copies). Use inside an atomic directory."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(file))


# --- training state -------------------------------------------------------------------------------


def write_training_state(
    directory: str | os.PathLike,
    *,
    record: Mapping[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    model: torch.nn.Module | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
    rng: bool = True,
) -> None:
    """Write ``state.json`` and ``state.safetensors`` into ``directory`` (normally the
    temporary directory of :func:`~fiq_gym.utils.atomic.atomic_directory`, so the state appears
    whole or not at all).

    Args:
        record: JSON-able counters and settings (round, epoch, arguments...).
        optimizer: its moments go to tensors ``optimizer.<param>.<name>``, its param groups
            and non-tensor entries to ``state.json``.
        model: weights to resume with (``model.<name>``), when the run keeps them nowhere else.
        tensors: any other tensors, stored under their own names.
        rng: also store the torch CPU generator's state (``rng.torch``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, torch.Tensor] = dict(tensors or {})
    meta: dict[str, Any] = {"record": dict(record)}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, Any] = {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    out[f"optimizer.{index}.{key}"] = value
                else:
                    scalars[f"{index}.{key}"] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    if model is not None:
        out.update({f"model.{k}": v for k, v in model.state_dict().items()})
    if rng:
        out["rng.torch"] = torch.get_rng_state()
    save_tensors(directory / STATE_TENSORS, out)
    (directory / STATE_JSON).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def read_training_state(
    directory: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    model: torch.nn.Module | None = None,
    rng: bool = True,
    fix: str = "start the run again without --resume (or with --overwrite)",
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what :func:`write_training_state` wrote: loads the optimizer, the model and the
    RNG when given / asked, and returns ``(record, tensors)``."""
    directory = Path(directory)
    file = directory / STATE_JSON
    if not file.is_file():
        raise CheckpointError(f"nothing to resume in {directory}: it holds no {STATE_JSON}; {fix}")
    meta = read_json(file, CheckpointError, f"the training state is damaged; {fix}")
    if not isinstance(meta, dict) or not isinstance(meta.get("record"), dict):
        raise CheckpointError(f"{file} is not a fiq-gym training state; {fix}")
    tensors = load_tensors(directory / STATE_TENSORS, fix=fix)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{file} holds no optimizer state; {fix}")
        moments: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                moments.setdefault(int(index), {})[key] = value
        for name, value in meta["optimizer"]["scalars"].items():
            index, key = name.split(".", 1)
            moments.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": moments, "param_groups": meta["optimizer"]["param_groups"]})
    if model is not None:
        weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        if not weights:
            raise CheckpointError(f"{directory / STATE_TENSORS} holds no model weights; {fix}")
        model.load_state_dict(weights)
    if rng:
        if "rng.torch" not in tensors:
            raise CheckpointError(f"{directory / STATE_TENSORS} holds no RNG state; {fix}")
        torch.set_rng_state(tensors["rng.torch"])
    return meta["record"], tensors


# --- run directories ------------------------------------------------------------------------------


#: The file every trainer leaves in its run directory: what ``--overwrite`` may replace.
RUN_MARKER = ".fiq-gym-run"


def run_kind(out: str | os.PathLike, state: str | os.PathLike | None = None) -> str | None:
    """The kind of fiq-gym run directory ``out`` holds: its marker's kind, ``"unmarked"`` for
    a run written before markers existed (it holds ``checkpoint/config.json`` or the training
    state ``state``), None when it is not a run."""
    out = Path(out)
    marker = out / RUN_MARKER
    if marker.is_file():
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
            return str(record["kind"])
        except (OSError, ValueError, KeyError, TypeError):
            return "unmarked"
    legacy = [out / "checkpoint" / "config.json", *([Path(state) / STATE_JSON] if state else [])]
    return "unmarked" if any(p.is_file() for p in legacy) else None


def prepare_run(
    out: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    state: str | os.PathLike,
    kind: str = "run",
    resumable: bool = True,
) -> bool:
    """Apply the run-directory rule every trainer shares; return True when resuming.

    * ``resume``: ``state`` (a training-state directory inside ``out``) must exist, else
      :class:`CheckpointError` (a resume that silently restarted at step 0 would waste the
      run it meant to continue);
    * ``overwrite``: an existing ``out`` is emptied but for its marker and its ``checkpoint/``
      (which the new run's first save replaces atomically: killed before then, the old
      checkpoint is still whole), then training starts afresh, but only when it is a run of this
      ``kind`` (its :data:`RUN_MARKER` says so, or it is a run written before markers): a
      folder of anything else is refused with what it holds, never deleted;
    * neither: an existing, non-empty ``out`` raises ``FileExistsError`` naming both options.

    A new run leaves :data:`RUN_MARKER` in ``out``, naming its ``kind``. ``resumable=False``
    (trainers without ``--resume``) keeps messages from suggesting it.
    """
    out, state = Path(out), Path(state)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one of them")
    if resume:
        # A save that died while replacing the state may have left the previous one set aside:
        # put it back rather than report nothing to resume.
        recover_directory(state)
        if not (state / STATE_JSON).is_file():
            raise CheckpointError(
                f"nothing to resume in {out}: {state} holds no training state; "
                "start without --resume (add --overwrite to replace what is there)"
            )
        return True
    held = [p for p in out.iterdir() if not _marker_temporary(p)] if out.is_dir() else []
    if out.exists() and (not out.is_dir() or held):
        if not overwrite:
            options = (
                "pass --resume to continue it, --overwrite to replace it"
                if resumable
                else "pass --overwrite to replace it"
            )
            raise FileExistsError(f"{out} already holds a run; {options}, or choose another --out")
        found = run_kind(out, state) if out.is_dir() else None
        if found is None:
            what = "a file" if not out.is_dir() else "; ".join(sorted(p.name for p in out.iterdir())[:5])
            raise FileExistsError(
                f"refusing to overwrite {out}: it is not a fiq-gym run (no {RUN_MARKER}; it holds {what}); "
                "--overwrite only replaces a previous run, so choose another --out or move it away yourself"
            )
        if found not in (kind, "unmarked"):
            raise FileExistsError(
                f"refusing to overwrite {out}: it holds a {found} run, not a {kind} run; choose another --out"
            )
        # The marker first, so that a run killed while the old one is cleared is still a run of
        # this kind (the next --overwrite takes it back); the old checkpoint stays until the new
        # run's first save replaces it atomically, so a kill before then leaves the old one whole.
        _write_marker(out, kind)
        for entry in out.iterdir():
            if entry.name not in (RUN_MARKER, _KEPT_ON_OVERWRITE) and not _marker_temporary(entry):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return False
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, kind)
    return False


#: What ``--overwrite`` keeps until the new run replaces it: the previous run's checkpoint.
_KEPT_ON_OVERWRITE = "checkpoint"


def _write_marker(out: Path, kind: str) -> None:
    atomic_write_text(out / RUN_MARKER, json.dumps({"format": "fiq-gym-run", "kind": kind}) + "\n")


def _marker_temporary(path: Path) -> bool:
    """A marker write's temporary file (a killed one's is removed by the next write)."""
    return path.name.startswith(f".{RUN_MARKER}.tmp-")
