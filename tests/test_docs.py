"""Docs that run (issue 37, item 7): every ```python block and every shell command of README.md,
docs/*.md and benchmarks/README.md runs as written, so a snippet cannot rot again.

How they run (tests/docs_runner.py runs the steps of one test):

* The Python blocks of a page run in order in one fresh interpreter, in one namespace, as a
  reader pastes them into one session; a block that stands alone (ALONE) is a test of its own,
  and a block guarded by ``if __name__ == "__main__":`` runs as a script file of its own.
* Each ```bash / ```sh / ```console block is a test: its commands (a transcript's ``$ `` lines,
  else every line but comments; a trailing backslash continues the line) run in order. Steps of
  a command that install (``python3 -m venv``, activating it, ``pip install``) are not run:
  they need the network and a fresh environment (tests/test_packaging.py installs the wheel
  into one); test_install_commands_pin_their_constraints reads them instead.
* Blocks that build on each other run together (GROUPS, WHOLE_PAGES), in order.
* Every test has a temporary working directory of its own; FIQ_GYM_CACHE is the session's
  (tests/conftest.py), and the default catalog is built once, before any snippet runs.
* SUBSTITUTIONS shrinks what trains or evaluates for long; SKIP lists what cannot run here.
  Each entry says why, and an entry that matches no snippet fails
  test_the_tables_match_the_docs, so the tables cannot go stale.
* Snippets that need Ray carry the ``rllib`` marker (skipped without Ray; CI runs them with the
  rllib extra), those that need Minari the ``minari`` marker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "README.md",
    *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))),
    "benchmarks/README.md",
)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
#: the steps of a command (split at ``&&``) that install rather than use fiq-gym
INSTALL_STEP = re.compile(r"^(python3? -m venv |\. \S*activate$|source \S*activate$|pip install )")
#: seconds one step (a Python block or a command) may take
STEP_TIMEOUT = 240

# --- the tables ---------------------------------------------------------------------------------

#: (pattern, replacement, why): budgets and stand-ins, applied to every snippet (re.sub, multiline).
#: ``<<name>>`` in a replacement is a path the test provides (see ``_stand_ins``).
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    # The README's main job trains every agent for 12 minutes; tests/test_benchmarks.py runs the
    # tiny preset with every agent. Here: the command runs, with the cheapest preset and agent.
    (r"fiq-gym bench --quick", "fiq-gym bench --preset tiny --agents random", "12 minutes of training"),
    # The SB3 recipes' training and evaluation budgets: minutes each. PPO's first update comes
    # after n_steps x num_envs steps, whatever learn() is given: 4 dialogs make it 128.
    (r"\.learn\(200_000\)", ".learn(256)", "200,000 env steps"),
    (r"num_envs=16, action_mode=\"shortlist\"", 'num_envs=4, action_mode="shortlist"', "16 dialogs a step"),
    (r"episodes=1000\b", "episodes=16", "1,000 evaluation dialogs per agent"),
    # The CleanRL file's budget (an update is num_steps=32 x num_envs; it evaluates 256 dialogs).
    (r"total_timesteps=200_000", "total_timesteps=128, num_envs=4, eval_episodes=16", "200,000 env steps"),
    # TorchRL's AsyncVectorEnv spawns a process per env, each importing torch and fiq-gym.
    (
        r"num_envs=4, action_mode=\"shortlist\", caption_text=False",
        'num_envs=2, action_mode="shortlist", caption_text=False',
        "4 processes",
    ),
    # Trainers run from the command line: a few rounds and a small evaluation.
    (r"^fiq-gym train supervised ", r"\g<0>--rounds 2 --eval-episodes 16 ", "minutes of training"),
    (r"--minutes 15\b", "--minutes 15 --updates 2 --eval-episodes 16", "15 minutes of training"),
    (r"fiq-gym train behaviour-cloning", r"\g<0> --epochs 1 --eval-episodes 16", "20 epochs, 500 dialogs"),
    (r"--iterations 50\b", "--iterations 1", "50 PPO iterations"),
    (
        r"^fiq-gym user train ",
        r"\g<0>--epochs 1 --bleu-pairs 16 ",
        "15 epochs of the captioner, BLEU on 300 pairs",
    ),
    (r"^fiq-gym train single-shot ", r"\g<0>--steps 20 ", "1,500 gradient steps"),
    (r"single_shot --catalog", "single_shot --seeds 0 --steps 20 --catalog", "3 seeds x 1,500 steps"),
    # Evaluations from the command line: 1,000 dialogs by default.
    (r"^(FIQ_GYM_HELD_OUT_SEED=\S+ )?fiq-gym eval ", r"\g<0>--episodes 64 ", "1,000 dialogs"),
    # Recording and catalogs: a few dialogs, a few hundred items (a million take 20 minutes).
    (r"--episodes 2000\b", "--episodes 16", "2,000 recorded dialogs"),
    (r"--size 1000000\b", "--size 400", "a million items"),
    (r"size=1_000_000\b", "size=400", "a million items"),
    # Stand-ins for what a reader has and this machine does not.
    (r"runs/(ppo|pg)/checkpoint", "<<play_agent>>", "a trained checkpoint: the shipped play agent is one"),
    (r"FIQ_GYM_HELD_OUT_SEED=\.\.\.", "FIQ_GYM_HELD_OUT_SEED=31337", "the maintainer's secret"),
    (r"/home/me/models/smollm2-360m", "<<tiny_lm>>", "a language model: the tests' tiny random GPT-2"),
    (r"/data/(fashion-iq|shoes)\b", r"\1", "the release files: the page's stand-in (WHOLE_PAGES)"),
    (r" more-dialogs\.json", "", "a second recording: the one the page made is enough"),
    # `python -m fiq_gym.play.agent CHECKPOINT` without OUT replaces the agent in the package.
    (r"(python -m fiq_gym\.play\.agent \S+)$", r"\1 play-default-agent", "writes into the package"),
    # TensorBoard is a server for a browser: check that the run wrote the folder it reads.
    (r"^tensorboard --logdir (\S+)$", r"test -d \1", "a server for a browser"),
]

#: snippet (a Python block or one command) -> why it cannot run here; each key names one snippet
SKIP: dict[str, str] = {
    '".[test]" -c constraints.txt && pytest': "the whole test suite, this test among it",
    'pytest -n 2 -m "rllib or env_contract"': "CI's second run of the suite, with the rllib extra",
    "ruff check . && ruff format --check .": "CI's lint step: it reads the checkout, not a page's folder",
    'AgentSpec("my_agent.py:make_agent")': "tests/test_adversaries.py runs it (and checks the held-out set)",
    "fiq-gym bench --preset leaderboard": "30 minutes a configuration; --publish writes into the checkout",
    "python -m fiq_gym.benchmarks.ceiling": "an hour of the posterior reader; writes into the checkout",
    "python -m fiq_gym.benchmarks.leaderboard": "rewrites benchmarks/results/leaderboard.md of the checkout",
    "fiq-gym serve --port 0": "a server for a browser (tests/test_play_browser.py drives one)",
    "fiq-gym train rllib-ppo --address auto": "joins a running Ray cluster",
    'ray.init(address="auto")': "joins a running Ray cluster",
    "huggingface-cli download": "downloads a model from the Hugging Face Hub",
}

#: Python block -> why it is a test of its own rather than part of its page's session
ALONE: dict[str, str] = {
    "model = PPO(ShortlistActorCriticPolicy": "a recipe: it imports what it uses",
    "ShortlistDQNPolicy, env, learning_rate=1e-4": "a recipe: it imports what it uses",
    "model = RecurrentPPO(": "a recipe: it imports what it uses",
    "from fiq_gym.agents.cleanrl_ppo_shortlist import Args, train": "a recipe: it imports what it uses",
    "envs = gym.vector.SyncVectorEnv([make_env(i)": "a recipe: it imports what it uses",
    "env = GymWrapper(venv": "a recipe: it imports what it uses",
    "with ray_session(num_cpus=1):": "needs Ray, which the page's other blocks do not",
}

#: blocks (named by a key of each) that build on each other: one test, in the page's order
GROUPS: dict[str, tuple[str, ...]] = {
    "docs/benchmarks.md": ("# wrote 2000 episodes", "minari.load_dataset("),  # record, then read it
    "docs/play.md": (
        "fiq-gym play --seed 1 --save dialogs.json",
        "fiq-gym replay dialogs.json",
    ),  # play, replay
}

#: pages whose blocks all build on each other (one test), with what the page says to run first
WHOLE_PAGES: dict[str, tuple[str, ...]] = {
    # "No real data yet? `fiq-gym catalog export fashioniq OUT` (or `shoes`) writes the built-in
    # synthetic catalog in the same layout [...]. Every command below works on that folder."
    "docs/real_data.md": (
        "fiq-gym catalog export fashioniq fashion-iq --catalog <<small_catalog>> --pairs 40",
        "fiq-gym catalog export shoes shoes --catalog <<small_catalog>> --pairs 80",
    ),
}

#: snippet key -> files the snippet expects in the working directory (text, or a repository file)
FILES: dict[str, dict[str, str | Path]] = {
    # the submitted agent that `fiq-gym eval --agent submission.py:make_agent` evaluates
    "submission.py:make_agent": {
        "submission.py": "from fiq_gym.agents import RandomAgent\n\n\ndef make_agent(venv):\n"
        "    return RandomAgent.for_env(venv, seed=0)\n"
    },
    # read from the root of a clone
    "benchmarks/results/full/dialog.json": {
        "benchmarks/results/full/dialog.json": ROOT / "benchmarks/results/full/dialog.json"
    },
}

#: snippet key -> environment variables it says it needs
ENV: dict[str, dict[str, str]] = {
    "minari.load_dataset(": {"MINARI_DATASETS_PATH": "datasets"},  # "# MINARI_DATASETS_PATH=datasets"
}

#: snippet pattern -> what a person types: you are the shopper
STDIN: dict[str, str] = {
    r"^fiq-gym play\b": "is darker and has longer sleeves\n",
    r"HumanUser\(": "is darker and has longer sleeves\n",
}

#: marker -> pattern of the snippets that need it
MARKERS = {"rllib": r"\bray\b|rllib", "minari": r"\bminari\b|fiq-gym record|behaviour-cloning"}
NEEDS = {
    "rllib": 'Ray RLlib is not installed (the rllib extra: pip install -e ".[rllib]" -c constraints-rllib.txt)',
    "minari": 'Minari is not installed (the offline extra: pip install -e ".[offline]" -c constraints.txt)',
}
MODULES = {"rllib": "ray", "minari": "minari"}

# --- reading the pages --------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Command:
    line: int
    text: str


@dataclass(frozen=True)
class Block:
    page: str
    index: int  # among the page's Python and shell blocks
    line: int  # the first line of its code in the page
    kind: str  # "python" or "shell"
    code: str

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def commands(self) -> list[Command]:
        """A shell block's commands: a transcript's ``$`` lines, else every line but comments."""
        lines = self.code.splitlines()
        if any(line.startswith("$ ") for line in lines):
            return [
                Command(self.line + i, line[2:].strip())
                for i, line in enumerate(lines)
                if line.startswith("$ ")
            ]
        commands: list[Command] = []
        pending: tuple[int, str] | None = None
        for i, line in enumerate(lines):
            if pending is None and (not line.strip() or line.lstrip().startswith("#")):
                continue
            start, text = pending if pending is not None else (self.line + i, "")
            text += " " + line.strip() if text else line.strip()
            if text.endswith("\\"):
                pending = (start, text[:-1].rstrip())
            else:
                pending = None
                commands.append(Command(start, text))
        return commands

    @property
    def snippets(self) -> list[str]:
        """What the tables' keys are matched against: the block, or each of its commands."""
        return [self.code] if self.kind == "python" else [c.text for c in self.commands]

    @property
    def runnable(self) -> list[str]:
        """The snippets that run: not skipped, and not only installing."""
        return [
            s for s in self.snippets if not _skipped(s) and (self.kind == "python" or install_steps(s)[1])
        ]

    @property
    def guarded(self) -> bool:
        return (
            self.kind == "python" and re.search(r"^if __name__ == .__main__.:", self.code, re.M) is not None
        )


