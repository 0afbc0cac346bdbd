"""``braincam bench predict``: what a user of a trained run waits for, measured side by side.

- **latency**: one image file through the API, ``Model.predict([file])`` and
  ``Model.explain([file], method="gradcam")`` (preprocessing-cache hit, warnings included),
  median milliseconds over ``repeats`` calls after two warm-up calls;
- **folder throughput**: the same image files through ``Model.predict`` (with its warnings) and
  through ``braincam evaluate``'s path (``PreprocessCache.load`` then
  ``braincam.evaluate.predict.predict``), both with the cache warm, alternating within each
  repeat; images/s are medians and the ratio is the median of the per-repeat ratios, so load
  that drifts between repeats cancels.

The out-of-distribution reference is built (or read) before anything is timed.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from braincam.api import Model
from braincam.data.preprocess import PreprocessCache
from braincam.data.records import ImageRecord, SkippedFile
from braincam.device import interleaved, median_ratio
from braincam.errors import BraincamError
from braincam.evaluate.predict import predict

log = logging.getLogger(__name__)


def bench_predict(model: Model, files: list[Path], repeats: int = 20, folder_repeats: int = 3,
                  batch_size: int = 32) -> dict[str, object]:
    """Latency and throughput (module docstring) of ``model`` on image ``files``."""
    if len(files) < 1:
        raise BraincamError("no image files to benchmark")
    _ = model.reference  # calibrate before timing
    skipped: list[SkippedFile] = []  # as predict skips them; both contenders see the rest
    model.predict(files, batch_size=batch_size, skipped=skipped)
    unreadable = {str(s.path) for s in skipped}
    files = [f for f in files if str(f) not in unreadable]
    if skipped:
        log.warning("%d of the images cannot be read and are left out (first: %s: %s)",
                    len(skipped), skipped[0].path, skipped[0].reason)
    if not files:
        raise BraincamError("no readable image file to benchmark")
    one = [files[0]]
    device = model.device
    calls = {
        "predict": lambda: model.predict(one),
        "predict_gradcam": lambda: model.explain(one, method="gradcam"),
    }
    latency = {name: [1000 * s for s in secs]
               for name, secs in interleaved(calls, repeats, device, warmups=2).items()}
    records = [ImageRecord(Path(f).absolute(), "bench", None, "no_tumor", 0, 0, None)
               for f in files]
    cache = PreprocessCache()

    def evaluate_path() -> None:
        images, _, _ = cache.load(records, model.config)
        predict(model.net, images, device, batch_size)

    def predict_path() -> None:
        model.predict(files, batch_size=batch_size)

    contenders = {"evaluate": evaluate_path, "predict": predict_path}  # warm-up fills the cache
    rates = {name: [len(files) / s for s in secs]
             for name, secs in interleaved(contenders, folder_repeats, device).items()}
    return {
        "arch": model.meta["arch"], "image_size": model.config.size, "device": str(device),
        "ood": model.ood, "images": len(files), "repeats": repeats,
        "folder_repeats": folder_repeats,
        "predict_ms": round(statistics.median(latency["predict"]), 1),
        "predict_gradcam_ms": round(statistics.median(latency["predict_gradcam"]), 1),
        "folder_predict_img_s": round(statistics.median(rates["predict"]), 2),
        "folder_evaluate_img_s": round(statistics.median(rates["evaluate"]), 2),
        "folder_predict_vs_evaluate": median_ratio(rates["predict"], rates["evaluate"]),
    }
