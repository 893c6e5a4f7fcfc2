"""``EnvConfig``: every argument of a fiq-gym environment, as one frozen, validated object.

The single env (:class:`~fiq_gym.envs.FashionIQEnv`) and the native vector env
(:class:`~fiq_gym.envs.FashionIQVectorEnv`) keep their keyword arguments; each turns them into
an ``EnvConfig`` (``env.unwrapped.env_config``), hands it whole to the builder of its parts
(:func:`fiq_gym.envs.building.build_dialog`) and pickles it. The dialog engine runs the rules
part of it (:meth:`EnvConfig.dialog_config`, ``env.unwrapped.config``: a
:class:`~fiq_gym.dialog_engine.DialogConfig`). Trainers derive their env arguments from their
own flags by field name (:func:`trainer_env_kwargs`).

Adding an env argument: a field here (its docstring, its check in ``__post_init__``), the
same name in the two envs' signatures (``tests/test_env_config.py`` checks they match) and
the code that reads it: the dialog rules (a field of the same name in ``DialogConfig``) or
``build_dialog``. A trainer whose ``Args`` has a flag of that name passes it on unchanged,
and the agents loaded from its checkpoints get it back (``LoadedAgent.env_arguments``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fiq_gym.action_modes import MODES, FirstStage, mode_class
from fiq_gym.catalog.model import Catalog
from fiq_gym.dialog_engine import OBSERVATION_KEYS, OPTIONAL_KEYS, REWARDS, TURN_LIMIT, DialogConfig
from fiq_gym.starts import START_MODES, start_kwargs
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import User
from fiq_gym.utils.arguments import CatalogArgument, SpecArgument

__all__ = [
    "ENV_SIDE_INFO",
    "RENDER_MODES",
    "DialogFlags",
    "EnvConfig",
    "ShortlistFlags",
    "trainer_env_kwargs",
]

#: The envs' ``render_mode`` values (besides None).
RENDER_MODES = ("rgb_array", "ansi")
#: The envs' ``side_info`` values (:data:`fiq_gym.gallery.SIDE_INFO` less its ``"auto"``).
ENV_SIDE_INFO = ("predicted", "labels")

# Field metadata: the ActionMode flag of the modes that read an argument (others ignore it).
_FIRST_STAGE_MODES = {"read_by": "uses_first_stage"}
_SLATE_MODES = {"read_by": "uses_picker"}


@dataclass(frozen=True)
class EnvConfig:
    """The arguments of one fiq-gym environment (the single env's, in its order, with its
    defaults). ``EnvConfig(**kwargs)`` checks them (``ValueError`` in one line naming the
    value and what is allowed); what needs the catalog (``catalog``, ``category``, ``split``,
    ``user``, ``configuration``, ``scoring``, a first stage's spec) is checked when the env
    is built. ``FashionIQEnv(**config.to_kwargs())`` makes the env of a config."""

    catalog: Catalog | str | os.PathLike | None = None
    """A catalog directory, a :class:`~fiq_gym.catalog.Catalog`, a synthetic catalog spec
    ``"synthetic:SIZE[:SEED]"`` (built on first use into the cache, the same on any machine),
    or None for the configuration's catalog (by default the 10,000-item synthetic catalog)."""
    category: str | None = None
    """``"dress"``, ``"shirt"``, ``"toptee"`` (or the catalog's own), None for all. On a
    catalog imported with ``fiq-gym catalog import`` a category holds every image that any of
    its image split files lists, so an image listed by shirt and toptee (the Fashion IQ release
    lists 3,302 such) is in play in both envs; elsewhere, the items of the category."""
    user: str | User = "template"
    """The shopper: ``"template"`` (rule-based), ``"transformer"`` (the learned relative
    captioner, :class:`~fiq_gym.users.TransformerUser`, whose own word tokenizer then gives the
    caption token ids; ``"transformer:DIR"`` is short for one with ``{"checkpoint": DIR}``),
    ``"dataset"`` (the human captions of a catalog imported with ``fiq-gym catalog import``,
    :class:`~fiq_gym.users.DatasetUser`; ``"dataset:SHOPPER"`` is short for a ``fallback`` of
    SHOPPER, e.g. ``"dataset:transformer:DIR"``, a shopper trained on the human captions),
    ``"lm:DIR"`` (a local Hugging Face causal language model saved in DIR) or a
    :class:`~fiq_gym.users.User` instance (docs/shoppers.md)."""
    action_mode: str = "index"
    """What an action is: ``"index"``, ``"query"``, ``"scores"``, ``"shortlist"``, ``"slate"``
    or ``"shortlist_slate"`` (:mod:`fiq_gym.action_modes`; the env's Action Space)."""
    reward: str = "percentile"
    """``"percentile"``, ``"delta"``, ``"success"`` or ``"reciprocal_rank"``; every reward's
    return is the benchmark's score of the dialog (the env's Rewards)."""
    success_bonus: float = 0.0
    """Added once, on the turn the target is shown."""
    max_turns: int = 5
    """T, the turns of a dialog (1 to ``TURN_LIMIT``, 1,000); the dialog ends after T turns without
    success, or when the target is shown."""
    caption_length: int = 32
    """L, the number of token ids in the caption observation."""
    observation_keys: tuple[str, ...] | None = None
    """The observation keys to return (None: the action mode's default keys, all but
    ``shown_mask``); one key may be given as a string."""
    render_mode: str | None = None
    """``"rgb_array"`` (the shown garment, the caption and the turn), ``"ansi"`` (a text line
    per turn) or None."""
    user_kwargs: dict[str, Any] | None = None
    """Arguments of the named shopper. Template: e.g. ``{"noise": TemplateNoise(omit=0.2)}``;
    transformer: ``{"checkpoint": DIR, "decoding": {"strategy": "greedy"}}`` (defaults: the
    checkpoint shipped with the package, nucleus sampling; a checkpoint that does not fit the
    catalog fails with a message naming the mismatch); dataset: ``split``, ``mode``
    (``"random"`` or ``"joined"``) and ``fallback`` (``"template"``, ``"transformer"``,
    ``"transformer:DIR"``, ``"lm:DIR"`` or None, which raises on pairs nobody annotated)."""
    tokenizer: CaptionTokenizer | None = None
    """A :class:`~fiq_gym.text.CaptionTokenizer` to use instead of the shopper's."""
    expose_target: bool = False
    """Training-only opt-in that adds ``info["target"]`` (refused by the evaluation harness)."""
    lookahead: bool = False
    """Training-only opt-in that enables ``preview_captions(candidates)``, what the shopper
    would say about candidate items (for model-based policy improvement; refused by the
    evaluation harness). Previews draw from their own generator and never change the episode."""
    side_info: str = "predicted"
    """The attribute scores agents see: ``"predicted"`` (the catalog's predictions) or
    ``"labels"`` (ground truth; an explicit opt-in)."""
    shortlist_size: int = field(default=32, metadata=_FIRST_STAGE_MODES)
    """Shortlist modes: K (``shortlist_slate``: M), the candidates each observation proposes."""
    shortlist: str | FirstStage = field(default="retriever", metadata=_FIRST_STAGE_MODES)
    """Shortlist modes: the first stage that proposes the candidates (``"retriever"``,
    ``"retriever:DIR"``, ``"random"`` or a callable ``f(view) -> (B, N) scores``); another than
    the default outside those modes is refused."""
    explore: float = field(default=0.0, metadata=_FIRST_STAGE_MODES)
    """Shortlist modes: the fraction of the candidates that are uniform random unseen items."""
    caption_text: bool = True
    """Put the caption text in ``info["caption_text"]``; False for libraries whose info readers
    take numbers only (TorchRL's ``GymEnv(..., num_envs=n)`` and ``GymWrapper`` with an info
    reader). The text is still in ``render()``, and the caption's token ids are in the
    observation either way."""
    slate_size: int = field(default=4, metadata=_SLATE_MODES)
    """Slate modes: K, the items (or candidate slots) each turn shows at once, from 2 to N - 1
    (the env's Action Space)."""
    start: str = "uniform"
    """Where a reset starts: ``"uniform"`` (a random target and first item) or ``"annotated"``
    (a pair of the human captions of ``start_split``, on an imported catalog; the env's
    Starting State)."""
    start_split: str | None = None
    """With ``start="annotated"``: the split whose annotated pairs start the dialogs (None:
    the env's ``split``, else ``"train"``)."""
    split: str | None = None
    """On an imported catalog, only the images of that image split (e.g. ``"val"``; with
    ``category``, that category's split file): the official protocol's gallery of each
    category, where the papers evaluate. None: every item. Refused, in one line, on a catalog
    that is no import or for a split it lacks."""
    configuration: str = "default"
    """A named configuration (:mod:`fiq_gym.envs.configurations`, the env's Registered
    Configurations), which fills in the catalog and the template shopper's settings left at
    their defaults."""
    scoring: str = "float32"
    """How items are scored for the rank and the shown item (:mod:`fiq_gym.ranking`).
    ``"float32"``: numpy float32 products, as in every release. ``"exact"``: comparisons of
    exact dot products (a float32 scan plus a recheck of the items within a proven error band
    of the target's score), the same ranks however the gallery is split or batched, which the
    vector env's ``shards=`` needs; they differ from ``"float32"`` only where BLAS rounding
    decides a near-tie. ``"float16"``: the exact ranks again, scanning a float16 copy of the
    features."""

    def __post_init__(self) -> None:
        if self.render_mode is not None and self.render_mode not in RENDER_MODES:
            raise ValueError(
                f"render_mode must be one of {list(RENDER_MODES)} or None, got {self.render_mode!r}"
            )
        mode = mode_class(self.action_mode)
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {list(REWARDS)}, got {self.reward!r}")
        bonus = self.success_bonus
        if isinstance(bonus, bool) or not isinstance(bonus, int | float | np.integer | np.floating):
            raise ValueError(f"success_bonus must be a number, got {bonus!r}")
        if not np.isfinite(bonus):
            raise ValueError(f"success_bonus must be a finite number, got {bonus!r}")
        object.__setattr__(self, "success_bonus", float(bonus))
        turns = self.max_turns
        # bool is an int to Python, but max_turns=True is a mistake, not one turn.
        if isinstance(turns, bool) or not isinstance(turns, int | np.integer) or not 1 <= turns <= TURN_LIMIT:
            raise ValueError(f"max_turns must be an integer from 1 to {TURN_LIMIT}, got {turns!r}")
        if not isinstance(self.caption_length, int | np.integer) or self.caption_length < 1:
            raise ValueError(f"caption_length must be a positive integer, got {self.caption_length!r}")
        k = self.shortlist_size
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"shortlist_size must be a positive integer, got {k!r}")
        slate = self.slate_size
        if isinstance(slate, bool) or not isinstance(slate, int | np.integer) or slate < 2:
            raise ValueError(f"slate_size must be an integer of at least 2, got {slate!r}")
        if self.start not in START_MODES:
            raise ValueError(f"start must be one of {list(START_MODES)}, got {self.start!r}")
        if self.start_split is not None and (not isinstance(self.start_split, str) or not self.start_split):
            raise ValueError(
                f"start_split must be a split name such as 'train' or 'val', got {self.start_split!r}"
            )
        e = self.explore
        if (
            isinstance(e, bool)
            or not isinstance(e, int | float | np.integer | np.floating)
            or not 0 <= e <= 1
        ):
            raise ValueError(f"explore must be a fraction in [0, 1], got {e!r}")
        object.__setattr__(self, "explore", float(e))
        if not isinstance(self.caption_text, bool | np.bool_):
            raise ValueError(f"caption_text must be True or False, got {self.caption_text!r}")
        object.__setattr__(self, "caption_text", bool(self.caption_text))
        if self.observation_keys is not None:
            given: object = self.observation_keys
            keys = (given,) if isinstance(given, str) else tuple(self.observation_keys)  # one key named alone
            allowed: tuple[str, ...] = OBSERVATION_KEYS + OPTIONAL_KEYS + mode.observation_keys
            unknown = [k for k in keys if k not in allowed]
            if unknown or not keys or len(set(keys)) != len(keys):
                raise ValueError(
                    f"observation_keys must be distinct names from {list(allowed)}, got {list(keys)}"
                )
            object.__setattr__(self, "observation_keys", keys)
        for flag in ("expose_target", "lookahead"):
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        if self.side_info not in ENV_SIDE_INFO:
            raise ValueError(
                f"side_info must be {' or '.join(map(repr, ENV_SIDE_INFO))}, got {self.side_info!r}"
            )
        if not mode.uses_first_stage and self.shortlist != "retriever":
            readers = " or ".join(repr(name) for name, m in MODES.items() if m.uses_first_stage)
            raise ValueError(
                f"shortlist={self.shortlist!r} only applies to action_mode={readers} (this env "
                f"uses {self.action_mode!r}); drop the argument or pass one of those modes"
            )

    # --- keyword arguments -----------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        """The config of an env's keyword arguments (those not given take their defaults);
        an unknown name is a ``TypeError`` naming it and the closest argument."""
        names = cls.names()
        for name in kwargs:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; the arguments are {list(names)}"
                raise TypeError(f"{cls.__name__} got an unexpected keyword argument {name!r}{hint}")
        return cls(**kwargs)

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> EnvConfig:
        """The config of a constructor whose parameters include every field, from its
        ``locals()`` (names that are not fields, such as ``self`` or ``num_envs``, are left out)."""
        missing = [name for name in cls.names() if name not in arguments]
        if missing:
            raise TypeError(f"{cls.__name__}.from_arguments lacks the arguments {missing}")
        return cls(**{name: arguments[name] for name in cls.names()})

    def to_kwargs(self) -> dict[str, Any]:
        """Every argument by name (the values themselves, not copies):
        ``EnvConfig.from_kwargs(**config.to_kwargs()) == config``."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The argument names, in the single env's order."""
        return tuple(f.name for f in fields(cls))

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # Pickled as its arguments, checked again when loaded; a pickle made before an argument
        # was added loads with that argument's default.
        return _from_kwargs, (self.to_kwargs(),)

    # --- what reads it ---------------------------------------------------------------------
    def dialog_config(self) -> DialogConfig:
        """The dialog rules the engine runs (the fields ``DialogConfig`` shares with this
        config), with the observation keys resolved (None: the mode's default keys)."""
        shared = {f.name: getattr(self, f.name) for f in fields(DialogConfig)}
        if self.observation_keys is None:
            shared["observation_keys"] = DialogConfig.default_keys(self.action_mode)
        return DialogConfig(**shared)

    @classmethod
    def read_in_mode(cls, name: str, action_mode: str) -> bool:
        """Whether the env reads argument ``name`` in ``action_mode`` (the shortlist's in the
        modes with a first stage, ``slate_size`` in the slate modes, the others always)."""
        flag = {f.name: f.metadata.get("read_by") for f in fields(cls)}[name]
        return flag is None or bool(getattr(mode_class(action_mode), flag))


