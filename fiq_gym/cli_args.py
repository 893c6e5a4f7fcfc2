"""argparse value types: numbers whose errors name the bound, so ``--seed -1`` fails at parse
time ("argument --seed: must be a non-negative integer, got -1", exit code 2) instead of deep
inside numpy with a message that names no option; paths made absolute once, at parsing."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

__all__ = [
    "CatalogArgument",
    "PathArgument",
    "SpecArgument",
    "absolute_catalog",
    "absolute_path",
    "absolute_path_object",
    "absolute_spec",
    "catalog_arg",
    "int_between",
    "path_arg",
    "path_or_name",
    "seed",
    "spec_arg",
]


def int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[low, high]`` (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def seed(text: str) -> int:
    """An argparse ``type`` for seeds: numpy's generators take non-negative integers only."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


# --- paths ----------------------------------------------------------------------------------------
# Paths from the command line are made absolute once, when they are parsed: a checkpoint that
# stores its --catalog, a Ray run that needs an absolute URI and a dataset writer that changes
# directory all see the path the user meant, whatever the working directory is later.


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, made absolute against the current directory (symbolic
    links are kept: the user named the link, not what it points to today)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def path_arg(text: str) -> str:
    """An argparse ``type`` for a file or directory: the absolute path (see
    :func:`absolute_path`); an empty value is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty value")
    return absolute_path(text)


path_arg.__name__ = "path"


def absolute_path_object(text: str) -> Path:
    """:func:`path_arg` as a :class:`~pathlib.Path`."""
    return Path(path_arg(text))


#: Names whose ``NAME:DIR`` spec carries a directory after the colon: shoppers
#: (``transformer:DIR``, ``lm:DIR``), first stages (``retriever:DIR``), feature encoders
#: (``attribute-net:DIR``, ``hf:DIR``) and human-caption sources (``fashioniq:ROOT``,
#: ``shoes:ROOT``). ``synthetic:SIZE[:SEED]`` names no directory.
SPECS_WITH_DIRECTORY = ("transformer", "lm", "retriever", "attribute-net", "hf", "fashioniq", "shoes")
_CATALOG_SPEC_PREFIX = "synthetic:"


def absolute_spec(spec: str) -> str:
    """A ``NAME`` or ``NAME:DIR`` spec (``--user``, ``--shortlist``, ``--encoder``,
    ``--captions``) whose directory, if it names one, is absolute; plain names are returned
    as they are. ``dataset:SHOPPER`` (the dataset shopper's fallback) is made absolute inside."""
    name, colon, directory = spec.partition(":")
    if name == "dataset" and directory:
        return f"dataset:{absolute_spec(directory)}"
    if colon and directory and name in SPECS_WITH_DIRECTORY:
        return f"{name}:{absolute_path(directory)}"
    return spec


def absolute_catalog(spec: str) -> str:
    """A catalog argument: a directory made absolute, a ``synthetic:SIZE[:SEED]`` spec kept."""
    return spec if spec.startswith(_CATALOG_SPEC_PREFIX) else absolute_path(spec)


def spec_arg(text: str) -> str:
    """An argparse ``type`` for ``NAME[:DIR]`` options: see :func:`absolute_spec`."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a name, or NAME:DIR, got an empty value")
    return absolute_spec(text)


def catalog_arg(text: str) -> str:
    """An argparse ``type`` for ``--catalog``: see :func:`absolute_catalog`; empty is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a catalog directory, got an empty value")
    return absolute_catalog(text)


def path_or_name(*names: str) -> Callable[[str], str]:
    """An argparse ``type`` taking one of ``names`` as it is, or a path made absolute (e.g.
    ``--agent random | greedy | CHECKPOINT``)."""

    def parse(text: str) -> str:
        return text if text in names else path_arg(text)

    parse.__name__ = "path"
    return parse


spec_arg.__name__ = "spec"
catalog_arg.__name__ = "catalog"

#: Trainer ``Args`` fields: ``out: PathArgument = "runs/x"`` parses as :func:`path_arg`.
PathArgument = Annotated[str, path_arg]
#: ``catalog: CatalogArgument | None = None`` parses as :func:`catalog_arg`.
CatalogArgument = Annotated[str, catalog_arg]
#: ``user: SpecArgument = "template"`` parses as :func:`spec_arg`.
SpecArgument = Annotated[str, spec_arg]
