"""Grad-CAM of an ONNX model that ends with a softmax, explained through ``log p`` (the
softmax kept, as braincam did before it cut the graph there) and through the softmax's input
(what :func:`braincam.models.foreign.load.logits_before_softmax` gives): how many maps are
empty, how alike the two maps are, and that the probabilities are the same.

Usage (from the repository root; every 4th Sartaj Testing image):
    python docs/benchmarks/softmax_input_maps.py [SPEC] [SARTAJ]
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx2torch import convert

from braincam.data.imageio import read_grey
from braincam.data.preprocess import preprocess
from braincam.explain.api import explain
from braincam.models import to_model_input
from braincam.models.foreign import load_foreign, load_spec
from braincam.models.foreign.net import ForeignNet

spec = sys.argv[1] if len(sys.argv) > 1 else "docs/specs/mobilenetv2-onnx-4class.yaml"
data = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/datasets/sartaj-brain-tumor-mri")
model = load_foreign(load_spec(spec))
kept = ForeignNet(convert(onnx.load(str(model.spec.path))).eval(), model.spec.input,
                  "probabilities")
kept.default_layer = model.net.default_layer
paths = sorted((data / "Testing").rglob("*.jpg"))[::4]
config = model.preprocess_config()
images = np.stack([preprocess(read_grey(p), config).image for p in paths])
maps = {}
for name, net in (("log p (softmax kept)", kept), ("softmax input", model.net)):
    results = [explain(net.eval(), images[i:i + 16], None, "gradcam")
               for i in range(0, len(images), 16)]
    empty = sum(int((r.raw.flatten(1).amax(1) <= 0).sum()) for r in results)
    maps[name] = torch.cat([r.maps for r in results]).flatten(1).numpy()
    print(f"{name}: {empty} of {len(images)} Grad-CAM maps empty")
pairs = [(a, b) for a, b in zip(*maps.values(), strict=True) if a.std() > 0 and b.std() > 0]
r = [np.corrcoef(a, b)[0, 1] for a, b in pairs]
print(f"Pearson r of the two maps: median {np.median(r):.3f}, min {np.min(r):.3f} ({len(r)} pairs)")
with torch.no_grad():
    x = to_model_input(images)
    diff = (torch.softmax(kept(x), 1) - torch.softmax(model.net(x), 1)).abs().max()
print(f"max |p difference|: {float(diff):.1e}")
