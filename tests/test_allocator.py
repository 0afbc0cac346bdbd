"""Freed host memory kept for reuse: CPU batches stop faulting in fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import braincam.cli
from braincam.allocator import TUNABLES, keep_freed_memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# 64 MB arrays: above glibc's largest mmap threshold (32 MiB), so by default each one is a
# fresh mapping whose pages fault in when written
FAULTS = """
import resource, sys
import numpy as np
from braincam.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "1" else False
np.ones(8_000_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(8_000_000)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def clean_env() -> dict[str, str]:
    """No allocator tuning, and 4 KiB pages: numpy would ask for huge pages, 512 times fewer
    faults."""
    env = {k: v for k, v in os.environ.items()
           if k not in TUNABLES and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    return env | {"NUMPY_MADVISE_HUGEPAGE": "0"}


def faults(keep: bool) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, "1" if keep else "0"], env=clean_env(),
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_kept_memory_is_reused_without_page_faults():
    default_kept, default = faults(False)
    kept_flag, kept = faults(True)
    assert (default_kept, kept_flag) == ("False", "True")
    assert default > 100_000  # ten 64 MB arrays of 4 KiB pages: 156 000 fresh pages
    assert kept < default / 20


@pytest.mark.parametrize("name,value", [("MALLOC_MMAP_MAX_", "65536"),
                                        ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2"),
                                        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_an_allocator_the_user_chose_is_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert keep_freed_memory() is False


def test_the_command_line_applies_it(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(braincam.cli, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["braincam", "--help"])
    with pytest.raises(SystemExit) as exit_:
        braincam.cli.main()
    assert exit_.value.code == 0 and calls == [1]
    assert "audit" in capsys.readouterr().out
