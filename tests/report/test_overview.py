"""The Data section's sentences, from split.csv."""

from __future__ import annotations

import pandas as pd

from braincam.report.overview import _split_counts


def test_the_leak_free_sentence_says_what_a_guided_run_also_leaves_out():
    split = pd.DataFrame({"label": ["tumor", "no_tumor", "tumor"], "split": ["train", "test",
                          "test"], "source": "ph", "leak_free": [False, True, True]})
    _, plain = _split_counts(split)
    _, guided = _split_counts(split, guided=True)
    assert plain[-1] == ("2 of 2 test images have no exact or near duplicate in train (the "
                         "leak-free subset).")
    assert "also leaves out those the guiding segmenter learnt from" in guided[-1]
