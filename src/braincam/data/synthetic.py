"""2D head phantoms with optional planted shortcuts, for tests and demos.

A phantom is an axial-slice cartoon: a bright elliptical scalp/skull ring, a
textured brain (smooth noise), two dark ventricles and, optionally, a
ring-enhancing tumour (bright rim, necrotic core, oedema halo) at a random place
inside the brain. Tissue intensities follow three MRI-like contrasts
(:data:`TISSUE`): ``t1`` (dark CSF, faint tumour), ``t1ce`` (contrast-enhanced:
bright tumour rim) and ``t2`` (bright CSF, bright core and oedema).

:class:`PhantomSpec` describes a two-class (``tumor``/``no_tumor``) dataset in
which one class may carry a planted *shortcut*, a cue that predicts the class
without the tumour:

========== ==================================================================
shortcut   what the ``shortcut_class`` images get
========== ==================================================================
contrast   another contrast: the first of t2, t1, t1ce not in ``contrasts``
size       another image side: ``round(size * SIZE_FACTOR)`` (128 -> 160 px)
brightness ``+BRIGHTNESS_OFFSET`` grey levels on every head pixel
marker     a white square in the top-left corner, side ``MARKER_FRACTION``
           (12 %) of the image side, always outside the head
duplicates ``DUPLICATE_FRACTION`` of its test images are copies of its train
           images: even ones byte-identical, odd ones re-encoded (a JPEG
           round trip at quality 90, stored as PNG: pixels differ slightly)
========== ==================================================================

Everything is deterministic from ``spec.seed``: image ``i`` of a class and split
draws from its own generator seeded with ``(seed, split, class, i)``, so
changing ``n_per_class`` keeps the first images unchanged.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from braincam.data.records import Box
from braincam.labels import NO_TUMOR, TUMOR
from braincam.runs import atomic_write_bytes, atomic_write_text

CONTRASTS = ("t1", "t1ce", "t2")
SHORTCUTS = ("contrast", "size", "brightness", "marker", "duplicates")
CLASSES = (NO_TUMOR, TUMOR)
SPLIT_FOLDERS = {"train": "Training", "val": "Validation", "test": "Testing"}

SIZE_FACTOR = 1.25
BRIGHTNESS_OFFSET = 40
MARKER_FRACTION = 0.12
DUPLICATE_FRACTION = 0.4
TUMOUR_RADIUS = (0.08, 0.16)
MAX_TUMOUR_RADIUS = 0.3  # 1.5 x radius (the oedema halo) must fit in the smallest brain

# Mean intensity (0..1) per tissue and contrast. The enhancing rim matches the skull
# brightness and the necrotic core sits near CSF, so a tumour changes the intensity
# histogram little: a clean phantom set has no intensity shortcut.
TISSUE: dict[str, dict[str, float]] = {
    "t1": {"skull": 0.80, "brain": 0.45, "csf": 0.12, "rim": 0.40, "core": 0.18, "edema": 0.40},
    "t1ce": {"skull": 0.80, "brain": 0.45, "csf": 0.12, "rim": 0.80, "core": 0.20, "edema": 0.42},
    "t2": {"skull": 0.55, "brain": 0.38, "csf": 0.88, "rim": 0.55, "core": 0.80, "edema": 0.62},
}


@dataclass
class Phantom:
    """One rendered slice. ``box`` is the tumour's bounding box, YOLO-normalised."""

    image: np.ndarray  # uint8 (H, W)
    head_mask: np.ndarray  # bool (H, W)
    tumor_mask: np.ndarray | None  # bool (H, W), None without a tumour
    box: Box | None


@dataclass(frozen=True)
class PhantomSpec:
    """A two-class phantom dataset: ``n_per_class`` images per class and split."""

    n_per_class: int = 50
    size: int = 128
    contrasts: tuple[str, ...] = ("t1ce",)
    seed: int = 0
    shortcut: str | None = None
    shortcut_class: str = NO_TUMOR
    tumour_radius: tuple[float, float] = TUMOUR_RADIUS  # normalised, uniform in [lo, hi]

    def __post_init__(self) -> None:
        if self.shortcut is not None and self.shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {self.shortcut!r}; choose one of {SHORTCUTS}")
        if self.shortcut_class not in CLASSES:
            raise ValueError(f"shortcut_class must be one of {CLASSES}")
        unknown = set(self.contrasts) - set(CONTRASTS)
        if not self.contrasts or unknown:
            raise ValueError(f"contrasts must be a non-empty subset of {CONTRASTS}")
        if self.n_per_class < 1 or self.size < 32:
            raise ValueError("need n_per_class >= 1 and size >= 32")
        if not 0 < self.tumour_radius[0] <= self.tumour_radius[1] <= MAX_TUMOUR_RADIUS:
            raise ValueError(f"tumour_radius must be 0 < lo <= hi <= {MAX_TUMOUR_RADIUS}")


