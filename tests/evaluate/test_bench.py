"""``braincam bench allocator``: the two settings in fresh processes, the kept one faulting
fewer pages in."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from braincam.allocator import TUNABLES

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_bench_allocator_compares_fresh_processes():
    env = {k: v for k, v in os.environ.items() if k not in TUNABLES and k != "LD_PRELOAD"}
    env["OMP_NUM_THREADS"] = "1"  # both processes take the caller's thread count
    # 32 images at 224 px: resnet10t's first map (39 MB) lies above glibc's mmap threshold.
    # Four timed batches: the default faults in about 135 000 pages a batch, while the kept
    # heap's growth after the warm-up batch is bounded (0-63 000 pages, in 24.5 MB steps), so
    # two batches left the 1/5 bound within reach of that growth
    out = subprocess.run(
        [sys.executable, "-m", "braincam", "bench", "allocator", "--arch", "resnet10t",
         "--batch", "32", "--batches", "4", "--repeats", "1"],
        env=env, capture_output=True, text=True, check=True, timeout=300).stdout
    result = json.loads(out)
    assert result["kept"] is True and result["repeats"] == 1 and result["threads"] == 1
    assert result["kept_minor_faults"] < result["default_minor_faults"] / 5
    assert result["ratio"] == pytest.approx(result["kept_img_s"] / result["default_img_s"],
                                            rel=0.01)


def test_bench_allocator_rejects_a_user_allocator():
    env = {**os.environ, "MALLOC_MMAP_MAX_": "65536"}
    result = subprocess.run([sys.executable, "-m", "braincam", "bench", "allocator"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: braincam keeps the allocator's defaults here")
