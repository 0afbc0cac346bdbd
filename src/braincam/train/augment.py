"""MRI-suited augmentation on batches of tensors, on the tensors' device.

Geometry: a small random similarity transform per image (rotation, isotropic scale, shift)
and a horizontal flip (brains are roughly left-right symmetric; vertical flips and large
rotations would create anatomy that scanners never produce), applied with
``affine_grid``/``grid_sample`` (zeros outside: MRI background is black). The head mask (and
any further masks stacked with it, such as the tumour mask of ``--mask-reward``) is warped
with the same grid (nearest neighbour), so mask-aware losses stay aligned.

Zoomed views (``zoom_views`` > 0, off by default): with that probability an image is replaced
by a view zoomed in ``z`` times (``z`` uniform in ``zoom_view_range``) around a uniform place
that keeps the view inside the image (centre within ``1 - 1/z`` of the middle, in coordinates
running from -1 to 1), flipped and rotated like the others. Such a view often leaves the tumour
out, and its tumour mask is then empty: a segmenter trained on a source whose slices all show a
tumour (Figshare) may learn that every slice of that source holds one, and mark the next most
tumour-like structure (a normal pituitary gland, a ventricle) where the tumour is faint. Views
with and without the tumour come from the same zoom, so the zoom carries no label. Measured on
Figshare, the views cost Dice and bought no consistent specificity (docs/results.md).

Crops (``crop`` > 0, off by default): the output is a ``crop`` px window of the input at the
input's own pixel scale, at a place uniform over the image (window centre within ``1 - w`` of
the middle, ``w = crop / S``), drawn into the same affine map as the similarity transform, so
image and masks are cut in one sampling pass. A zoomed view is cropped in its own units: the
window lies inside the view (centre within ``(1 - w) / z`` of the view's). A fully
convolutional network trained on such windows predicts on whole images: the detail of the
larger side for the cost of the smaller.
Images flagged ``whole`` (labels that hold only for the whole image, such as "a tumour somewhere")
are shrunk whole to the output side instead.

Intensity (MR intensities have no absolute scale): gamma, then contrast around the image
mean, then brightness, clipped to [0, 1]: ``x' = clip((x**g - m) * c + m + b, 0, 1)``.

Contrast remapping (``remap`` > 0, off by default): with that probability an image's in-head
intensities go through a random monotone piecewise-linear curve, ``x' = f(x)`` with knots at
``x = 0, 1/4, ..., 1`` and sorted uniform values, reversed half the time (inverted contrast).
MRI sequences differ mostly by such remappings (T1: dark CSF, T2/FLAIR: bright CSF; CT
inverts little but shifts the curve), so a model that saw tumours only in one sequence learns
the sequence as a shortcut (Sartaj: training gliomas are T1 post-contrast, while its
no-tumour folder holds T2, FLAIR and CT slices); remapping takes that cue away, as the
intensity transforms of BigAug (Zhang et al. 2020) and Models Genesis (Zhou et al. 2019) do.
Pixels outside the head mask keep their value (black background stays black).

Random numbers come from a CPU ``torch.Generator``, so a seed gives the same augmentation
on CPU and GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0  # uniform in [-r, r]
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor, uniform
    shift: float = 0.05  # fraction of the image side, uniform in [-s, s] per axis
    hflip: float = 0.5  # probability
    gamma: tuple[float, float] = (0.8, 1.25)  # log-uniform
    contrast: tuple[float, float] = (0.85, 1.15)  # uniform
    brightness: float = 0.08  # additive, uniform in [-b, b]
    remap: float = 0.0  # probability of a random contrast curve (see the module docstring)
    zoom_views: float = 0.0  # probability of a zoomed view (see the module docstring)
    zoom_view_range: tuple[float, float] = (1.5, 2.5)  # its zoom factor, uniform
    crop: int = 0  # output side in px: a window of the input at a random place; 0: all of it


REMAP_KNOTS = 5


def augment(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    generator: torch.Generator,
    config: AugmentConfig = AugmentConfig(),
    whole: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment ``images`` (B, 1, S, S) floats in [0, 1] and their ``masks``: (B, S, S) bool,
    the head masks, or (B, K, S, S) bool, K masks per image whose first is the head mask
    (contrast remapping's region); returned in the shape given, with side ``config.crop``
    when set (images flagged in ``whole``, bool (B,), are then shrunk whole instead)."""
    b, side = images.shape[0], images.shape[-1]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    angle = uniform(-config.rotate_deg, config.rotate_deg) * (math.pi / 180)
    zoom = uniform(*config.scale)
    flip = torch.where(torch.rand(b, generator=generator) < config.hflip, -1.0, 1.0)
    reach = 2 * config.shift  # normalised coordinates span 2 per image side
    shift = uniform(-reach, reach), uniform(-reach, reach)
    gamma = torch.exp(uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))
    contrast = uniform(*config.contrast)
    brightness = uniform(-config.brightness, config.brightness)
    view = torch.ones(b)  # each image's zoomed-view factor (1: not a zoomed view)
    if config.zoom_views > 0:  # drawn only when asked: runs without keep their random stream
        zoom, shift, view = zoomed_views(zoom, shift, config, generator)
    out_side = side
    if config.crop:  # drawn only when asked: runs without keep their random stream
        out_side = config.crop
        zoom, shift = cropped_windows(zoom, shift, config.crop / side, whole, generator, view)

    # output -> input sampling map: p_in = R(angle) diag(flip, 1) p_out / zoom + shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[0]], dim=1),
            torch.stack([sin * flip, cos, shift[1]], dim=1),
        ],
        dim=1,
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [b, images.shape[1], out_side, out_side], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    head = None
    if masks is not None:
        stacked = masks if masks.dim() == 4 else masks.unsqueeze(1)
        warped = F.grid_sample(stacked.to(images.dtype), grid, mode="nearest",
                               align_corners=False) > 0.5
        masks = warped if masks.dim() == 4 else warped.squeeze(1)
        head = warped[:, 0]

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.to(images.device, images.dtype).view(b, 1, 1, 1)

    out = out.clamp(0, 1)
    if config.remap > 0:  # drawn only when asked: runs without it keep their random stream
        out = remap_contrast(out, head, generator, config.remap)
    out = out ** per_image(gamma)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * per_image(contrast) + mean + per_image(brightness)
    return out.clamp(0, 1), masks


