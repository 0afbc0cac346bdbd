"""A tiny binary run trained on phantoms, a phantom PNG, and the loaded model the app
serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braincam.data.preprocess import PreprocessConfig, preprocess
from braincam.data.synthetic import PhantomSpec, make_phantom_arrays, make_phantom_dataset
from braincam.train import TrainConfig, train_run

SIZE = 64
ARCH = "test_efficientnet"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A binary run trained for two head epochs on phantoms (seconds on a CPU)."""
    base = tmp_path_factory.mktemp("serve-run")
    data = make_phantom_dataset(base / "phantoms", PhantomSpec(n_per_class=10, size=SIZE))
    config = TrainConfig(arch=ARCH, weights="none", head_epochs=2, finetune_epochs=0,
                         batch_size=8, preprocess=PreprocessConfig(size=SIZE), device="cpu")
    train_run([data], config, base / "run", progress=False)
    return base / "run"


@pytest.fixture(scope="session")
def png_file(tmp_path_factory) -> Path:
    """A phantom with a tumour, not one of the training images."""
    (item,) = [i for i in make_phantom_arrays(PhantomSpec(n_per_class=1, size=SIZE, seed=9),
                                              splits=("test",)) if i.label == "tumor"]
    path = tmp_path_factory.mktemp("serve-png") / "phantom.png"
    Image.fromarray(item.phantom.image).save(path)
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
