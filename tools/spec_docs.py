"""Write the parts of the docs that restate the spec from the code that is the spec:
``python tools/spec_docs.py`` rewrites them, ``python tools/spec_docs.py --check`` exits 1
naming each stale one (``tests/test_spec_docs.py`` runs the check).

The code is the one source, as Gymnasium's env pages are generated from its envs' docstrings:

* the env's arguments are :class:`~fiq_gym.env_config.EnvConfig`'s fields, their defaults and
  their attribute docstrings; they make both envs' constructor parameters (so adding an
  argument is adding a field, then running this script), and the signature block and the
  argument list of the ``## Arguments`` section of :class:`~fiq_gym.envs.FashionIQEnv`'s
  docstring (what ``help()`` shows);
* the action modes are the classes of :data:`fiq_gym.action_modes.MODES`: each one's space
  (built from the class, with symbolic sizes), the summary line of its docstring and the
  observation and info keys it adds make the action-mode table of the env docstring's
  ``## Action Space`` section and of docs/rl.md.

In a markdown page a generated block sits between ``<!-- spec:NAME ... -->`` and
``<!-- /spec:NAME -->`` (invisible once rendered); in the docstring, in the places named above.
Edit the code, then run this script; never edit a generated block by hand.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from gymnasium import spaces

REPOSITORY = Path(__file__).resolve().parents[1]
ENV_MODULE = REPOSITORY / "envs" / "fashion_iq.py"
VECTOR_MODULE = REPOSITORY / "envs" / "vector.py"
CONFIG_MODULE = REPOSITORY / "fiq_gym" / "env_config.py"
RL_PAGE = REPOSITORY / "docs" / "rl.md"

#: Docstring lines are indented by this much and wrapped at this width (ruff's line length).
_INDENT = " " * 4
_WIDTH = 100

# Sizes no catalog or setting has by chance, so a built space names each by its symbol.
_SIZES = {"N": 99_991, "D": 9_973, "M": 997, "K": 89}


# --- the arguments -------------------------------------------------------------------------------
def field_docs() -> dict[str, str]:
    """Each ``EnvConfig`` field's attribute docstring (the string right after its line), as one
    paragraph, in field order."""
    tree = ast.parse(CONFIG_MODULE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EnvConfig")
    docs: dict[str, str] = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def signature_block() -> str:
    """The docstring's ``gym.make(...)`` block: every argument with its default, in order."""
    from fiq_gym.env_config import EnvConfig

    arguments = []
    for f in fields(EnvConfig):
        default = f.default if f.default is not MISSING else None
        # Written as Python source in the docs' style: strings in double quotes.
        value = f'"{default}"' if isinstance(default, str) else repr(default)
        arguments.append(f"{f.name}={value}")
    head = 'gym.make("fiq_gym/FashionIQ-v3", '
    lines = textwrap.wrap(
        ", ".join(arguments) + ")",
        width=_WIDTH - len(_INDENT),
        initial_indent=head,
        subsequent_indent=" " * len(head.replace('"fiq_gym/FashionIQ-v3", ', "")),
        break_on_hyphens=False,
    )
    return "\n".join([f"{_INDENT}```python", *(_INDENT + line for line in lines), f"{_INDENT}```"])


