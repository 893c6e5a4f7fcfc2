"""Command-line arguments: argparse value types, and flags from a dataclass of arguments.

**Value types** (``type=`` of an argparse argument, and of a dataclass field below): numbers
whose errors name the bound, so ``--seed -1`` fails at parse time ("argument --seed: must be a
non-negative integer, got -1", exit code 2) instead of deep inside numpy with a message that
names no option; paths made absolute once, at parsing. The CLI and the benchmarks use them.

**Flags from a dataclass**, the one way fiq-gym's trainers take their arguments: each field
becomes ``--field-name`` (underscores become dashes), typed by its annotation, with its
attribute docstring (the string literal under the field, CleanRL style) and its default as
the help text. Booleans get ``--flag`` / ``--no-flag``; tuples and lists take several values;
``X | None`` takes an ``X``; ``Annotated[str, parse]`` parses with ``parse`` (paths:
:data:`PathArgument` and its siblings make them absolute at parsing); an ``int`` field named
``seed`` parses with :func:`seed`. Fields without a default become positional arguments.

    @dataclass
    class Args:
        rounds: int = 300
        \"\"\"training rounds\"\"\"

    args = parse_dataclass_args(Args, argv, prog="fiq-gym train supervised", description=...)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import os
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

__all__ = [
    "CatalogArgument",
    "PathArgument",
    "SpecArgument",
    "absolute_catalog",
    "absolute_path",
    "absolute_path_object",
    "absolute_spec",
    "add_dataclass_arguments",
    "catalog_arg",
    "dataclass_from_namespace",
    "field_docs",
    "int_between",
    "parse_dataclass_args",
    "path_arg",
    "path_or_name",
    "seed",
    "spec_arg",
]

# --- value types ----------------------------------------------------------------------------------


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


# --- flags from a dataclass -----------------------------------------------------------------------

T = TypeVar("T")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: ``{field: first paragraph}``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (e.g. built in a REPL)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, takes several values) of a field annotation; ``Annotated[X, parse]``
    (e.g. :data:`PathArgument`) parses with ``parse``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        kind, several = _value_type(base)
        parsers = [e for e in extras if callable(e)]
        return (parsers[0] if parsers else kind), several
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _value_type(options[0]) if len(options) == 1 else (str, False)
    if origin in (tuple, list, Sequence):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (args[0] if args else str), True
    return annotation, False


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Sequence[str] = (),
    unset_defaults: bool = False,
) -> None:
    """Add one argument per field of dataclass ``cls`` to ``parser``.

    Args:
        exclude: fields to leave out (the command sets them itself).
        unset_defaults: leave fields that are not given out of the namespace (instead of
            setting their defaults), so a caller can tell what the user asked for, e.g. to
            resume a run with its saved settings except those given again.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.init:
            continue
        annotation = hints[field.name]
        kind, several = _value_type(annotation)
        if field.name == "seed" and kind is int:
            # numpy's generators take non-negative seeds only: refuse --seed -1 at parse time
            # with the option's name rather than deep inside training.
            kind = seed
        has_default = (
            field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        )
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else (field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
        )
        help_text = docs.get(field.name, "")
        if has_default and default is not None and default != "" and kind is not bool:
            shown = " ".join(map(str, default)) if several else default
            help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        help_text = help_text.replace("%", "%%")
        if not has_default:
            parser.add_argument(field.name, type=kind, nargs="+" if several else None, help=help_text)
            continue
        flag = "--" + field.name.replace("_", "-")
        options: dict[str, Any] = {"dest": field.name, "help": help_text or None}
        if unset_defaults:
            options["default"] = argparse.SUPPRESS
        else:
            options["default"] = default
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(flag, type=kind, nargs="+" if several else None, **options)


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the fields present in ``namespace`` (and ``overrides``)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(namespace).items() if k in names}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            values[name] = tuple(value)
    return cls(**{**values, **overrides})


def parse_dataclass_args(
    cls: type[T], argv: Sequence[str] | None, description: str, *, prog: str | None = None
) -> T:
    """Parse ``argv`` into an instance of dataclass ``cls`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_arguments(parser, cls)
    return dataclass_from_namespace(cls, parser.parse_args(argv))
