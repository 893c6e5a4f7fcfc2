"""Where the project lives online, so messages of an installed copy can point at its docs.

An installed fiq-gym has no ``docs/`` folder (the sdist carries it; the wheel does not), so
help texts and errors name documentation by URL. ``REPOSITORY`` is the one place that spells
the project's address; ``pyproject.toml``'s ``[project.urls]`` and the README's absolute
links use the same one, and ``tests/test_packaging.py`` checks that every such link names a
file of the source tree.
"""

from __future__ import annotations

__all__ = ["REPOSITORY", "doc_url"]

#: The canonical repository; ``main`` is the branch the docs are read from.
REPOSITORY = "https://github.com/fiq-gym/fiq-gym"


def doc_url(path: str, anchor: str = "") -> str:
    """The web address of ``path`` (relative to the repository root, e.g. ``docs/rl.md``),
    optionally at a heading's ``anchor``."""
    return f"{REPOSITORY}/blob/main/{path}" + (f"#{anchor}" if anchor else "")
