"""Command-line flags from a dataclass of arguments: the one way fiq-gym's trainers take them.

Each field becomes ``--field-name`` (underscores become dashes), typed by its annotation, with
its attribute docstring (the string literal under the field, CleanRL style) and its default as
the help text. Booleans get ``--flag`` / ``--no-flag``; tuples and lists take several values;
``X | None`` takes an ``X``; ``Annotated[str, parse]`` parses with ``parse`` (paths:
:data:`fiq_gym.cli_args.PathArgument` and its siblings make them absolute at parsing). Fields
without a default become positional arguments.

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
import textwrap
import types
import typing
from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

from fiq_gym.cli_args import seed as seed_type

__all__ = ["add_dataclass_arguments", "dataclass_from_namespace", "field_docs", "parse_dataclass_args"]

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
    (e.g. :data:`fiq_gym.cli_args.PathArgument`) parses with ``parse``."""
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
            kind = seed_type
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
