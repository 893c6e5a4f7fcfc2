"""``fiq-gym play``: be the shopper in a terminal.

Each turn prints the garment the agent shows (its id and description), the target's rank,
and the path of a PNG with your target and that garment side by side; in a terminal that
advertises an inline-image protocol (kitty, iTerm2 / WezTerm) the picture is drawn inline
too. Then it reads one line of feedback.

Lines starting with ``:`` are commands:

* ``:quit`` (or ``:q``, or end of input): stop (finished dialogs are saved with ``--save``);
* ``:new [ITEM]``: abandon this dialog and start another (target: an item id or index);
* ``:target``: show the target again;
* ``:save [PATH]``: save the dialogs so far now;
* ``:help``: this list.

An empty line asks again (after a dialog has ended it starts the next one). In watch mode
(``--watch``) the simulated shopper answers and each Enter plays one turn.

All input and output go through the ``input`` / ``output`` streams, so tests (and scripts)
drive it with ``io.StringIO``.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from fiq_gym.play.images import pair_image, png_bytes, save_png
from fiq_gym.play.record import DialogRecord
from fiq_gym.play.session import PlaySession, SessionStateError

__all__ = ["inline_protocol", "run_terminal"]

HELP = """commands: :quit (or :q, or Ctrl-D)  :new [ITEM]  :target  :save [PATH]  :help
anything else is your feedback: how your target differs from the garment shown,
e.g. "is darker and has longer sleeves"."""

INLINE_CHOICES = ("auto", "kitty", "iterm2", "off")


def inline_protocol(choice: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> str | None:
    """The inline-image protocol to use: ``"kitty"``, ``"iterm2"`` or None.

    ``auto`` uses one only when ``stream`` is a terminal that advertises it (kitty sets
    ``KITTY_WINDOW_ID`` / ``TERM=xterm-kitty``; iTerm2 and WezTerm set ``TERM_PROGRAM``);
    otherwise pictures are only saved as PNG files.
    """
    if choice not in INLINE_CHOICES:
        raise ValueError(f"inline must be one of {list(INLINE_CHOICES)}, got {choice!r}")
    if choice == "off":
        return None
    if choice != "auto":
        return choice
    env = os.environ if environ is None else environ
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    if env.get("KITTY_WINDOW_ID") or env.get("TERM") == "xterm-kitty":
        return "kitty"
    if env.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm"):
        return "iterm2"
    return None


def _inline_escape(png: bytes, protocol: str) -> str:
    data = base64.standard_b64encode(png).decode("ascii")
    if protocol == "iterm2":
        return f"\033]1337;File=inline=1;size={len(png)};preserveAspectRatio=1:{data}\a\n"
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    out = []
    for k, chunk in enumerate(chunks):
        more = 1 if k < len(chunks) - 1 else 0
        head = f"a=T,f=100,m={more}" if k == 0 else f"m={more}"
        out.append(f"\033_G{head};{chunk}\033\\")
    return "".join(out) + "\n"


class _Terminal:
    def __init__(
        self,
        session: PlaySession,
        input: TextIO,
        output: TextIO,
        image_dir: Path,
        inline: str | None,
    ) -> None:
        self.session = session
        self.input, self.output = input, output
        self.image_dir = image_dir
        self.inline = inline
        self.dialog_number = 0

    def say(self, text: str = "") -> None:
        self.output.write(text + "\n")
        self.output.flush()

    def read(self, prompt: str) -> str | None:
        self.output.write(prompt)
        self.output.flush()
        line = self.input.readline()
        if not line:
            self.say()
            return None
        return line.rstrip("\r\n")

    def picture(self, state: dict[str, Any]) -> None:
        s = self.session
        label = f"turn {state['turn']}: shown"
        image = pair_image(s.catalog, state["target"]["row"], state["shown"]["row"], label)
        path = save_png(image, self.image_dir / f"dialog{self.dialog_number}-turn{state['turn']}.png")
        self.say(f"  picture (target | shown): {path}")
        if self.inline:
            self.output.write(_inline_escape(png_bytes(image), self.inline))

    def show_target(self, state: dict[str, Any]) -> None:
        t = state["target"]
        self.say(f"Your target: {t['id']} (#{t['index']}): {t['description']}")

    def show_turn(self, state: dict[str, Any]) -> None:
        shown, n = state["shown"], state["num_items"]
        rank = state["rank"]
        who = "first garment" if state["turn"] == 0 else "the agent shows"
        self.say(
            f"\nTurn {state['turn']} of {state['max_turns']}: {who} {shown['id']} (#{shown['index']}): "
            f"{shown['description']}"
        )
        self.say(
            f"  target rank: {rank} of {n - 1} (0 is the top; {state['percentile']:.1%} of the catalog ranks below it)"
        )
        self.picture(state)
        last = state["history"][-1]
        if self.session.mode == "watch" and last["caption"]:
            self.say(f'  shopper: "{last["caption"]}"')

    def show_end(self, state: dict[str, Any]) -> None:
        if state["status"] == "found":
            self.say(f"\nFound it at turn {state['turn']}! The agent showed your target.")
        else:
            best = min(t["rank"] for t in state["history"])
            self.say(
                f"\nNot found in {state['max_turns']} turns; the target ended at rank {state['rank']} "
                f"(best {best})."
            )
        if self.session.save_path:
            self.say(f"saved to {self.session.save_path}")

    def start(self, target: str | None) -> dict[str, Any]:
        self.dialog_number += 1
        state = self.session.new_dialog(target)
        self.say(f"\n=== dialog {self.dialog_number} ===")
        self.show_target(state)
        self.show_turn(state)
        return state

    def command(self, line: str, state: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Run a ``:`` command; returns (keep going, state)."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "q", "exit"):
            return False, state
        if name == "help":
            self.say(HELP)
        elif name == "target":
            self.show_target(state)
        elif name == "new":
            state = self.start(arg or None)
        elif name == "save":
            self.say(f"saved to {self.session.save(arg or None)}")
        else:
            self.say(f"unknown command :{name}; {HELP}")
        return True, state

    def run(self, target: str | None) -> list[DialogRecord]:
        s = self.session
        self.say(
            f"fiq-gym play: {'you are the shopper' if s.mode == 'human' else 'watching the simulated shopper'}. "
            f"Agent: {s.agent.name}; {s.num_items} garments; at most {s.max_turns} turns."
        )
        if s.mode == "human":
            self.say(
                "The agent knows the words of the shopper it was trained with; others reach it as <unk>."
            )
        self.say(HELP)
        self.say(f"pictures go to {self.image_dir}")
        state = self.start(target)
        while True:
            over = state["status"] in ("found", "out_of_turns")
            if over:
                prompt = "\n[Enter: new dialog, :quit: stop] > "
            elif s.mode == "watch":
                prompt = "[Enter: next turn] > "
            else:
                prompt = "feedback> "
            line = self.read(prompt)
            if line is None:
                break
            stripped = line.strip()
            try:
                if stripped.startswith(":"):
                    keep, state = self.command(stripped, state)
                    if not keep:
                        break
                    continue
                if over:
                    if stripped:
                        self.say("this dialog is over; press Enter for a new one (or :quit)")
                        continue
                    state = self.start(None)
                    continue
                if s.mode == "watch":
                    state = s.advance()
                elif not stripped:
                    self.say("type how your target differs from the garment shown (or :help)")
                    continue
                else:
                    state = s.submit(stripped)
                    unknown = state["history"][-2]["unknown_words"]
                    if unknown:
                        self.say(f"  (words the agent does not know, read as <unk>: {', '.join(unknown)})")
            except (ValueError, SessionStateError) as e:
                self.say(f"  {e}")
                continue
            self.show_turn(state)
            if state["status"] in ("found", "out_of_turns"):
                self.show_end(state)
        if s.save_path and s.dialogs():
            self.say(f"saved {len(s.dialogs())} dialog(s) to {s.save(None)}")
        return s.dialogs()


def run_terminal(
    session: PlaySession,
    *,
    input: TextIO | None = None,
    output: TextIO | None = None,
    image_dir: str | os.PathLike | None = None,
    inline: str = "auto",
    target: str | None = None,
) -> list[DialogRecord]:
    """Play in a terminal until ``:quit`` or end of input; returns the dialogs played (see
    :meth:`PlaySession.dialogs`).

    Args:
        session: the session to play (human or watch mode).
        input, output: text streams (default: stdin / stdout).
        image_dir: where the PNGs go (default: a new temporary directory, kept).
        inline: ``"auto"``, ``"kitty"``, ``"iterm2"`` or ``"off"`` (see :func:`inline_protocol`).
        target: the first dialog's target (item id or index); default: dealt at random.
    """
    input = sys.stdin if input is None else input
    output = sys.stdout if output is None else output
    directory = Path(image_dir) if image_dir else Path(tempfile.mkdtemp(prefix="fiq-gym-play-"))
    directory.mkdir(parents=True, exist_ok=True)
    terminal = _Terminal(session, input, output, directory, inline_protocol(inline, output))
    return terminal.run(target)
