"""The device's mixed precision, and benchmark timing helpers: warm-ups, interleaved rounds,
and the median of ratios."""

from __future__ import annotations

import pytest
import torch

from braincam import device as device_module
from braincam.device import amp_dtype, autocast, grad_scaler, interleaved, median_ratio

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_autocast_is_bf16_only_when_asked_for_and_native(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_bf16", lambda: native)
    assert amp_dtype(CPU) is None  # inference and explanations keep fp32
    assert amp_dtype(CPU, cpu=True) == (torch.bfloat16 if native else None)
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.rand(1, 1, 8, 8)
    with autocast(CPU, cpu=True):
        trained = conv(x).dtype
    with autocast(CPU, enabled=False, cpu=True):
        off = conv(x).dtype
    with autocast(CPU):
        plain = conv(x).dtype
    assert trained == (torch.bfloat16 if native else torch.float32)
    assert off == plain == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, None])
def test_loss_scaling_only_where_autocast_computes_in_fp16(monkeypatch, dtype):
    monkeypatch.setattr(device_module, "amp_dtype", lambda device, cpu=False: dtype)
    assert grad_scaler(CPU).is_enabled() == (dtype == torch.float16)
    assert not grad_scaler(CPU, enabled=False).is_enabled()  # --no-amp: fp32, nothing to scale


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


def test_an_unknown_device_names_the_choices_in_one_line():
    from braincam.device import device_of
    from braincam.errors import BraincamError

    with pytest.raises(BraincamError, match="unknown device 'foo'; use auto, cpu, cuda or cuda:N"):
        device_of("foo")
