"""Reading JSON files with errors that say which file, where, and what to do about it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json"]


def read_json(file: str | os.PathLike, error: type[Exception], fix: str, *, missing: str = "") -> Any:
    """Parse a UTF-8 JSON file. Invalid JSON or text raises ``error`` naming the file, the
    line and column, and ``fix`` (what the user should do); a missing file raises
    ``FileNotFoundError`` with the ``missing`` hint, when given."""
    file = Path(file)
    if missing and not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; {missing}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {fix}") from None
    except UnicodeDecodeError:
        raise error(f"{file} is not UTF-8 text; {fix}") from None