def read_blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        language = match["info"].strip().split(" ")[0].lower()
        kind = "python" if language == "python" else "shell" if language in SHELL_LANGUAGES else None
        if kind is None:
            continue
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["body"].splitlines()) + "\n"
        line = text.count("\n", 0, match.start("body")) + 1
        blocks.append(
            Block(page, len(blocks), line, kind, textwrap.dedent(code) if kind == "python" else code)
        )
    return blocks


BLOCKS = {page: read_blocks(page) for page in PAGES}
ALL_BLOCKS = [block for blocks in BLOCKS.values() for block in blocks]


def _blocks_with(key: str, blocks: list[Block] = ALL_BLOCKS) -> list[Block]:
    return [block for block in blocks if key in block.code]


def _skipped(snippet: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in snippet), None)


def install_steps(command: str) -> tuple[list[str], list[str]]:
    """A command's ``&&`` steps that install, and the others."""
    steps = [step.strip() for step in command.split(" && ")]
    return [s for s in steps if INSTALL_STEP.match(s)], [s for s in steps if not INSTALL_STEP.match(s)]


def substitute(snippet: str, values: dict[str, str]) -> str:
    """The snippet with SUBSTITUTIONS applied and the stand-ins' paths put in."""
    for pattern, replacement, _why in SUBSTITUTIONS:
        snippet = re.sub(pattern, replacement, snippet, flags=re.M)
    for name, value in values.items():
        snippet = snippet.replace(f"<<{name}>>", value)
    return snippet