def parameter_lines(overrides: dict[str, str] | None = None) -> str:
    """``EnvConfig``'s fields as an env constructor's parameters, one line each, with the
    annotation and default written in env_config.py; ``overrides``: a field's ``annotation =
    default`` where an env differs (the vector env's ``max_turns``)."""
    tree = ast.parse(CONFIG_MODULE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EnvConfig")
    lines = []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
            value = next(k.value for k in value.keywords if k.arg == "default")
        if value is None:
            raise SystemExit(f"EnvConfig.{node.target.id} has no default: every env argument needs one")
        # Strings in double quotes, as the formatter writes them.
        default = (
            f'"{value.value}"'
            if isinstance(value, ast.Constant) and isinstance(value.value, str)
            else ast.unparse(value)
        )
        written = (overrides or {}).get(node.target.id, f"{ast.unparse(node.annotation)} = {default}")
        lines.append(f"{_INDENT * 2}{node.target.id}: {written},")
    return "\n".join(lines)


def argument_list() -> str:
    """One bullet per argument: its name and its ``EnvConfig`` docstring."""
    from fiq_gym.env_config import EnvConfig

    docs = field_docs()
    missing = [name for name in EnvConfig.names() if not docs.get(name)]
    if missing:
        raise SystemExit(f"EnvConfig fields without a docstring: {missing}")
    return "\n".join(_bullet(f"* ``{name}``: {_lower_first(docs[name])}") for name in EnvConfig.names())


def _bullet(text: str) -> str:
    """A docstring bullet, wrapped at the docstring's width under its own first line."""
    return textwrap.fill(
        text,
        width=_WIDTH,
        initial_indent=_INDENT,
        subsequent_indent=_INDENT + "  ",
        break_on_hyphens=False,
        break_long_words=False,
    )


def _lower_first(text: str) -> str:
    """``"The shopper: ..."`` -> ``"the shopper: ..."`` after a bullet's colon (and ``"A ..."``);
    ``"T, the turns"`` and ``"``name``"`` stay as they are."""
    if len(text) > 1 and text[0].isupper() and (text[1].islower() or text[:2] == "A "):
        return text[0].lower() + text[1:]
    return text


# --- the action modes ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeRow:
    """One action mode as the docs describe it, read from its class."""

    name: str
    space: str  # e.g. "Box(-1, 1, (D,), float32)"
    summary: str  # the docstring's summary after the space
    observation_keys: tuple[str, ...]
    info_keys: tuple[str, ...]
    default: bool


def symbolic_space(mode: type, symbols: dict[str, int]) -> str:
    """Mode class ``mode``'s action space, built from the class with the sizes ``symbols``
    gives (``N`` items in play, ``D`` features, ...), written with those symbols."""
    names = {size: symbol for symbol, size in symbols.items()}
    tables = SimpleNamespace(num_items=symbols["N"], feature_dim=symbols["D"])
    uses_picker = bool(getattr(mode, "uses_picker", False))
    settings = SimpleNamespace(
        shortlist_size=symbols["M"] if uses_picker else symbols["K"],
        slate_size=symbols["K"],
    )
    instance: Any = object.__new__(mode)
    instance.tables, instance.settings = tables, settings
    space = instance._make_space()

    def size(n: int) -> str:
        if n not in names:
            raise SystemExit(f"{mode.__name__}'s space has a size ({n}) that is none of {sorted(symbols)}")
        return names[n]

    if isinstance(space, spaces.Discrete):
        return f"Discrete({size(int(space.n))})"
    if isinstance(space, spaces.MultiDiscrete):
        values = {int(v) for v in space.nvec.ravel()}
        if len(values) != 1:
            raise SystemExit(f"{mode.__name__}'s MultiDiscrete has several sizes: {sorted(values)}")
        return f"MultiDiscrete([{size(values.pop())}] * {size(int(space.nvec.size))})"
    if isinstance(space, spaces.Box):
        low, high = float(space.low.min()), float(space.high.max())
        if space.shape is None or len(space.shape) != 1:
            raise SystemExit(f"{mode.__name__}'s Box is not one-dimensional: {space.shape}")
        return f"Box({low:g}, {high:g}, ({size(space.shape[0])},), {space.dtype})"
    raise SystemExit(f"{mode.__name__}'s space {space} has no written form here")


def short_space(space: str) -> str:
    """``Box(-1, 1, (D,), float32)`` -> ``Box(-1, 1, (D,))``: how the mode docstrings write it."""
    return re.sub(r", (float32|float64|int64)\)$", ")", space)


def mode_rows() -> list[ModeRow]:
    """Every registered action mode, in registration order."""
    from fiq_gym.action_modes import MODES
    from fiq_gym.env_config import EnvConfig

    rows = []
    for name, mode in MODES.items():
        space = symbolic_space(mode, _SIZES)
        lead = inspect.cleandoc(mode.__doc__ or "").split("\n\n")[0]
        lead = " ".join(lead.split())
        match = re.fullmatch(r"``(?P<space>[^`]+)``: (?P<summary>.+)", lead)
        if match is None or match["space"] != short_space(space):
            raise SystemExit(
                f"{mode.__name__}'s docstring must open with ``{short_space(space)}``: and a summary "
                f"(its space as built), not {lead!r}"
            )
        summary = match["summary"].rstrip(".")
        rows.append(
            ModeRow(
                name, space, summary, mode.observation_keys, mode.info_keys, name == EnvConfig.action_mode
            )
        )
    return rows


def _keys(keys: Sequence[str]) -> str:
    """Keys for a table cell: a group of two or more with one prefix as ``prefix_*``."""
    if not keys:
        return "-"
    groups: dict[str, list[str]] = {}
    for key in keys:
        prefix, underscore, _ = key.partition("_")
        groups.setdefault(prefix + underscore if underscore else key, []).append(key)
    cells = [f"`{prefix}*`" if len(group) > 1 else f"`{group[0]}`" for prefix, group in groups.items()]
    return ", ".join(cells)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "", wrap: int | None = None
) -> str:
    """A markdown table with aligned columns; ``wrap``: the last column's text wraps at that
    width onto rows of its own, the other cells empty (for docstrings read as text)."""
    if wrap is not None:
        wrapped: list[Sequence[str]] = []
        for row in rows:
            for i, part in enumerate(textwrap.wrap(row[-1], wrap)):
                wrapped.append([*(row[:-1] if i == 0 else [""] * (len(row) - 1)), part])
        rows = wrapped
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return indent + "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = indent + "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def mode_table() -> str:
    """docs/rl.md's action-mode table: mode, space, what the action does, the keys it adds."""
    header = ("mode", "space", "the action", "adds observation keys", "adds info keys")
    rows = [
        (
            f"`{r.name}`" + (" (default)" if r.default else ""),
            f"`{r.space}`",
            r.summary,
            _keys(r.observation_keys),
            _keys(r.info_keys),
        )
        for r in mode_rows()
    ]
    return _table(header, rows)