def _from_kwargs(kwargs: dict[str, Any]) -> EnvConfig:
    return EnvConfig.from_kwargs(**kwargs)


#: Env arguments that trainers pass as :func:`fiq_gym.starts.start_kwargs` says (none for the
#: default uniform start, so the env arguments of such runs are what they always were).
_START_ARGUMENTS = ("start", "start_split")


def trainer_env_kwargs(args: object, **fixed: Any) -> dict[str, Any]:
    """The env keyword arguments a trainer's ``args`` describe: for every :class:`EnvConfig`
    field, ``args``'s attribute of the same name if it has one, where the env reads it (the
    shortlist's flags in the modes with a first stage, ``--slate-size`` in the slate modes,
    ``--start-split`` with an annotated start), then ``fixed`` (what the trainer itself sets,
    e.g. ``action_mode="scores"``) over them. An env argument added to ``EnvConfig`` reaches
    every trainer with a flag of that name, without a change to the trainer."""
    mode = fixed.get("action_mode", getattr(args, "action_mode", EnvConfig.action_mode))
    kwargs = {
        name: getattr(args, name)
        for name in EnvConfig.names()
        if name not in _START_ARGUMENTS and hasattr(args, name) and EnvConfig.read_in_mode(name, mode)
    }
    return {**kwargs, **start_kwargs(args), **fixed}


