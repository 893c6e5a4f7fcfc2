"""Type-check the whole fiq_gym package with mypy, as CI does: ``python tools/typecheck.py``.

The distribution maps top-level folders into the package (``envs/`` installs as
``fiq_gym.envs``, see ``[tool.setuptools] package-dir`` in pyproject.toml), a layout mypy
cannot resolve from the source tree. This script builds a tree of symbolic links laid out as
the installed package, runs ``python -m mypy -p fiq_gym`` there with the repository's
pyproject.toml as its configuration, and rewrites the paths in mypy's output back to the
files in the repository (``fiq_gym/envs/vector.py`` -> ``envs/vector.py``), relative to the
current directory so that editors can open them. The scripts in ``tools/`` are checked in the
same run. Extra arguments go to mypy unchanged. The exit code is mypy's.

The link tree and mypy's cache live in a per-checkout folder under the system's temporary
directory (printed with ``--where``): outside the repository, so that nothing copies or packs
them, and kept between runs, so that later runs are incremental.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = "fiq_gym"
TOOLS = "tools"


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Folders of the link tree (``fiq_gym``, ``fiq_gym/envs``...) and the repository folder
    each stands for, from ``[tool.setuptools] package-dir``; ``tools`` stands for itself."""
    setuptools = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapped: dict[str, str] = setuptools.get("package-dir", {})
    dirs = {PACKAGE: REPOSITORY / mapped.get(PACKAGE, PACKAGE)}
    for name, folder in mapped.items():
        parent, _, child = name.rpartition(".")
        if parent == PACKAGE and child:
            dirs[f"{PACKAGE}/{child}"] = REPOSITORY / folder
    dirs[TOOLS] = REPOSITORY / TOOLS
    return dirs


def work_dir() -> Path:
    """This checkout's folder for the link tree and mypy's cache."""
    key = hashlib.sha256(str(REPOSITORY).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"fiq-gym-typecheck-{key}"


def _link(link: Path, target: Path) -> None:
    """Make link point at target, leaving a correct link alone (another run may be reading it)."""
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return
        link.unlink()
    link.symlink_to(target, target_is_directory=target.is_dir())


def build_tree(root: Path, dirs: dict[str, Path]) -> None:
    """root/fiq_gym laid out as installed (links to the core's entries and to the mapped
    folders), and root/tools a link to the scripts' folder."""
    package = root / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    wanted = {entry.name: entry for entry in dirs[PACKAGE].iterdir() if entry.name != "__pycache__"}
    wanted.update({name.split("/")[1]: folder for name, folder in dirs.items() if "/" in name})
    for stale in package.iterdir():
        if stale.name not in wanted and stale.is_symlink():
            stale.unlink()
    for name, target in wanted.items():
        _link(package / name, target)
    _link(root / TOOLS, dirs[TOOLS])


def tool_modules() -> list[str]:
    """The scripts in tools/, as modules of the link tree (a namespace package)."""
    return [f"{TOOLS}.{script.stem}" for script in sorted((REPOSITORY / TOOLS).glob("*.py"))]


def rewrite(text: str, dirs: dict[str, Path]) -> str:
    """mypy's output with each path in the link tree replaced by the repository file it
    stands for, relative to the current directory."""
    prefixes = "|".join(re.escape(f"{name}/") for name in sorted(dirs, key=len, reverse=True))
    path = re.compile(rf"(?<![\w./-])({prefixes})([\w./-]*\.pyi?)\b")

    def real(match: re.Match[str]) -> str:
        folder = dirs[match.group(1).rstrip("/")]
        return os.path.relpath(folder / match.group(2), Path.cwd())

    return path.sub(real, text)


def main(argv: list[str]) -> int:
    pyproject = REPOSITORY / "pyproject.toml"
    dirs = package_dirs(pyproject)
    root = work_dir()
    if argv == ["--where"]:
        print(root)
        return 0
    build_tree(root, dirs)
    modules = [arg for module in tool_modules() for arg in ("-m", module)]
    command = [sys.executable, "-m", "mypy", "--config-file", str(pyproject), "-p", PACKAGE, *modules, *argv]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    sys.stdout.write(rewrite(done.stdout, dirs))
    sys.stderr.write(rewrite(done.stderr, dirs))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