def docstring_mode_table() -> str:
    """The env docstring's action-mode table: mode, space and what the action does (its
    Observation Space and Info sections list the keys), wrapped to be read by ``help()``."""
    rows = [(f"`{r.name}`", f"`{r.space}`", r.summary) for r in mode_rows()]
    return _table(("mode", "space", "the action"), rows, _INDENT, wrap=44)


# --- the observation, info and reward tables ------------------------------------------------------
# Sizes for the observation table: primes (T + 1 too), so every size an observation space has
# (a symbol, T + 1, K - 1 or a product such as (T+1)*D) is written back by one expression.
_OBSERVATION_SIZES = {"N": 99_991, "D": 9_973, "V": 7_919, "A": 61, "L": 53, "K": 89, "T": 106}


def _expressions(symbols: dict[str, int]) -> dict[int, str]:
    """Every size an observation space may have, by value: the symbols, ``T+1``, ``K-1`` and
    the products of ``(T+1)`` or ``K`` rows with ``D``, ``A`` or ``L`` columns."""
    out = {value: name for name, value in symbols.items()}
    rows = {"(T+1)": symbols["T"] + 1, "K": symbols["K"]}
    out[symbols["T"] + 1], out[symbols["K"] - 1] = "T+1", "K-1"
    for row, r in rows.items():
        for column in ("D", "A", "L"):
            out[r * symbols[column]] = f"{row}*{column}"
    if len(out) != len(symbols) + 2 + 2 * 3:
        raise SystemExit("two observation sizes coincide: choose other primes in _OBSERVATION_SIZES")
    return out


