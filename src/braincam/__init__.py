"""braincam: train brain-MRI tumour classifiers, explain them, audit what they look at.

``braincam.load(RUN)`` (:func:`braincam.api.load`) is imported on first use, so that
``braincam --help`` stays fast.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "load":
        from braincam.api import load

        return load
    raise AttributeError(f"module 'braincam' has no attribute {name!r}")
