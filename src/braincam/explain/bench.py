"""Throughput benchmarks, measured side by side in one process on one model.

The CPU may be shared, so what counts are *ratios*: each repeat times every contender in turn
(warm-up calls excluded), and a ratio is the median over repeats of that repeat's ratio, so
load that drifts between repeats cancels. Throughputs are medians over repeats. Models have
random weights: speed does not depend on them, and nothing is downloaded.
"""

from __future__ import annotations

import statistics

import torch

from braincam.device import interleaved, median_ratio
from braincam.explain.api import explain
from braincam.explain.base import class_probs
from braincam.explain.occlusion import CPU_BATCH, GPU_BATCH, occlusion


def _model(arch: str, device: torch.device) -> torch.nn.Module:
    from braincam.models import build_model

    torch.manual_seed(0)
    return build_model(arch, num_classes=2, weights="none").to(device).eval()


def bench_cam(arch: str = "resnet50", batch: int = 16, iters: int = 1, repeats: int = 5,
              image_size: int = 224, device: torch.device | None = None) -> dict[str, object]:
    """Images/s of plain inference (``inference_mode``), braincam Grad-CAM (maps as numpy,
    like pytorch-grad-cam returns them) and pytorch-grad-cam's ``GradCAM`` on the same layer,
    same batch with mixed targets."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from braincam.models import default_target_layer

    device = device or torch.device("cpu")
    model = _model(arch, device)
    layer = default_target_layer(model)
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    targets = torch.arange(batch) % 2
    outputs = [ClassifierOutputTarget(int(t)) for t in targets]

    def inference() -> None:
        with torch.inference_mode():
            model(x)

    def reference() -> None:  # hooks only while it runs, as in its README's ``with`` usage
        with GradCAM(model, [model.get_submodule(layer)]) as cam:
            cam(x, outputs)

    contenders = {
        "inference": inference,
        "gradcam": lambda: explain(model, x, targets, "gradcam", layer).numpy(),
        "pytorch_grad_cam": reference,
    }
    seconds = interleaved(contenders, repeats, device, iters=iters)
    rates = {name: [batch * iters / s for s in secs] for name, secs in seconds.items()}
    return {
        "arch": arch, "batch": batch, "image_size": image_size, "device": str(device),
        "layer": layer, "iters": iters, "repeats": repeats,
        **{f"{name}_img_s": round(statistics.median(r), 2) for name, r in rates.items()},
        "gradcam_vs_inference": median_ratio(rates["gradcam"], rates["inference"]),
        "gradcam_vs_pytorch_grad_cam": median_ratio(rates["gradcam"],
                                                    rates["pytorch_grad_cam"]),
    }


def bench_occlusion(arch: str = "efficientnet_lite0", window: int = 32, stride: int = 16,
                    image_size: int = 224, images: int = 16, captum_images: int = 1,
                    repeats: int = 1, batch_size: int | None = None,
                    device: torch.device | None = None) -> dict[str, object]:
    """Images/s of braincam's occlusion and captum's ``Occlusion`` (default
    ``perturbations_per_eval=1``) with the same window, stride, zero fill and probability
    forward; ``max_abs_diff`` compares their maps on the images both explained."""
    from captum.attr import Occlusion

    device = device or torch.device("cpu")
    batch_size = batch_size or (CPU_BATCH if device.type == "cpu" else GPU_BATCH)
    model = _model(arch, device)
    x = torch.randn(images, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    targets = torch.arange(images, device=device) % 2
    k = min(captum_images, images)
    captum = Occlusion(lambda t: class_probs(model(t)))
    maps: dict[str, torch.Tensor] = {}

    def ours() -> None:
        maps["braincam"] = occlusion(model, x, targets, window, stride, "zero", batch_size).drop

    def theirs() -> None:
        with torch.no_grad():
            maps["captum"] = captum.attribute(
                x[:k], sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=0.0, target=targets[:k],
            )[:, 0]

    with torch.inference_mode():  # warm-up: allocator, oneDNN/cuDNN kernel choice
        model(x[:1])
    seconds = interleaved({"braincam": ours, "captum": theirs}, repeats, device, warmups=0)
    rates = {"braincam": [images / s for s in seconds["braincam"]],
             "captum": [k / s for s in seconds["captum"]]}
    diff = (maps["braincam"][:k] - maps["captum"]).abs().max().item()
    return {
        "arch": arch, "image_size": image_size, "window": window, "stride": stride,
        "device": str(device), "images": images, "captum_images": k, "repeats": repeats,
        "batch_size": batch_size,
        "braincam_img_s": round(statistics.median(rates["braincam"]), 3),
        "captum_img_s": round(statistics.median(rates["captum"]), 3),
        "ratio": median_ratio(rates["braincam"], rates["captum"]),
        "max_abs_diff": float(f"{diff:.3g}"),
    }