def written_space(space: spaces.Space[Any], names: dict[int, str]) -> str:
    """An observation space as the docs write it, its sizes by ``names`` (numbers below 10 as
    they are): ``Box(-1, 1, ((T+1)*D,), float32)``."""

    def size(n: int) -> str:
        if n in names:
            return names[n]
        if n < 10:
            return str(n)
        raise SystemExit(f"an observation space has a size ({n}) with no symbol: {space}")

    if isinstance(space, spaces.MultiDiscrete):
        values = {int(v) for v in space.nvec.ravel()}
        if len(values) != 1:
            raise SystemExit(f"an observation MultiDiscrete has several sizes: {sorted(values)}")
        return f"MultiDiscrete([{size(values.pop())}] * {size(int(space.nvec.size))})"
    if isinstance(space, spaces.MultiBinary):
        return f"MultiBinary({size(int(np.prod(space.shape)))})"
    if isinstance(space, spaces.Box) and space.shape is not None and len(space.shape) == 1:
        low, high = float(space.low.min()), float(space.high.max())
        if np.issubdtype(space.dtype, np.integer):
            bounds = f"{size(int(low))}, {size(int(high))}"
        else:
            bounds = f"{low:g}, {high:g}"
        return f"Box({bounds}, ({size(space.shape[0])},), {space.dtype})"
    raise SystemExit(f"the observation space {space} has no written form here")


@dataclass(frozen=True)
class KeyRow:
    """One observation or info key as the docs describe it, read from the code."""

    name: str
    kind: str  # the observation's space, or the info value's type
    meaning: str
    modes: tuple[str, ...]  # the action modes that add it; () for the engine's own keys
    optional: bool = False  # asked for by name only


def _modes_adding(attribute: str) -> dict[str, tuple[str, ...]]:
    """Each key a mode adds -> the modes that add it (``attribute``: ``observation_keys`` or
    ``info_keys``), in registration order."""
    from fiq_gym.action_modes import MODES

    out: dict[str, tuple[str, ...]] = {}
    for name, mode in MODES.items():
        for key in getattr(mode, attribute):
            out[key] = (*out.get(key, ()), name)
    return out


def _documented(kind: str, keys: Sequence[str], docs: dict[str, Any]) -> None:
    missing = [key for key in keys if key not in docs]
    extra = [key for key in docs if key not in keys]
    if missing or extra:
        raise SystemExit(f"{kind} keys without a description: {missing}; described but never made: {extra}")


def observation_rows() -> list[KeyRow]:
    """Every observation key: the engine's (default ones, then those asked for by name), then
    each mode's, with the space the code builds for symbolic sizes."""
    from fiq_gym.action_modes import MODE_OBSERVATION_KEY_DOCS, MODES
    from fiq_gym.dialog_engine import OBSERVATION_KEY_DOCS, OBSERVATION_KEYS, OPTIONAL_KEYS, DialogBatch

    s = _OBSERVATION_SIZES
    names = _expressions(s)
    tables = SimpleNamespace(num_items=s["N"], feature_dim=s["D"], side_info=np.empty((0, s["A"])))
    engine_keys = OBSERVATION_KEYS + OPTIONAL_KEYS
    engine: Any = SimpleNamespace(
        tables=tables,
        config=SimpleNamespace(caption_length=s["L"], max_turns=s["T"], observation_keys=engine_keys),
        tokenizer=SimpleNamespace(vocab_size=s["V"]),
        mode=SimpleNamespace(observation_spaces=dict),
    )
    built = dict(DialogBatch.observation_space(engine).spaces)
    adding = _modes_adding("observation_keys")
    for mode in MODES.values():
        if all(key in built for key in mode.observation_keys):
            continue  # e.g. shortlist_slate: the shortlist's keys and the slate's
        instance: Any = object.__new__(mode)
        instance.tables = tables
        instance.settings = SimpleNamespace(shortlist_size=s["K"], slate_size=s["K"])
        built.update(instance.observation_spaces())
    _documented("engine observation", engine_keys, OBSERVATION_KEY_DOCS)
    _documented("mode observation", list(adding), MODE_OBSERVATION_KEY_DOCS)
    docs = {**OBSERVATION_KEY_DOCS, **MODE_OBSERVATION_KEY_DOCS}
    return [
        KeyRow(key, written_space(built[key], names), docs[key], adding.get(key, ()), key in OPTIONAL_KEYS)
        for key in (*engine_keys, *adding)
    ]


