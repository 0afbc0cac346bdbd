"""Model-parameter randomisation test (Adebayo et al. 2018, cascading version).

The model's parameterised children are re-initialised one after another from the output
backwards (head, last stage, ..., stem), see :func:`cascade_groups`. After
each step the maps are recomputed for the same images and target classes and compared
with the trained model's maps by

- Spearman rank correlation of the pixel values (a constant map counts as 0), and
- SSIM (scikit-image, data range 1; maps are in [0, 1]).

A method whose maps survive the randomisation explains the image, not the model: it passes
when, with every layer randomised, the mean Spearman correlation is below
:data:`SPEARMAN_MAX` and the mean SSIM below ``max(SSIM_MAX, ssim_blank)``; otherwise a
critical finding. ``ssim_blank`` is the mean SSIM of the trained maps with a blank
(all-zero) map: SSIM counts flat regions that agree, so a sparse map (a segmentation-guided
model's is 0 on about 95% of a Figshare slice) has SSIM 0.94 with a blank map and fails the
fixed limit whatever it shows, while a randomised map no more similar than a blank one
shares no structure with it. Every step costs one explanation pass, so the test runs on a
seeded subset of ``AuditSettings.sanity_images`` images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from braincam.audit.findings import Finding
from braincam.audit.model.base import AuditBatch, Check, register, subsample

SPEARMAN_MAX = 0.5
SSIM_MAX = 0.5
STAGE_CONTAINERS = ("backbone", "blocks", "stages", "features", "net")


def cascade_groups(model) -> list[tuple[str, list]]:
    """``(name, modules)`` to re-initialise, top (output) first.

    Children with parameters, in reverse definition order; a child named in
    :data:`STAGE_CONTAINERS` (braincam's ``backbone``, timm's ``blocks``/``stages``,
    torchvision's ``features``, a model spec's wrapped ``net``) is replaced by its own
    children, recursively.
    """

    def walk(module, prefix: str) -> list[tuple[str, list]]:
        found = []
        for name, child in module.named_children():
            if not any(True for _ in child.parameters()):
                continue
            if name in STAGE_CONTAINERS and len(list(child.children())) > 1:
                found += walk(child, f"{prefix}{name}.")
            else:
                found.append((f"{prefix}{name}", [child]))
        return found

    return walk(model, "")[::-1]


def randomise_(modules: list, seed: int) -> None:
    """Re-initialise every submodule that has ``reset_parameters`` (PyTorch's default init;
    for batch norm also the running statistics); any other parameter gets N(0, 0.02)."""
    import torch

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in modules:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
                else:
                    for param in sub.parameters(recurse=False):
                        torch.nn.init.normal_(param, std=0.02)
    finally:
        torch.random.set_rng_state(generator_state)


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Spearman correlation and SSIM of two stacks of maps (N, H, W) in [0, 1]."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rho, ssim = np.zeros(len(a)), np.zeros(len(a))
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            rho[i] = spearmanr(x.ravel(), y.ravel()).statistic
        ssim[i] = structural_similarity(x, y, data_range=1.0)
    return rho, ssim


@dataclass
class SanitySummary:
    """Similarity of trained vs randomised maps after each cascade step (``layers[k]`` is the
    last group randomised at step k); ``passed`` judges the fully randomised model."""

    method: str
    n_images: int
    passed: bool | None
    layers: list[str] = field(default_factory=list)
    spearman: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    ssim_blank: float | None = None  # mean SSIM of the trained maps with an all-zero map

    @property
    def similarity_after_randomization(self) -> dict[str, float | None]:
        """Mean Spearman and SSIM with every layer randomised."""
        return {"spearman": self.spearman[-1] if self.spearman else None,
                "ssim": self.ssim[-1] if self.ssim else None}


@register
class SanityCheck(Check):
    """Cascading randomisation: maps must change when the model's weights do."""

    name = "sanity"
    title = "Sanity check"
    description = "Whether the maps depend on the trained weights (Adebayo et al., 2018)."
    per_method = True
    higher_is_better = {"similarity_after_randomization": False,
                        "ssim_after_randomization": False}

    def evaluate(self, batch: AuditBatch) -> dict[str, dict[str, np.ndarray]]:
        """Per-image similarity after each step: columns ``spearman`` and ``ssim`` are
        (N, steps), NaN outside the subset; ``layers`` is not per image, so it is
        recomputed from the model in :meth:`summarise`."""
        handle = batch.handle
        if handle is None:
            raise ValueError("the sanity check needs a model handle")
        n = len(batch)
        seed = self.settings.seed
        idx = subsample(n, self.settings.sanity_images, seed)
        images, targets = batch.images[idx], batch.targets[idx]
        groups = cascade_groups(handle.model)
        out = {}
        for method, maps in batch.maps.items():
            rho = np.full((n, len(groups)), np.nan)
            ssim = np.full((n, len(groups)), np.nan)
            model = copy.deepcopy(handle.model).eval()
            copies = dict(zip([g for g, _ in groups], cascade_groups(model), strict=True))
            for step, (name, _) in enumerate(groups):
                randomise_(copies[name][1], seed + step)
                randomised = np.nan_to_num(handle.explain(model, images, targets, method))
                rho[idx, step], ssim[idx, step] = map_similarity(maps[idx], randomised)
            blank = np.full(n, np.nan)
            blank[idx] = map_similarity(maps[idx], np.zeros_like(maps[idx]))[1]
            out[method] = {"spearman": rho, "ssim": ssim, "ssim_blank": blank}
        return out

    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[dict[str, SanitySummary], list[Finding]]:
        layers = [name for name, _ in cascade_groups(batch.handle.model)] if batch.handle else []
        summaries, findings = {}, []
        for method, cols in per_image.items():
            rows = ~np.isnan(cols["spearman"]).any(axis=1)
            if not rows.any() or not cols["spearman"].shape[1]:
                summaries[method] = SanitySummary(method, 0, None, layers)
                continue
            rho = cols["spearman"][rows].mean(axis=0)
            ssim = cols["ssim"][rows].mean(axis=0)
            blank = float(cols["ssim_blank"][rows].mean())
            ssim_max = max(SSIM_MAX, blank)
            passed = bool(rho[-1] < SPEARMAN_MAX and ssim[-1] < ssim_max)
            summary = SanitySummary(method, int(rows.sum()), passed, layers,
                                    rho.round(4).tolist(), ssim.round(4).tolist(),
                                    round(blank, 4))
            summaries[method] = summary
            if not passed:
                findings.append(Finding(
                    "critical", "sanity.randomization", float(rho[-1]), SPEARMAN_MAX,
                    f"{method}: maps of the fully randomised model still resemble the trained "
                    f"model's (Spearman {rho[-1]:.2f}, SSIM {ssim[-1]:.2f}; limits "
                    f"{SPEARMAN_MAX}, {ssim_max:.2f}): the method shows the image more than the "
                    "model."))
        return summaries, findings
