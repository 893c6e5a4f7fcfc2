"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["FIQ_GYM_CACHE"] = str(tmp_path_factory.mktemp("fiq-gym-cache"))


@pytest.fixture(scope="session")
def small_catalog_path(tmp_path_factory: pytest.TempPathFactory):
    """A 300-item synthetic catalog on disk (built once per test session)."""
    from fiq_gym.catalog.synthetic import build_synthetic_catalog

    path = tmp_path_factory.mktemp("catalogs") / "small"
    build_synthetic_catalog(path, size=300, seed=7, image_size=48, progress=False)
    return path


@pytest.fixture(scope="session")
def small_catalog(small_catalog_path):
    from fiq_gym.catalog.storage import open_catalog

    return open_catalog(small_catalog_path)
