"""Does a segmenter still mark a tumour's bed because of how the bed is filled?

Removed copies (tumour inpainted) and control copies (the same shape inpainted in tumour-free
brain) of a segment run's Figshare rows, made with several fills, scored by that segmenter:
  removed_any       share of removed copies with any predicted tumour pixel
  removed_in_bed    share with >= 10 predicted pixels in the filled region
  control_marked    share of control copies with >= 10 predicted pixels in the filled region
  control_dice      Dice of the prediction on the control copy against the true mask

Fills: OpenCV Telea (braincam's, dilated 2, 5 or 8 px); a reflection of the other hemisphere
(axis chosen by intensity correlation over rotations and shifts, blended by cv2.seamlessClone;
Telea where the reflected region meets the tumour, leaves the brain, or the correlation is below
0.4, as on sagittal slices); and, when opencv-contrib's xphoto is importable, its FSR and shift-map
inpainting. Usage: python inpaint_fill.py SEGMENT_RUN val|test
"""

import sys

import cv2
import numpy as np
import pandas as pd
import yaml

from braincam.data.mask import brain_region
from braincam.data.preprocess import PreprocessConfig
from braincam.data.records import load_dataset
from braincam.data.regions import control_region, dilate, inpaint
from braincam.data.segmentation import load_segmentation_data
from braincam.evaluate.segmentation import dice
from braincam.models.segment import load_segmenter


def reflection(theta_deg: float, cx: float, cy: float) -> np.ndarray:
    t = np.deg2rad(theta_deg)
    u = np.array([np.sin(t), np.cos(t)])
    r = 2 * np.outer(u, u) - np.eye(2)
    p = np.array([cx, cy])
    return np.hstack([r, (p - r @ p)[:, None]]).astype(np.float32)


def symmetry(image, head, exclude):
    ys, xs = np.nonzero(head)
    img = image.astype(np.float32)
    best, best_m = -2.0, None
    for theta in np.arange(-12, 12.1, 3):
        for shift in np.arange(-6, 6.1, 1.5):
            m = reflection(theta, xs.mean() + shift, ys.mean())
            mir = cv2.warpAffine(img, m, img.shape[::-1])
            ex = cv2.warpAffine(exclude.astype(np.uint8), m, img.shape[::-1],
                                flags=cv2.INTER_NEAREST) > 0
            sel = head & ~exclude & ~ex
            r = np.corrcoef(img[sel], mir[sel])[0, 1]
            if r > best:
                best, best_m = r, m
    return best_m, best


def mirror(x, t, head, brain, avoid, px=2):
    grown = dilate(t, px)
    m, r = symmetry(x, head, grown | avoid)
    source = cv2.warpAffine(grown.astype(np.uint8), m, x.shape[::-1],
                            flags=cv2.INTER_NEAREST) > 0
    ys, xs = np.nonzero(grown)
    y0, y1, x0, x1 = ys.min() - 4, ys.max() + 5, xs.min() - 4, xs.max() + 5
    if (r < 0.4 or (source & dilate(avoid, px)).any() or not brain[source].all()
            or y0 < 1 or x0 < 1 or y1 >= x.shape[0] or x1 >= x.shape[1]):
        return inpaint(x, t, px)
    src = cv2.cvtColor(cv2.warpAffine(x, m, x.shape[::-1])[y0:y1, x0:x1], cv2.COLOR_GRAY2BGR)
    center = (int(xs.min() + (xs.max() - xs.min() + 1) // 2),
              int(ys.min() + (ys.max() - ys.min() + 1) // 2))  # OpenCV centres the mask's box
    out = cv2.seamlessClone(src, cv2.cvtColor(x, cv2.COLOR_GRAY2BGR),
                            (grown[y0:y1, x0:x1] * 255).astype(np.uint8), center,
                            cv2.NORMAL_CLONE)[:, :, 0]
    return np.where(grown, out, x).astype(np.uint8)


def xphoto(algo, px=2):
    def fill(x, t, head, brain, avoid):
        grown, out = dilate(t, px), np.zeros_like(x)
        cv2.xphoto.inpaint(x, (~grown).astype(np.uint8) * 255, out, algo)
        return np.where(grown, out, x).astype(np.uint8)
    return fill


FILLS = {f"telea, dilate {px}": (px, lambda x, t, h, b, a, px=px: inpaint(x, t, px))
         for px in (2, 5, 8)}
FILLS["reflected hemisphere"] = (2, mirror)
if hasattr(cv2, "xphoto"):
    FILLS["xphoto FSR fast"] = (2, xphoto(cv2.xphoto.INPAINT_FSR_FAST))
    FILLS["xphoto shift-map"] = (2, xphoto(cv2.xphoto.INPAINT_SHIFTMAP))


def main(run: str, which: str) -> None:
    split = pd.read_csv(f"{run}/split.csv")
    rows = set(split.loc[split["split"] == which, "path"])
    roots = yaml.safe_load(open(f"{run}/config.yaml"))["data"]
    root = next(r for r in roots if "figshare" in r)
    recs = [r for r in load_dataset([root]).records if str(r.path) in rows]
    data = load_segmentation_data(recs, PreprocessConfig(size=160))
    seg = load_segmenter(run, "cpu")
    images, masks, heads = data.images.numpy(), data.masks.numpy(), data.heads.numpy()
    for name, (px, fill) in FILLS.items():
        removed, control, src, regions = [], [], [], []
        for i in np.flatnonzero(masks.reshape(len(masks), -1).any(1)):
            brain = brain_region(heads[i])
            region = control_region(masks[i], brain, np.random.default_rng([0, i]), 2 * 8 + 6)
            if region is None:
                continue
            src.append(i)
            regions.append(dilate(region, px))
            removed.append(fill(images[i], masks[i], heads[i], brain, np.zeros_like(masks[i])))
            control.append(fill(images[i], region, heads[i], brain, masks[i]))
        tumour = masks[src]
        bed = np.stack([dilate(t, px) for t in tumour])
        pr = seg.predict(np.stack(removed)) >= 0.5
        pc = seg.predict(np.stack(control)) >= 0.5
        control_dice = np.mean([dice(p, t) for p, t in zip(pc, tumour, strict=True)])
        print(f"{name:24s} n={len(src)} removed_any={pr.any((1, 2)).mean():.3f} "
              f"removed_in_bed={((pr & bed).sum((1, 2)) >= 10).mean():.3f} "
              f"control_marked={((pc & np.stack(regions)).sum((1, 2)) >= 10).mean():.3f} "
              f"control_dice={control_dice:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
