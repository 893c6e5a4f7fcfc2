"""fiq-gym as a user of the published package gets it: the sdist carries the source tree, the
wheel built from that sdist carries what installed code needs, and the installed wheel runs
from another directory without writing into site-packages.

The wheel goes into a fresh virtual environment without pip. Its heavy dependencies (torch,
transformers, ...) are not installed again: a ``.pth`` file puts this test environment's
site-packages *behind* the new environment's own, so the wheel's ``fiq_gym`` is the one
imported, nothing is downloaded, and the whole test takes well under a minute. A plain ``.pth``
line adds a directory without processing the ``.pth`` files in it, so an editable install of
this checkout stays invisible there (asserted below).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from fiq_gym.utils.links import REPOSITORY, doc_url

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).resolve().parents[1]
#: what a build must not see: local state, never part of a release
_LOCAL = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "runs", "__pycache__", ".pytest_cache",
    ".hypothesis", ".ruff_cache", "fiq-gym-results",
)  # fmt: skip
#: runs a PEP 517 hook of the setuptools backend, as `python -m build --no-isolation` does
_BUILD = "import sys; from setuptools import build_meta; print(getattr(build_meta, 'build_' + sys.argv[2])(sys.argv[1]))"
#: the sdist files that must be there, whatever git says
_SDIST_REQUIRED = [
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "MANIFEST.in",
    "constraints.txt",
    "pyproject.toml",
    "benchmarks/README.md",
    "tests/conftest.py",
    "docs/rl.md",
    "docs/catalog.png",
]
#: from the unpacked sdist against the installed wheel: fast, and covering the source tree
#: (layers), the installed package's results folder (benchmarks) and plain library code
_SDIST_TESTS = [
    "tests/test_layers.py",
    "tests/test_metrics.py",
    "tests/test_comparison.py",
    "tests/test_benchmarks.py::test_results_go_to_the_checkout_or_the_working_directory_never_site_packages",
    "tests/test_benchmarks.py::test_publish_takes_an_optional_directory",
]
_ENV_STEP = """
import sys
from pathlib import Path

import gymnasium as gym

import fiq_gym

here = Path(fiq_gym.__file__).resolve()
assert here.is_relative_to(Path(sys.prefix).resolve()), f"fiq_gym imported from {here}, not the new venv"
# the shipped first stage and transformer shopper, on a catalog the shipped network featurised
for kwargs in ({}, {"action_mode": "shortlist"}, {"user": "transformer"}):
    env = gym.make("fiq_gym/FashionIQ-v3", catalog=sys.argv[1], **kwargs)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    print(kwargs, "rank", info["rank"], "caption", info["caption_text"])
