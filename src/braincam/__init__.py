"""braincam: train brain-MRI tumour classifiers, explain them, audit what they look at.

``braincam.load(RUN)`` (:func:`braincam.api.load`) is imported on first use, so that
``braincam --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    """``braincam.load``, and any submodule by attribute (``braincam.allocator``), imported
    on first use."""
    if name == "load":
        from braincam.api import load

        return load
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'braincam' has no attribute {name!r}")