@dataclass
class PhantomItem:
    """A phantom with its place in the dataset (``name`` is the file stem)."""

    split: str
    label: str
    name: str
    phantom: Phantom


def render_phantom(
    rng: np.random.Generator, size: int = 128, contrast: str = "t1ce", tumor: bool = True,
    tumour_radius: tuple[float, float] = TUMOUR_RADIUS,
) -> Phantom:
    """Render one head phantom of ``size`` x ``size`` pixels.

    Geometry is in normalised coordinates ([-1, 1] across the image): head semi-axes
    0.60-0.82 (x) and 0.72-0.90 (y), rotation +-36 deg, centre offset +-0.07 (the head never
    reaches the corner marker), skull ring 8-12 % of the head radius; tumour radius uniform in
    ``tumour_radius`` (default 0.08-0.16; larger tumours let a stride-32 Grad-CAM of a small
    input resolve them) with a rim of 30-45 % of its radius, placed so the tumour and its
    oedema halo lie inside the brain. The image is ``gain * tissue * (1 + texture) + noise``,
    lightly blurred (sigma 0.6 px) before the noise, with gain 0.85-1.15, texture a smooth
    Gaussian field (sigma size/16 px) of 22-32 % amplitude and noise sigma 0.01-0.04. The
    strong texture keeps distinct phantoms apart under pHash: about 1 % have another phantom
    within 4 bits.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {CONTRASTS}")
    tissue = TISSUE[contrast]
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    theta = rng.uniform(-np.pi / 5, np.pi / 5)
    cx, cy = rng.uniform(-0.07, 0.07, size=2)
    a, b = rng.uniform(0.60, 0.82), rng.uniform(0.72, 0.90)
    u, v = _rotate(xx - cx, yy - cy, theta)
    head_r = np.hypot(u / a, v / b)  # 1 on the head outline
    skull_frac = 1 - rng.uniform(0.08, 0.12)
    head = head_r <= 1
    brain = head_r <= skull_frac

    image = np.zeros((size, size), dtype=np.float64)
    image[head] = tissue["skull"]
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 16)
    texture *= rng.uniform(0.22, 0.32) / max(texture.std(), 1e-9)
    image[brain] = tissue["brain"] * (1 + texture[brain])

    vent_w, vent_h = rng.uniform(0.05, 0.10), rng.uniform(0.14, 0.24)
    for side in (-1, 1):
        du, dv = side * rng.uniform(0.08, 0.13), rng.uniform(-0.1, 0.05)
        vu, vv = _rotate(u - du, v - dv, side * rng.uniform(0.1, 0.35))
        image[np.hypot(vu / vent_w, vv / vent_h) <= 1] = tissue["csf"]

    tumor_mask = None
    if tumor:
        radius = rng.uniform(*tumour_radius)
        tu, tv = _tumour_centre(rng, a * skull_frac, b * skull_frac, 1.5 * radius)
        dist = np.hypot(u - tu, v - tv)
        rim_inner = radius * (1 - rng.uniform(0.30, 0.45))
        image[dist <= 1.5 * radius] = tissue["edema"] * (1 + texture[dist <= 1.5 * radius])
        image[dist <= radius] = tissue["rim"]
        image[dist <= rim_inner] = tissue["core"]
        tumor_mask = dist <= radius

    image *= rng.uniform(0.85, 1.15)
    image = ndimage.gaussian_filter(image, sigma=0.6)
    image += rng.normal(0, rng.uniform(0.01, 0.04), size=image.shape)
    image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return Phantom(image, head, tumor_mask, _mask_box(tumor_mask))


def make_phantom_arrays(
    spec: PhantomSpec, splits: tuple[str, ...] = ("train", "test")
) -> list[PhantomItem]:
    """All phantoms of ``spec`` in memory, shortcut applied, in split/class/index order."""
    unknown = set(splits) - set(SPLIT_FOLDERS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {list(SPLIT_FOLDERS)}")
    items = []
    for split in splits:
        for label in CLASSES:
            items += [_make_item(spec, split, label, i) for i in range(spec.n_per_class)]
    if spec.shortcut == "duplicates" and "train" in splits:
        _plant_duplicates(items, spec)
    return items


def make_phantom_dataset(
    root: Path, spec: PhantomSpec, splits: tuple[str, ...] = ("train", "test")
) -> Path:
    """Write ``spec`` as an image-folder dataset and return ``root``.

    Layout: ``ROOT/{Training,Testing}/{tumor,no_tumor}/<name>.png`` (``val`` ->
    ``Validation``); ``ROOT/boxes.csv`` with ``file,label,cx,cy,w,h`` (file relative to
    ROOT, box YOLO-normalised) for every tumour image; the true tumour masks as
    ``ROOT/masks/<same relative path>`` (0/255 PNG).
    """
    root = Path(root)
    rows = []
    for item in make_phantom_arrays(spec, splits):
        rel = Path(SPLIT_FOLDERS[item.split]) / item.label / f"{item.name}.png"
        atomic_write_bytes(root / rel, _png_bytes(item.phantom.image))
        if item.phantom.tumor_mask is not None:
            mask = item.phantom.tumor_mask.astype(np.uint8) * 255
            atomic_write_bytes(root / "masks" / rel, _png_bytes(mask))
        box = item.phantom.box
        if box is not None:
            rows.append([rel.as_posix(), item.label] + [f"{x:.4f}" for x in
                                                         (box.cx, box.cy, box.w, box.h)])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "label", "cx", "cy", "w", "h"])
    writer.writerows(rows)
    atomic_write_text(root / "boxes.csv", buf.getvalue())
    return root


def shortcut_contrast(contrasts: tuple[str, ...]) -> str:
    """The contrast given to the shortcut class: first of t2, t1, t1ce not in ``contrasts``."""
    for contrast in ("t2", "t1", "t1ce"):
        if contrast not in contrasts:
            return contrast
    raise ValueError("the contrast shortcut needs at least one contrast left out of `contrasts`")


def _make_item(spec: PhantomSpec, split: str, label: str, index: int) -> PhantomItem:
    split_id = list(SPLIT_FOLDERS).index(split)
    rng = np.random.default_rng([spec.seed, split_id, CLASSES.index(label), index])
    planted = spec.shortcut is not None and label == spec.shortcut_class
    contrast = spec.contrasts[rng.integers(len(spec.contrasts))]
    size = spec.size
    if planted and spec.shortcut == "contrast":
        contrast = shortcut_contrast(spec.contrasts)
    if planted and spec.shortcut == "size":
        size = round(spec.size * SIZE_FACTOR)
    phantom = render_phantom(rng, size=size, contrast=contrast, tumor=label == TUMOR,
                             tumour_radius=spec.tumour_radius)
    if planted and spec.shortcut == "brightness":
        lifted = phantom.image.astype(np.int16) + BRIGHTNESS_OFFSET * phantom.head_mask
        phantom.image = np.clip(lifted, 0, 255).astype(np.uint8)
    if planted and spec.shortcut == "marker":
        side = max(1, round(size * MARKER_FRACTION))
        phantom.image[:side, :side] = 255
    return PhantomItem(split, label, f"{label}_{split}_{index:04d}", phantom)


def _plant_duplicates(items: list[PhantomItem], spec: PhantomSpec) -> None:
    """Replace the first ``DUPLICATE_FRACTION`` of the shortcut class's test images by
    copies of its train images (odd copies re-encoded). Names stay, so files differ."""
    train = [it for it in items if it.split == "train" and it.label == spec.shortcut_class]
    test = [it for it in items if it.split == "test" and it.label == spec.shortcut_class]
    n_dup = min(round(len(test) * DUPLICATE_FRACTION), len(train))
    for k in range(n_dup):
        src = train[k].phantom
        image = _jpeg_roundtrip(src.image) if k % 2 else src.image.copy()
        test[k].phantom = Phantom(image, src.head_mask.copy(),
                                  None if src.tumor_mask is None else src.tumor_mask.copy(),
                                  src.box)


def _rotate(x: np.ndarray, y: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return c * x + s * y, -s * x + c * y


def _tumour_centre(
    rng: np.random.Generator, a: float, b: float, reach: float
) -> tuple[float, float]:
    """A uniform point of the ellipse (semi-axes a, b) shrunk by ``reach`` (rejection)."""
    ia, ib = max(a - reach, 0.05), max(b - reach, 0.05)
    while True:
        p, q = rng.uniform(-1, 1, size=2)
        if p * p + q * q <= 1:
            return p * ia, q * ib


def _mask_box(mask: np.ndarray | None) -> Box | None:
    """YOLO box of a mask: centre and size as fractions of the image width/height."""
    if mask is None or not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return Box((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_roundtrip(image: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L")).copy()