# --- the tests, one per page session, block or group ---------------------------------------------


@dataclass(frozen=True)
class Case:
    page: str
    blocks: tuple[Block, ...]
    setup: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        if len(self.blocks) == 1:
            return f"{self.page}:{self.blocks[0].line}"
        return f"{self.page}:" + ",".join(str(b.line) for b in self.blocks)

    def steps(self, values: dict[str, str]) -> list[dict]:
        """What docs_runner.py runs, with the tables applied."""
        steps: list[dict] = []
        for command in self.setup:
            steps.append(self._shell(f"{self.page}:set-up", substitute(command, values)))
        for block in self.blocks:
            if block.kind == "python":
                if _skipped(block.code):
                    continue
                code = substitute(block.code, values)
                step = {
                    "label": block.label,
                    "code": code,
                    "path": str(ROOT / block.page),
                    "line": block.line,
                }
                if block.guarded:
                    step.update(kind="script", script=f"snippet_{block.line}.py")
                else:
                    step.update(kind="python")
                steps.append(self._extras(step, block.code))
                continue
            for command in block.commands:
                _, rest = install_steps(command.text)
                if not rest or _skipped(command.text):
                    continue
                code = substitute(" && ".join(rest), values)
                steps.append(self._extras(self._shell(f"{block.page}:{command.line}", code), command.text))
        return steps

    @staticmethod
    def _shell(label: str, code: str) -> dict:
        return {"label": label, "kind": "shell", "code": code, "timeout": STEP_TIMEOUT}

    @staticmethod
    def _extras(step: dict, snippet: str) -> dict:
        step.setdefault("timeout", STEP_TIMEOUT)
        env = {k: v for key, values in ENV.items() if key in snippet for k, v in values.items()}
        stdin = "".join(text for pattern, text in STDIN.items() if re.search(pattern, snippet, re.M))
        return {**step, "env": env, **({"stdin": stdin} if stdin else {})}

    def texts(self) -> list[str]:
        return [snippet for block in self.blocks for snippet in block.runnable]

    def files(self) -> dict[str, str | Path]:
        return {
            k: v
            for key, files in FILES.items()
            if any(key in s for s in self.texts())
            for k, v in files.items()
        }

    def markers(self) -> list[str]:
        return [m for m, pattern in MARKERS.items() if any(re.search(pattern, s) for s in self.texts())]


