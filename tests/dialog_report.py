"""Reading ``dialog.md`` back in tests: the per-turn tables of the dialog benchmark's report
(:func:`fiq_gym.benchmarks.dialog.to_markdown`), means only."""

from __future__ import annotations

import re

__all__ = ["parse_markdown_tables"]

_SECTION = re.compile(r"## Trained with the (\S+) shopper, evaluated with the (\S+) shopper")


def parse_markdown_tables(text: str) -> dict[tuple[str, str, str, int], dict[str, float]]:
    """Read the per-turn tables of ``dialog.md`` back (means only), keyed by
    (agent, train user, eval user, turn)."""
    out: dict[tuple[str, str, str, int], dict[str, float]] = {}
    users: tuple[str, str] | None = None
    header: list[str] = []
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            users = (match.group(1), match.group(2))
        elif line.startswith("## "):
            users = None
        elif users and line.startswith("| agent | turn |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif not line.strip():
            header = []  # a table ends at a blank line (comparison tables follow)
        elif users and header and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            values = {h: float(c.split(" ± ")[0]) for h, c in zip(header[2:], cells[2:], strict=True)}
            out[(cells[0], users[0], users[1], int(cells[1]))] = values
    return out