def info_rows() -> list[KeyRow]:
    """Every info key: the engine's, then each mode's."""
    from fiq_gym.action_modes import MODE_INFO_KEY_DOCS
    from fiq_gym.dialog_engine import INFO_KEY_DOCS

    adding = _modes_adding("info_keys")
    _documented("mode info", list(adding), MODE_INFO_KEY_DOCS)
    rows = [KeyRow(key, kind, meaning, ()) for key, (kind, meaning) in INFO_KEY_DOCS.items()]
    return rows + [KeyRow(key, *MODE_INFO_KEY_DOCS[key], adding[key]) for key in adding]


def _meaning(row: KeyRow) -> str:
    """A key's meaning, with the modes that add it."""
    if not row.modes:
        return row.meaning
    noun = "mode" if len(row.modes) == 1 else "modes"
    return f"{row.meaning} ({noun} " + ", ".join(f"`{m}`" for m in row.modes) + ")"


def _key_cell(row: KeyRow) -> str:
    return f"`{row.name}`" + (" (opt-in)" if row.optional else "")


def observation_table(indent: str = "", wrap: int | None = None) -> str:
    rows = [(_key_cell(r), f"`{r.kind}`", _meaning(r)) for r in observation_rows()]
    return _table(("key", "space", "meaning"), rows, indent, wrap)


def info_table(indent: str = "", wrap: int | None = None) -> str:
    rows = [(f"`{r.name}`", f"`{r.kind}`", _meaning(r)) for r in info_rows()]
    return _table(("key", "type", "meaning"), rows, indent, wrap)


def reward_table() -> str:
    """docs/rl.md's reward table: each kind, what a turn pays, the return, the curve it follows."""
    from fiq_gym.dialog_engine import REWARD_DOCS
    from fiq_gym.env_config import EnvConfig

    rows = [
        (
            f"`{name}`" + (" (default)" if name == EnvConfig.reward else ""),
            doc.per_turn.replace("``", "`"),
            doc.episode_return.replace("``", "`"),
            doc.follows,
        )
        for name, doc in REWARD_DOCS.items()
    ]
    return _table(("`reward=`", "per turn", "return (no bonus)", "follows"), rows)


def reward_list() -> str:
    """The env docstring's reward bullets, one per kind."""
    from fiq_gym.dialog_engine import REWARD_DOCS
    from fiq_gym.env_config import EnvConfig

    bullets = []
    for name, doc in REWARD_DOCS.items():
        default = " (default)" if name == EnvConfig.reward else ""
        text = (
            f'* `"{name}"`{default}: per turn {doc.per_turn}; return {doc.episode_return}; it '
            f"follows {doc.follows};"
        )
        bullets.append(_bullet(text))
    return "\n".join(bullets)


