"""Shared fixtures: where the real datasets are, and small generated images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    return Path(os.environ.get("BRAINCAM_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    root = datasets_root()
    if not (root / "sartaj-brain-tumor-mri").is_dir():
        pytest.skip(f"real datasets not found under {root}")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test session gets its own preprocessing cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "braincam-cache"
    monkeypatch.setenv("BRAINCAM_CACHE", str(cache))
