"""JTT-style upweighting of phase 1's training errors (braincam.train.reweight)."""

from __future__ import annotations

import torch

from braincam.train.reweight import task_errors, upsampled_pool


def test_errors_count_the_task_class_not_the_subtype():
    # outputs: glioma, meningioma, no_tumor -> tumour, tumour, no tumour
    task_of = torch.tensor([1, 1, 0])
    logits = torch.tensor([[0.0, 2.0, 0.0],   # glioma called meningioma: right for the task
                           [0.0, 0.0, 3.0],   # glioma called no tumour: wrong
                           [4.0, 0.0, 0.0],   # no tumour called glioma: wrong
                           [0.0, 0.0, 1.0]])  # no tumour: right
    labels = torch.tensor([0, 0, 2, 2])
    assert task_errors(logits, labels, task_of).tolist() == [False, True, True, False]


def test_pool_repeats_each_error_factor_times_in_all():
    pool = upsampled_pool(5, torch.tensor([False, True, False, False, True]), 3)
    assert torch.bincount(pool, minlength=5).tolist() == [1, 3, 1, 1, 3]
    assert upsampled_pool(3, torch.tensor([True, False, False]), 1).tolist() == [0, 1, 2]