# --- where the blocks go -------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """A generated block of one file: ``pattern`` (a regex with groups ``head``, ``body`` and
    ``tail``) finds it, ``make`` writes its body."""

    name: str
    path: Path
    pattern: str
    make: Callable[[], str]


def _marked(name: str) -> str:
    return rf"(?P<head><!-- spec:{name}\b[^>]*-->\n)(?P<body>.*?)(?P<tail><!-- /spec:{name} -->)"


_PARAMETERS_HEAD = (
    r"(?P<head>        # EnvConfig's fields, written from fiq_gym/env_config.py by tools/spec_docs.py:\n)"
)

BLOCKS = (
    Block(
        "FashionIQEnv's parameters",
        ENV_MODULE,
        _PARAMETERS_HEAD + r"(?P<body>.*?\n)(?P<tail>    \) -> None:\n)",
        lambda: parameter_lines() + "\n",
    ),
    Block(
        "FashionIQVectorEnv's parameters",
        VECTOR_MODULE,
        _PARAMETERS_HEAD + r"(?P<body>.*?\n)(?P<tail>        # the vector env's own:\n)",
        # None: the registered max_episode_steps that gym.make_vec passes (5 without one).
        lambda: parameter_lines({"max_turns": "int | None = None"}) + "\n",
    ),
    Block(
        "the env docstring's gym.make block",
        ENV_MODULE,
        r"(?P<head>    ## Arguments\n\n)(?P<body>    ```python\n.*?\n    ```\n)(?P<tail>)",
        lambda: signature_block() + "\n",
    ),
    Block(
        "the env docstring's argument list",
        ENV_MODULE,
        r"(?P<head>    ## Arguments\n.*?\n\n)(?P<body>    \* ``.*?\n)(?P<tail>\n    ## Registered)",
        lambda: argument_list() + "\n",
    ),
    Block(
        "the env docstring's action-mode table",
        ENV_MODULE,
        r"(?P<head>    ## Action Space\n\n.*?\n\n)(?P<body>    \| mode .*?\n)(?P<tail>\n)",
        lambda: docstring_mode_table() + "\n",
    ),
    Block("docs/rl.md's action-mode table", RL_PAGE, _marked("action-modes"), lambda: mode_table() + "\n"),
    Block(
        "the env docstring's observation table",
        ENV_MODULE,
        r"(?P<head>    ## Observation Space\n\n.*?\n\n)(?P<body>    \| key .*?\n)(?P<tail>\n)",
        lambda: observation_table(_INDENT, wrap=28) + "\n",
    ),
    Block(
        "the env docstring's info table",
        ENV_MODULE,
        r"(?P<head>    ## Info\n\n)(?P<body>    \| key .*?\n)(?P<tail>\n)",
        lambda: info_table(_INDENT, wrap=56) + "\n",
    ),
    Block(
        "the env docstring's reward list",
        ENV_MODULE,
        r"(?P<head>    ## Rewards\n.*?With ``reward=``:\n\n)(?P<body>    \* .*?\n)(?P<tail>\n    plus ``success_bonus``)",
        lambda: reward_list() + "\n",
    ),
    Block(
        "docs/rl.md's observation table", RL_PAGE, _marked("observations"), lambda: observation_table() + "\n"
    ),
    Block("docs/rl.md's info table", RL_PAGE, _marked("info"), lambda: info_table() + "\n"),
    Block("docs/rl.md's reward table", RL_PAGE, _marked("rewards"), lambda: reward_table() + "\n"),
)


def render(text: str, block: Block) -> str:
    """``text`` with ``block``'s body written anew."""
    found = list(re.finditer(block.pattern, text, re.S))
    if len(found) != 1:
        raise SystemExit(
            f"{block.path.relative_to(REPOSITORY)}: {block.name} found {len(found)} times, not once"
        )
    m = found[0]
    return text[: m.start()] + m["head"] + block.make() + m["tail"] + text[m.end() :]


def stale(blocks: Sequence[Block] | None = None) -> list[str]:
    """The blocks (default: all) whose committed text differs from what the code gives."""
    out = []
    for block in BLOCKS if blocks is None else blocks:
        text = block.path.read_text(encoding="utf-8")
        if render(text, block) != text:
            out.append(f"{block.path.relative_to(REPOSITORY)}: {block.name}")
    return out


def write(blocks: Sequence[Block] | None = None) -> list[str]:
    """Rewrite every stale block (default: of all) in place; the names of those rewritten."""
    blocks = BLOCKS if blocks is None else blocks
    changed = stale(blocks)
    for path in {b.path for b in blocks}:
        text = original = path.read_text(encoding="utf-8")
        for block in (b for b in blocks if b.path == path):
            text = render(text, block)
        if text != original:
            path.write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 naming the stale blocks; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"stale: {name} (run python tools/spec_docs.py)", file=sys.stderr)
        return 1 if names else 0
    for name in write():
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
