"""Tiny foreign models for the spec tests: a torch module file, a state dict, a TorchScript
file and an ONNX graph built with onnx.helper (NHWC in, softmax out), all 16 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SIZE = 16
MODULE_SOURCE = '''
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, classes=2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x).relu()).flatten(1))


def three():
    return TinyNet(3)
'''


def write_torch_model(folder: Path, seed: int = 0) -> None:
    """``folder/tiny.py`` (TinyNet, and ``three()``, a 3-class variant) and
    ``folder/tiny.pth`` (a seeded TinyNet state dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.py").write_text(MODULE_SOURCE)
    torch.manual_seed(seed)
    net = import_file(folder / "tiny.py").TinyNet().eval()
    torch.save(net.state_dict(), folder / "tiny.pth")
    example = torch.zeros(1, 3, SIZE, SIZE)
    torch.jit.save(torch.jit.trace(net, example), str(folder / "tiny.pt"))


def import_file(path: Path):
    """The module in ``path``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"foreign_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def write_onnx_model(path: Path, seed: int = 0, batch: int | str = "N",
                     gain: float = 1.0) -> None:
    """NHWC [batch, 16, 16, 3] -> Transpose -> Conv(4, 3x3) -> Relu -> GlobalAveragePool ->
    Flatten -> Gemm(2) -> Softmax; ``gain`` scales the Gemm's weights (large: confident)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.1, 4).astype(np.float32),
        "fc_w": (gain * rng.normal(0, 1.0, (2, 4))).astype(np.float32),
        "fc_b": np.zeros(2, np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 2])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def torch_spec(**overrides) -> dict:
    """A spec document for ``tiny.pth``/``tiny.py`` (fields overridable)."""
    doc = {"format": "torch", "path": "tiny.pth", "module": "tiny.py:TinyNet",
           "input": {"size": [SIZE, SIZE], "mean": 0.5, "std": 0.5},
           "output": "logits", "classes": ["no", "yes"]}
    return doc | overrides


def onnx_spec(**overrides) -> dict:
    doc = {"format": "onnx", "path": "tiny.onnx",
           "input": {"size": [SIZE, SIZE], "layout": "NHWC"},
           "output": "probabilities", "classes": ["no_tumor", "tumor"]}
    return doc | overrides


def write_spec(folder: Path, doc: dict, name: str = "spec.yaml") -> Path:
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump(doc))
    return path