def zoomed_views(
    zoom: torch.Tensor, shift: tuple[torch.Tensor, torch.Tensor], config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``zoom`` and ``shift`` (each (B,)) with a share ``config.zoom_views`` of the images
    turned into zoomed views: zoom ``z`` uniform in ``config.zoom_view_range``, centre uniform
    in ``[-(1 - 1/z), 1 - 1/z]`` per axis, so the view stays inside the image; and each image's
    view factor (``z``, or 1 for an image left whole)."""
    b = zoom.shape[0]
    chosen = torch.rand(b, generator=generator) < config.zoom_views
    lo, hi = config.zoom_view_range
    z = lo + (hi - lo) * torch.rand(b, generator=generator)
    reach = 1 - 1 / z
    centre = [(2 * torch.rand(b, generator=generator) - 1) * reach for _ in range(2)]
    return (torch.where(chosen, z, zoom),
            (torch.where(chosen, centre[0], shift[0]), torch.where(chosen, centre[1], shift[1])),
            torch.where(chosen, z, 1.0))


def cropped_windows(
    zoom: torch.Tensor, shift: tuple[torch.Tensor, torch.Tensor], window: float,
    whole: torch.Tensor | None, generator: torch.Generator, view: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``zoom`` and ``shift`` (each (B,)) for outputs that cover ``window`` of the view's side
    at the view's pixel scale: zoom ``z / window``, shift plus an offset uniform in
    ``[-(1 - window), 1 - window] / v`` per axis (``v``: ``view``, each image's zoomed-view
    factor, 1 by default), so the window stays inside the view, and the view inside the image.
    Images flagged in ``whole`` keep the whole view (shrunk to the output side), for labels that
    hold for the whole image only (a weak label: a tumour somewhere)."""
    b = zoom.shape[0]
    keep = torch.zeros(b, dtype=torch.bool) if whole is None else whole.cpu()
    reach = (1 - window) / (torch.ones(b) if view is None else view)
    offset = [(2 * torch.rand(b, generator=generator) - 1) * reach for _ in range(2)]
    w = torch.where(keep, 1.0, window)
    return zoom / w, (shift[0] + torch.where(keep, 0.0, offset[0]),
                      shift[1] + torch.where(keep, 0.0, offset[1]))


def remap_contrast(
    images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator, p: float
) -> torch.Tensor:
    """With probability ``p`` per image, ``x' = f(x)`` inside the head mask (everywhere without
    masks): ``f`` interpolates ``REMAP_KNOTS`` sorted uniform values at evenly spaced ``x``,
    reversed with probability 1/2. ``images`` (B, 1, S, S) in [0, 1]."""
    b = images.shape[0]
    chosen = torch.rand(b, generator=generator) < p
    knots = torch.rand(b, REMAP_KNOTS, generator=generator).sort(dim=1).values
    invert = torch.rand(b, generator=generator) < 0.5
    knots = torch.where(invert[:, None], knots.flip(1), knots).to(images.device, images.dtype)
    pos = images.clamp(0, 1) * (REMAP_KNOTS - 1)
    left = pos.floor().clamp(max=REMAP_KNOTS - 2).long()
    t = pos - left
    flat = left.view(b, -1)
    lo = knots.gather(1, flat).view_as(images)
    hi = knots.gather(1, flat + 1).view_as(images)
    remapped = lo + (hi - lo) * t
    where = chosen.to(images.device).view(b, 1, 1, 1)
    if masks is not None:
        where = where & masks.unsqueeze(1)
    return torch.where(where, remapped, images)