# --- the env arguments trainers take as flags ----------------------------------------------------
# Spelled once: a trainer's Args inherits a group (``class Args(ShortlistFlags, DialogFlags)``);
# fiq_gym.utils.arguments makes each field a flag with the docstring below as its help, and
# trainer_env_kwargs hands the values to the trainer's envs by name. A trainer changes a default
# or a help text by declaring the field again in its own Args.
@dataclass
class DialogFlags:
    """The env arguments every trainer takes: catalog, shopper, starts and turns."""

    catalog: CatalogArgument | None = None
    """catalog directory (default: the default catalog)"""
    user: SpecArgument = "template"
    """shopper that plays the dialogs: template, transformer, transformer:DIR, lm:DIR (a local causal language model), dataset or dataset:SHOPPER (an import's human captions, SHOPPER answering the pairs nobody annotated, e.g. dataset:transformer:DIR)"""
    start: str = "uniform"
    """where dialogs start: uniform (a random target and first item) or annotated (a pair of the human captions of --start-split, on a catalog made by fiq-gym catalog import, so user=dataset answers turn 0 with human text); evaluations during training start the same way"""
    start_split: str = "train"
    """with --start annotated: the split whose annotated pairs start the dialogs (train to train; fiq-gym eval --start-split val to evaluate, as the papers do)"""
    max_turns: int = EnvConfig.max_turns
    """turns per dialog"""


@dataclass
class ShortlistFlags:
    """The first stage's env arguments, for trainers of the shortlist modes."""

    shortlist_size: int = EnvConfig.shortlist_size
    """shortlist modes: K, the candidates per turn"""
    shortlist: SpecArgument = "retriever"
    """shortlist modes: the first stage that proposes them (retriever, retriever:DIR or random)"""
    explore: float = EnvConfig.explore
    """shortlist modes: fraction of the candidates that are random unseen items"""
