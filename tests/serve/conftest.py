"""A tiny binary run (untrained 64 px network, batch-norm statistics of phantoms), a phantom
PNG and the loaded model the app serves."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from braincam.data.preprocess import PreprocessConfig, preprocess
from braincam.data.synthetic import PhantomSpec, make_phantom_arrays
from braincam.models import build_model, save_checkpoint

SIZE = 64
ARCH = "test_efficientnet"


@pytest.fixture(scope="session")
def phantoms() -> list[np.ndarray]:
    items = make_phantom_arrays(PhantomSpec(n_per_class=3, size=SIZE), splits=("train",))
    return [item.phantom.image for item in items]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, phantoms) -> Path:
    run = tmp_path_factory.mktemp("serve-run")
    prep = PreprocessConfig(size=SIZE)
    images = np.stack([preprocess(p / 255.0, prep).image for p in phantoms])
    torch.manual_seed(0)
    model = build_model(ARCH, 2)
    with torch.no_grad():  # batch-norm statistics of these images, so outputs vary
        model.train()(torch.as_tensor(images).float()[:, None].expand(-1, 3, -1, -1) / 255)
    save_checkpoint(model.eval(), run / "model.safetensors", {
        "arch": ARCH, "classes": ["no_tumor", "tumor"], "task": "binary",
        "preprocess": asdict(prep), "dropout": 0.3})
    return run


@pytest.fixture(scope="session")
def png_file(tmp_path_factory, phantoms) -> Path:
    path = tmp_path_factory.mktemp("serve-png") / "phantom.png"
    Image.fromarray(phantoms[-1]).save(path)
    return path


@pytest.fixture(scope="session")
def model(tiny_run):
    return StandIn(tiny_run)


# --- private stand-in for braincam.api (load/predict/explain) until it lands -------------

@dataclass
class _Prediction:
    path: Path
    slice: int | None
    probabilities: dict[str, float]
    label: str
    warnings: list[str]
    image: np.ndarray

    def to_row(self) -> dict:
        return {"path": str(self.path), "slice": self.slice, **self.probabilities,
                "label": self.label}


@dataclass
class _Explanation:
    map: np.ndarray
    overlay: np.ndarray
    prediction: _Prediction


class StandIn:
    def __init__(self, run: Path) -> None:
        from braincam.models import load_checkpoint

        self.net, meta = load_checkpoint(run / "model.safetensors")
        self.classes = meta["classes"]
        self.prep = PreprocessConfig(**meta["preprocess"])

    def _images(self, inputs) -> np.ndarray:
        from braincam.data.imageio import read_grey

        return np.stack([preprocess(read_grey(p), self.prep).image for p in inputs])

    def predict(self, inputs) -> list[_Prediction]:
        return [e.prediction for e in self.explain(inputs)]

    def explain(self, inputs, method: str = "gradcam") -> list[_Explanation]:
        from braincam.explain import explain
        from braincam.explain.render import overlay

        images = self._images(inputs)
        result = explain(self.net, images, method=method).numpy()
        out = []
        for path, image, cam, probs in zip(inputs, images, result["maps"], result["probs"],
                                           strict=True):
            p = {c: float(v) for c, v in zip(self.classes, probs, strict=True)}
            pred = _Prediction(Path(path), None, p, max(p, key=p.get), [], image)
            out.append(_Explanation(cam, overlay(image, cam), pred))
        return out
