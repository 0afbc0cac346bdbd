"""One torch thread for every model-audit test (see ``one_thread``), and tiny CNNs trained
on 64-px phantoms once per session (5-10 s each on a quiet core)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # conftest loads before its folder is on the path
from model_audit_helpers import PhantomSet, phantoms, train  # noqa: E402

from braincam.device import torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def marker_model() -> nn.Module:
    return train(phantoms("marker", 64, "train"), epochs=28)  # converged: robust to the seed


@pytest.fixture(scope="session")
def clean_model() -> nn.Module:
    return train(phantoms(None, 64, "train"), epochs=16)


@pytest.fixture(scope="session")
def marker_test() -> PhantomSet:
    return phantoms("marker", 24, "test")


@pytest.fixture(scope="session")
def clean_test() -> PhantomSet:
    return phantoms(None, 24, "test")
