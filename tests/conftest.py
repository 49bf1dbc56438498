"""Shared fixtures: the bundled sample, a private cache directory, the default backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: fail fast instead of retrying the network for a minute.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "fashion-mnist-sample"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Converted weights and features go to a per-session folder, not the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("nbtl-cache")
        mp.setenv("NBTL_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def backbone(private_cache):
    from recommender.models.backbones import load_backbone

    return load_backbone()


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server (tests/_pg.py); skips without one, fails under CI."""
    import _pg

    server = _pg.start()
    yield server
    server.stop()
