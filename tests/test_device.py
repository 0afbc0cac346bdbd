"""Benchmark timing helpers: warm-ups, interleaved rounds, and the median of ratios."""

from __future__ import annotations

import pytest
import torch

from braincam.device import interleaved, median_ratio


def test_interleaved_warms_up_then_alternates_contenders():
    calls: list[str] = []
    contenders = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    seconds = interleaved(contenders, repeats=3, device=torch.device("cpu"), warmups=2, iters=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "a", "b", "b"] * 3
    assert {name: len(s) for name, s in seconds.items()} == {"a": 3, "b": 3}
    assert all(s >= 0 for secs in seconds.values() for s in secs)


def test_median_ratio_is_the_median_of_per_repeat_ratios():
    # ratios 2, 4, 1.5: median 2, where the ratio of the medians would be 3 / 2
    assert median_ratio([2.0, 8.0, 3.0], [1.0, 2.0, 2.0]) == pytest.approx(2.0)
    assert median_ratio([3.0, 9.0], [3.0, 3.0]) == pytest.approx(2.0)  # mean of 1 and 3