def _cases() -> list[Case]:
    cases: list[Case] = []
    for page, all_blocks in BLOCKS.items():
        blocks = [block for block in all_blocks if block.runnable]
        if page in WHOLE_PAGES:
            cases.append(Case(page, tuple(blocks), WHOLE_PAGES[page]))
            continue
        grouped = [b for key in GROUPS.get(page, ()) for b in _blocks_with(key, blocks)]
        if grouped:
            cases.append(Case(page, tuple(sorted(set(grouped), key=lambda b: b.index))))
        session = []
        for block in blocks:
            if block in grouped:
                continue
            alone = block.kind == "shell" or block.guarded or any(key in block.code for key in ALONE)
            if alone:
                cases.append(Case(page, (block,)))
            else:
                session.append(block)
        if session:
            cases.append(Case(page, tuple(session)))
    # A whole page first: it is the longest test, and pytest-xdist should not leave it for last.
    return sorted(cases, key=lambda c: (c.page not in WHOLE_PAGES, PAGES.index(c.page), c.blocks[0].index))


CASES = _cases()


def _params():
    for case in CASES:
        marks = []
        for marker in case.markers():
            marks.append(getattr(pytest.mark, marker))
            if importlib.util.find_spec(MODULES[marker]) is None:
                marks.append(pytest.mark.skip(reason=NEEDS[marker]))
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="session")
def _default_catalog(tmp_path_factory) -> None:
    """The default catalog in the session's cache before any snippet runs, built once: with
    pytest-xdist the first worker here builds it (half a minute of CPU) and the others copy it."""
    import fcntl

    from fiq_gym.default_catalog import default_catalog_path, load_default_catalog

    path = default_catalog_path()
    if "PYTEST_XDIST_WORKER" not in os.environ or path.exists():
        load_default_catalog(progress=False)
        return
    shared = tmp_path_factory.getbasetemp().parent / "docs-default-catalog"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        built = shared / "built"
        if built.exists():
            copy = path.with_name(path.name + "-copy")
            shutil.copytree(built.read_text(), copy)
            copy.rename(path)
        else:
            load_default_catalog(progress=False)
            built.write_text(str(path))


