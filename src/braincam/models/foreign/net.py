"""Adapters that make a foreign network look like a braincam model.

:class:`ForeignNet` takes braincam's model input (grey replicated to 3 channels, ImageNet
normalised: :func:`braincam.models.to_model_input`), recovers the grey values
``g = x_0 * std_0 + mean_0`` in [0, 1] and applies the spec's own input transform
``(g * 255 / scale - mean) / std``, replicated to the spec's channels, in its layout; the
network's output becomes class logits (``log p`` for probabilities; ``[log(1 - p), log p]``
for a single sigmoid column), so ``softmax`` of the result is the model's own probability.
A binary view of a multi-class model adds :class:`~braincam.models.build.MergeSubtypes`
(``y_c = logsumexp_{k in c} z_k``), as braincam's own binary models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from braincam.models.build import MergeSubtypes
from braincam.models.foreign.spec import InputSpec
from braincam.models.normalize import IMAGENET_MEAN, IMAGENET_STD

LOG_EPS = 1e-12  # probabilities are clamped here before the log


class OnnxRuntimeNet(nn.Module):
    """An ONNX graph run by onnxruntime as a (gradient-free) module: numpy in, tensor out on the
    input's device. Threads follow torch's (``OMP_NUM_THREADS``); a graph exported with a
    fixed batch size gets its batches in chunks of that size, the last one padded with copies
    of its last image whose outputs are dropped."""

    def __init__(self, path: str) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.runner = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.runner.get_inputs()[0].name
        batch = self.input_shape[0] if self.input_shape else None
        self.chunk = batch if isinstance(batch, int) and batch > 0 else None

    def __deepcopy__(self, memo: dict) -> OnnxRuntimeNet:
        """Copies share the runner: it holds no parameter a copy could change (the sanity
        check deep-copies models before randomising them)."""
        return self

    @property
    def input_shape(self) -> list[int | str | None]:
        return list(self.runner.get_inputs()[0].shape)

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().float().cpu().contiguous().numpy()
        step = self.chunk or max(len(array), 1)
        outs = []
        for i in range(0, len(array), step):
            part = array[i:i + step]
            if len(part) < step:  # a fixed-batch graph's last chunk: padded, then cut back
                part = np.concatenate([part, np.repeat(part[-1:], step - len(part), axis=0)])
            outs.append(self.runner.run(None, {self.input_name: part})[0][:len(array) - i])
        return torch.from_numpy(np.concatenate(outs).astype(np.float32)).to(x.device)


class ForeignNet(nn.Module):
    """braincam input -> the spec's input -> ``net`` -> class logits (module docstring).

    ``default_layer`` is the CAM layer (``net.<target_layer>``), read by
    :func:`braincam.explain.base.default_layer`.
    """

    def __init__(self, net: nn.Module, spec_input: InputSpec, output: str,
                 groups: Sequence[int] | None = None, default_layer: str | None = None) -> None:
        super().__init__()
        self.net = net
        self.spec_input = spec_input
        self.output = output
        self.merge = MergeSubtypes(groups) if groups is not None else None
        self.default_layer = default_layer
        channels = spec_input.channels
        mean = spec_input.mean or (0.0,) * channels
        std = spec_input.std or (1.0,) * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.from_native(self.to_native(x))

    def to_native(self, x: Tensor) -> Tensor:
        """braincam input (N, 3, S, S) -> the network's input (its channels and layout)."""
        grey = x[:, :1].float() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        values = grey * (255.0 / self.spec_input.scale)
        values = values.expand(-1, self.spec_input.channels, -1, -1)
        native = (values - self.mean) / self.std
        if self.spec_input.layout == "NHWC":
            native = native.permute(0, 2, 3, 1)
        return native.contiguous()

    def from_native(self, native: Tensor) -> Tensor:
        """The network on its own input -> class logits."""
        return self.logits(self.net(native))

    def logits(self, out: Tensor) -> Tensor:
        """The network's output as logits (module docstring), merged for a binary view."""
        out = out.float().reshape(len(out), -1)  # [N] (one sigmoid per image) as [N, 1]
        if self.output == "probabilities" or (self.output == "sigmoid" and out.shape[1] > 1):
            out = out.clamp_min(LOG_EPS).log()
        elif self.output == "sigmoid":
            p = out.clamp(LOG_EPS, 1 - LOG_EPS)
            out = torch.cat([(1 - p).log(), p.log()], dim=1)
        return self.merge(out) if self.merge is not None else out
