"""``fiq-gym play``, ``fiq-gym serve`` and ``fiq-gym replay``.

Only argparse here: agents, envs and torch load when a command runs, so ``fiq-gym --help``
stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from fiq_gym.utils.arguments import catalog_arg, path_arg, seed
from fiq_gym.utils.links import doc_url

if TYPE_CHECKING:
    from fiq_gym.play.agent import PlayAgent

__all__ = ["add_commands"]


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent",
        type=path_arg,
        help="agent checkpoint directory written by `fiq-gym train AGENT` (default: the shipped supervised "
        "retriever for the default catalog)",
    )
    parser.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the one the agent was trained on)"
    )
    parser.add_argument(
        "--max-turns", type=int, help="turns per dialog (default: the agent's training setting)"
    )
    parser.add_argument("--seed", type=seed, help="seed for the targets and first garments dealt")
    parser.add_argument(
        "--save",
        type=path_arg,
        help=f"add every finished dialog to this JSON file (format: {doc_url('docs/play.md', 'the-dialog-file')})",
    )


def _load(args: argparse.Namespace) -> PlayAgent:
    from fiq_gym.play.agent import load_play_agent

    return load_play_agent(args.agent, catalog=args.catalog, max_turns=args.max_turns)


def _play(args: argparse.Namespace) -> int:
    from fiq_gym.play.session import PlaySession
    from fiq_gym.play.terminal import run_terminal

    agent = _load(args)
    session = PlaySession(agent, mode="watch" if args.watch else "human", seed=args.seed, save_path=args.save)
    try:
        run_terminal(session, image_dir=args.image_dir, inline=args.inline, target=args.target)
    finally:
        session.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fiq_gym.play.server import PlayServer

    agent = _load(args)
    server = PlayServer(
        agent, host=args.host, port=args.port, save_path=args.save, seed=args.seed, quiet=not args.verbose
    )
    print(f"fiq-gym serve: open {server.url}  (agent: {agent.name}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.close()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from fiq_gym.play.replay import evaluate_recorded

    result = evaluate_recorded(
        args.dialogs,
        agent=args.agent,
        catalog=args.catalog,
        max_turns=args.max_turns,
        fallback=args.fallback,
        seed=args.seed or 0,
    )
    print(result)
    print(
        f"\nrecorded captions answered {result.meta['recorded_answers']} of {result.meta['answers']} turns; "
        f"the rest came from the fallback shopper ({args.fallback})"
    )
    if args.out:
        result.save_json(args.out)
        print(f"wrote {args.out}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``play``, ``serve`` and ``replay`` to the ``fiq-gym`` subparsers ``sub``."""
    play = sub.add_parser(
        "play",
        help="be the shopper in the terminal: type feedback, a retriever searches",
        description=(
            "You have a target garment; each turn the agent shows one and you type how your target "
            "differs. Pictures are saved as PNG (and drawn inline in kitty / iTerm2 / WezTerm). "
            "Commands: :quit, :new [ITEM], :target, :save [PATH], :help."
        ),
    )
    _agent_arguments(play)
    play.add_argument("--target", help="the first dialog's target: an item id or index (default: dealt)")
    play.add_argument("--watch", action="store_true", help="watch the simulated shopper play instead")
    play.add_argument(
        "--image-dir", type=path_arg, help="where to write the PNGs (default: a new temporary directory)"
    )
    play.add_argument(
        "--inline",
        choices=("auto", "kitty", "iterm2", "off"),
        default="auto",
        help="draw pictures inline (auto: when the terminal advertises it)",
    )
    play.set_defaults(func=_play)

    serve = sub.add_parser(
        "serve",
        help="be the shopper in a browser (or watch the simulated one): a small local web page",
        description="Serve a local web page to play (or watch) dialogs with a retriever.",
    )
    _agent_arguments(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--verbose", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)

    replay = sub.add_parser(
        "replay",
        help="evaluate an agent on recorded dialogs (their targets, first garments and captions)",
        description=(
            "Replay dialogs saved by `fiq-gym play --save` / `serve --save` as an evaluation set: each "
            "episode starts from a recorded (target, first garment); the shopper answers with the recorded "
            "caption whenever the agent shows a garment that was captioned for that target, and the "
            "fallback shopper answers otherwise."
        ),
    )
    replay.add_argument("dialogs", type=path_arg, nargs="+", help="dialog JSON files")
    replay.add_argument(
        "--agent", type=path_arg, help="agent checkpoint (default: the shipped supervised retriever)"
    )
    replay.add_argument("--catalog", type=catalog_arg, help="catalog directory (default: the agent's)")
    replay.add_argument("--max-turns", type=int, help="turns per episode (default: the agent's)")
    replay.add_argument(
        "--fallback",
        choices=("template", "transformer"),
        default="template",
        help="who answers for garments nobody captioned (default: template)",
    )
    replay.add_argument("--seed", type=seed, help="seed for the fallback shopper's wording")
    replay.add_argument("--out", type=path_arg, help="also write the per-turn metrics as JSON here")
    replay.set_defaults(func=_replay)