@pytest.fixture(scope="session")
def _stand_ins(small_catalog_path, tiny_lm) -> dict[str, str]:
    """Paths the substitutions put in (``<<name>>``)."""
    from fiq_gym.play.agent import DEFAULT_AGENT_DIR

    return {
        "play_agent": str(DEFAULT_AGENT_DIR),
        "tiny_lm": str(tiny_lm),
        "small_catalog": str(small_catalog_path),
    }


@pytest.fixture
def _temporary_directory():
    """TMPDIR of the snippets (`fiq-gym play` leaves its pictures there), short enough for the
    Unix sockets Ray puts under it (at most 107 bytes), and removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fiq-docs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _environment(temporary: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # fiq-gym, python and pip of this environment
    return {
        **os.environ,  # FIQ_GYM_CACHE, HF_HUB_OFFLINE, SB3_LOGDIR (tests/conftest.py)
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "TMPDIR": str(temporary),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.mark.parametrize("case", list(_params()))
def test_the_snippets_run(case: Case, _stand_ins, tmp_path, _temporary_directory, request):
    if case.page not in WHOLE_PAGES:
        # docs/real_data.md works on catalogs of its own: it need not wait for the default one
        # (a snippet that wanted it would build it, just more slowly)
        request.getfixturevalue("_default_catalog")
    steps = case.steps(_stand_ins)
    for name, source in case.files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            (tmp_path / name).symlink_to(source)
        else:
            (tmp_path / name).write_text(source)
    stdin = "".join(step.pop("stdin", "") for step in steps if step["kind"] == "python")
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    runner = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("docs_runner.py")), "steps.json"],
        cwd=tmp_path,
        env=_environment(_temporary_directory),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = runner.communicate(stdin, timeout=sum(s["timeout"] for s in steps) + 60)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)
        output, _ = runner.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)  # and whatever the snippets left in its session
    timings = re.findall(r"^@@ done (\S+) (\S+)$", output, re.M)
    print(output)  # shown with -rP, and on failure
    print("\n".join(f"{label}: {seconds} s" for label, seconds in timings))
    started = re.findall(r"^@@ start (\S+)$", output, re.M)
    if runner.returncode != 0 or len(timings) != len(steps):
        where = started[-1] if started else "(the runner's start)"
        step = next((s for s in steps if s["label"] == where), None)
        shown = f"\n--- the snippet as run ---\n{step['code']}" if step else ""
        pytest.fail(f"the snippet at {where} failed{shown}\n--- output ---\n{output[-6000:]}", pytrace=False)


# --- the tables stay true -----------------------------------------------------------------------


def test_the_tables_match_the_docs():
    """Every entry names a snippet that exists, so none can go stale unnoticed."""
    problems = []
    executed = [s for block in ALL_BLOCKS for s in block.snippets if not _skipped(s)]
    for pattern, _replacement, why in SUBSTITUTIONS:
        if not any(re.search(pattern, s, re.M) for s in executed):
            problems.append(f"SUBSTITUTIONS: {pattern!r} ({why}) matches no snippet that runs")
    all_snippets = [s for block in ALL_BLOCKS for s in block.snippets]
    for key in SKIP:
        found = sum(key in s for s in all_snippets)
        if found != 1:
            problems.append(f"SKIP: {key!r} matches {found} snippets, not one")
    for table in (ALONE, FILES, ENV):
        for key in table:
            if len(_blocks_with(key)) != 1:
                problems.append(f"{key!r} names {len(_blocks_with(key))} blocks, not one")
    for page, keys in GROUPS.items():
        for key in keys:
            if len(_blocks_with(key, BLOCKS[page])) != 1:
                problems.append(f"GROUPS[{page!r}]: {key!r} names no single block")
    for pattern in STDIN:
        if not any(re.search(pattern, s, re.M) for s in executed):
            problems.append(f"STDIN: {pattern!r} matches no snippet that runs")
    for page in WHOLE_PAGES:
        if not BLOCKS.get(page):
            problems.append(f"WHOLE_PAGES: {page} has no blocks")
    assert not problems, "\n".join(problems)


def test_every_runnable_block_is_in_a_test():
    ran = {block for case in CASES for block in case.blocks}
    assert not [block.label for block in ALL_BLOCKS if block.runnable and block not in ran]


def test_install_commands_pin_their_constraints():
    """The install steps are not run; an install of fiq-gym from the clone must name the
    constraints file its extras are tested with (the rllib extra has its own)."""
    problems = []
    for block in ALL_BLOCKS:
        if block.kind != "shell":
            continue
        for command in block.commands:
            for step in install_steps(command.text)[0]:
                match = re.match(r"""pip install (-e )?["']?\.(\[(?P<extras>[\w,-]+)\])?["']?(\s|$)""", step)
                if not match:
                    continue
                wanted = "constraints-rllib.txt" if "rllib" in (match["extras"] or "") else "constraints.txt"
                if f"-c {wanted}" not in step:
                    problems.append(f"{block.page}:{command.line}: {step!r} lacks -c {wanted}")
                assert (ROOT / wanted).is_file()
    assert not problems, "\n".join(problems)
