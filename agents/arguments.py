"""Command-line flags from an agent's dataclass of arguments (CleanRL style)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

__all__ = ["parse_dataclass_args"]

T = TypeVar("T")


def parse_dataclass_args(cls: type[T], argv: list[str] | None, description: str) -> T:
    """One ``--flag`` per dataclass field (underscores become dashes), typed by its default;
    booleans are switches."""
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag = "--" + field.name.replace("_", "-")
        default: Any = field.default
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default)
        else:
            parser.add_argument(flag, type=type(default) if default is not None else str, default=default)
    return cls(**vars(parser.parse_args(argv)))