"""


def _run(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{command} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
    }


def _source_files() -> list[str]:
    """The files a release is made of: git's list in a clone, else the tree as it is."""
    if (SOURCE / ".git").exists() and shutil.which("git"):
        listed = _run(["git", "ls-files"], SOURCE).splitlines()
        return [f for f in listed if not f.startswith(".") and (SOURCE / f).is_file()]
    return _SDIST_REQUIRED


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist from a copy of the source tree, then the wheel from the unpacked sdist."""
    work = tmp_path_factory.mktemp("packaging")
    tree = work / "tree"
    shutil.copytree(SOURCE, tree, ignore=_LOCAL)
    dist = work / "dist"
    sdist = dist / _run([sys.executable, "-c", _BUILD, dist, "sdist"], tree).strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    wheel = dist / _run([sys.executable, "-c", _BUILD, dist, "wheel"], unpacked).strip().splitlines()[-1]
    return {"work": work, "sdist": sdist, "unpacked": unpacked, "wheel": wheel}


def test_the_sdist_carries_the_source_tree(built):
    with tarfile.open(built["sdist"]) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    missing = sorted((set(_source_files()) | set(_SDIST_REQUIRED)) - names)
    assert not missing, f"the sdist lacks {missing}; add them to MANIFEST.in"


def test_the_wheel_carries_every_package_and_data_file_and_its_metadata(built):
    with zipfile.ZipFile(built["wheel"]) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    installed_as = {"fiq_gym": "fiq_gym", "envs": "fiq_gym/envs", "agents": "fiq_gym/agents"}
    installed_as["benchmarks"] = "fiq_gym/benchmarks"
    expected = set()
    for folder, package in installed_as.items():
        for path in (SOURCE / folder).rglob("*"):
            relative = path.relative_to(SOURCE / folder)
            if path.is_file() and "__pycache__" not in relative.parts and "results" not in relative.parts:
                expected.add(f"{package}/{relative.as_posix()}")
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}: list the package or its data in pyproject.toml"
    assert not [n for n in names if n.startswith("fiq_gym/benchmarks/results/")], "published tables stay out"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    assert metadata["License-Expression"] == "MIT"
    torch = [r for r in metadata.get_all("Requires-Dist") if r.startswith("torch")]
    assert torch and "==" not in torch[0] and "<" in torch[0], f"torch needs a tested range, not {torch}"
    urls = metadata.get_all("Project-URL")
    assert any(u.endswith(REPOSITORY) for u in urls), urls
    assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier")
    description = metadata.get_payload()
    relative = [part for part in description.split("](")[1:] if not part.startswith(("http", "#"))]
    assert not relative, f"links that do not render on an index page: {relative}"


def test_repository_links_name_files_of_the_source_tree():
    """Every link into the repository (README, pyproject URLs, messages) names a file that exists."""
    texts = [(SOURCE / name).read_text(encoding="utf-8") for name in ("README.md", "pyproject.toml")]
    texts += [doc_url("docs/rl.md")]
    for prefix in (
        f"{REPOSITORY}/blob/main/",
        f"{REPOSITORY}/tree/main/",
        "https://raw.githubusercontent.com/",
    ):
        for text in texts:
            for part in text.split(prefix)[1:]:
                target = part.split(")")[0].split('"')[0].split("#")[0].split()[0]
                if prefix.startswith("https://raw"):
                    target = target.split("/", 3)[3]  # owner/name/branch/path
                assert (SOURCE / target).exists(), f"{prefix}{target} names no file of the source tree"


def test_the_installed_wheel_runs_from_elsewhere_and_writes_nothing_into_site_packages(built, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_environment.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    # as a user runs it: bytecode writing on, so a stray .pyc in site-packages would show
    hidden = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env["FIQ_GYM_CACHE"] = str(tmp_path / "cache")
    # --ignore-installed: pip sees this environment's fiq-gym through the .pth file; leave it be
    install = ["-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", built["wheel"]]
    _run([python, *install], tmp_path, env)
    before = _files(venv)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fiq_gym = venv / "bin" / "fiq-gym"
    # a small catalog (the default one takes half a minute to render), featurised by the shipped network
    _run([fiq_gym, "catalog", "build", "--size", "300", "--out", "catalog"], elsewhere, env)
    demo = _run([fiq_gym, "demo", "--catalog", "catalog", "--turns", "2"], elsewhere, env)
    assert "turn 1:" in demo and "shopper:" in demo, demo
    print(_run([python, "-c", _ENV_STEP, "catalog"], elsewhere, env))
    help_text = _run([fiq_gym, "play", "--help"], elsewhere, env)
    assert doc_url("docs/play.md", "the-dialog-file") in help_text.replace("\n", "").replace(" ", "")
    small = ["--catalog-size", "200", "--batch", "8", "--batches", "2", "--repeats", "1"]
    _run([python, "-m", "fiq_gym.benchmarks.template_captions", *small], elsewhere, env)
    assert (elsewhere / "fiq-gym-results" / "template_captions.md").is_file()

    # the sdist's own tests against the installed wheel (-P: the sdist's fiq_gym/ is not imported)
    unpacked = built["unpacked"]
    where = _run([python, "-P", "-c", "import fiq_gym; print(fiq_gym.__file__)"], unpacked, env)
    assert Path(where.strip()).is_relative_to(venv), where
    tests = _run([python, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *_SDIST_TESTS], unpacked, env)
    assert " passed" in tests and "failed" not in tests, tests

    after = _files(venv)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"running the installed package wrote into its environment: {changed[:20]}"
