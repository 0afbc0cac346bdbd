"""Images that are not brain MRI, for the out-of-distribution warning (docs/results.md).

    python docs/benchmarks/non_mri_images.py OUT

writes ``OUT/<kind>_<k>.png`` (grey, 256 px, seeded): the photographs of scikit-image's
``skimage.data`` that ship with it (``photo``; the ones it would download are left out, and so
are ``brain`` and ``shepp_logan_phantom``, which are head images), and ten each of uniform
noise, smoothed noise, linear gradients, checkerboards, flat grey images and bright discs on
black (``noise``, ``smooth``, ``ramp``, ``checker``, ``flat``, ``disc``). Then
``braincam predict RUN OUT --out DIR`` and count the rows of ``DIR/predictions.csv`` whose
``warnings`` start with "unlike the training data".
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SIDE = 256
PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel",
          "horse", "moon", "page", "rocket", "text", "clock", "brick", "logo", "hubble_deep_field")


def photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - an image that would need a download is left out
            continue
        if image.ndim == 3:
            image = cv2.cvtColor(image[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
        image = image.astype(np.float64)
        image = (image - image.min()) / max(np.ptp(image), 1e-9) * 255
        out.append(cv2.resize(image.astype(np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_AREA))
    return out


def synthetic(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    y, x = np.mgrid[:SIDE, :SIDE].astype(np.float64)
    kinds: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("noise", "smooth", "ramp", "checker", "flat", "disc")}
    for _ in range(10):
        kinds["noise"].append(rng.random((SIDE, SIDE)) * 255)
        sigma = rng.uniform(2, 12)
        smooth = cv2.GaussianBlur(rng.random((SIDE, SIDE)), (0, 0), sigma)
        kinds["smooth"].append((smooth - smooth.min()) / np.ptp(smooth) * 255)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * x + np.sin(angle) * y
        kinds["ramp"].append((ramp - ramp.min()) / np.ptp(ramp) * 255)
        period = int(rng.integers(8, 64))
        kinds["checker"].append(((x // period + y // period) % 2) * 255)
        kinds["flat"].append(np.full((SIDE, SIDE), rng.uniform(0, 255)))
        radius = rng.uniform(0.25, 0.45) * SIDE
        kinds["disc"].append((np.hypot(x - SIDE / 2, y - SIDE / 2) < radius)
                             * rng.uniform(120, 255))
    return kinds


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    images = {"photo": photos(), **synthetic(np.random.default_rng(0))}
    for kind, items in images.items():
        for k, image in enumerate(items):
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(out / f"{kind}_{k}.png")
    print(", ".join(f"{kind} {len(items)}" for kind, items in images.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
