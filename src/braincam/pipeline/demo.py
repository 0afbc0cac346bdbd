"""``run_demo``: a model that is right for the wrong reason, caught and fixed, offline.

The story, on head phantoms (:mod:`braincam.data.synthetic`) whose ``no_tumor`` class carries
a white corner marker in Training and in Testing:

1. ``OUT/shortcut``: the whole pipeline trains a small CNN (resnet10t from scratch, no
   download) on whole images (the default crop to the head would cut the marker away, a
   remedy in itself). It scores near 1 on the marked test phantoms; on the same phantoms
   without the marker (:func:`clean_accuracy`) it falls to about chance: it learnt the marker.
2. The audits catch it: the data audit's background probe, the CAM energy in the marker's
   corner (region ``marker``), the counterfactuals, and the report's verdict.
3. ``OUT/remedy``: the same training with the attention penalty
   (:mod:`braincam.train.mitigation`: Grad-CAM energy outside the head mask is penalised in
   phase 2), which moves the model off the marker: its clean accuracy rises.
4. ``OUT/compare.{csv,json,png}``: both runs side by side (:func:`compare_runs`).

The recipe (:class:`DemoSettings`) is the one ``tests/train/test_mitigation.py`` holds to
its numbers; it runs in about a minute on two CPU cores. Bars are off by default (stage
lines only). The phantoms are rewritten only when their spec changed (``OUT/phantoms/
.spec.json``; hidden files are not data), so a second demo resumes instead of redoing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from braincam.audit.findings import Finding, sort_findings
from braincam.audit.model.base import AuditSettings
from braincam.data.preprocess import PreprocessConfig, preprocess_config
from braincam.data.synthetic import MARKER_FRACTION, PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.pipeline.compare import Comparison, compare_runs, write_comparison
from braincam.pipeline.options import PipelineOptions
from braincam.pipeline.run import PipelineResult, check_run_dir, run_pipeline
from braincam.report.findings import group_findings
from braincam.report.verdict import Verdict, collect_verdict
from braincam.runs import RunDir, atomic_write_text, check_folders
from braincam.train.config import TrainConfig

DATA_FOLDER = "phantoms"
SHORTCUT_RUN = "shortcut"
REMEDY_RUN = "remedy"
SPEC_FILE = ".spec.json"
MAX_LISTED = 4  # findings printed per audit at the end


DEMO_AUDIT = AuditSettings(faithfulness_images=4, road_images=2, road_percentiles=(50,),
                           sanity_images=2, occlusion_images=2, steps=8)
"""Model-audit subsets of the demo: its costliest checks on a handful of images."""


@dataclass(frozen=True)
class DemoSettings:
    """The demo's knobs. Defaults: 100 T1-CE phantoms of 128 px per class in Training and in
    Testing, resnet10t from scratch at 96 px, 10 epochs of its last 4 stages, phantom seed 1
    and training seed 2 (the recipe of ``tests/train/test_mitigation.py``), the remedy's
    attention penalty 5, 32 test images audited and explained, 200 bootstrap resamples."""

    shortcut: str | None = "marker"  # a braincam.data.synthetic shortcut, planted on no_tumor
    n_per_class: int = 100
    phantom_size: int = 128  # drawn at this side, resized to image_size by preprocessing
    image_size: int = 96
    contrasts: tuple[str, ...] = ("t1ce",)
    epochs: int = 10
    penalty: float = 5.0  # the remedy's attention penalty; 0: no remedy run
    explain_cap: int = 32
    n_boot: int = 200
    seed: int = 1  # phantoms and split
    train_seed: int = 2  # initialisation, augmentation, batch order
    arch: str = "resnet10t"
    weights: str = "none"
    device: str = "auto"
    progress: bool = False

    def spec(self) -> PhantomSpec:
        """The phantoms (a ``size`` shortcut enlarges its class)."""
        return PhantomSpec(n_per_class=self.n_per_class, size=self.phantom_size,
                           contrasts=self.contrasts, shortcut=self.shortcut, seed=self.seed)

    def options(self, penalty: float = 0.0) -> PipelineOptions:
        """The pipeline options of the shortcut run (``penalty`` 0) or of the remedy."""
        train = TrainConfig(
            arch=self.arch, weights=self.weights, split="official", seed=self.train_seed,
            split_seed=self.seed,
            head_epochs=0, finetune_epochs=self.epochs, finetune_stages=4, finetune_lr=1e-3,
            batch_size=16, patience=self.epochs,
            preprocess=PreprocessConfig(size=self.image_size, crop=False),
            device=self.device, attention_penalty=penalty,
        )
        regions = {"marker": (0.0, 0.0, MARKER_FRACTION, MARKER_FRACTION)} if (
            self.shortcut == "marker") else {}
        return PipelineOptions(train=train, explain_cap=self.explain_cap, n_boot=self.n_boot,
                               audit=DEMO_AUDIT, regions=regions, progress=self.progress)


@dataclass
class DemoRun:
    """One trained run of the demo, its accuracy on the marked test phantoms (``metrics.json``)
    and on the same phantoms without the shortcut, and its report's verdict."""

    name: str
    pipeline: PipelineResult
    clean_accuracy: float
    verdict: Verdict

    @property
    def marked_accuracy(self) -> float | None:
        return ((self.pipeline.metrics or {}).get("test") or {}).get("accuracy")


@dataclass
class DemoResult:
    data: Path
    shortcut: str | None
    runs: list[DemoRun]  # the shortcut run, then the remedy (when run)
    comparison: Comparison | None


def run_demo(out_dir: Path | str, settings: DemoSettings | None = None, force: bool = False,
             console: Console | None = None) -> DemoResult:
    """Write the phantoms (when needed), run the pipeline without and with the remedy into
    ``OUT/shortcut`` and ``OUT/remedy``, and compare them into ``OUT``."""
    settings = settings or DemoSettings()
    console = console or Console()
    out_dir = Path(out_dir)
    data = out_dir / DATA_FOLDER
    plan = [(SHORTCUT_RUN, settings.options())]
    if settings.penalty > 0:
        plan.append((REMEDY_RUN, settings.options(settings.penalty)))
    for name, options in plan:
        check_run_dir(RunDir(out_dir / name), [data], options, force)
    check_phantoms(data, settings.spec(), force)
    write_phantoms(data, settings.spec())
    runs = []
    for name, options in plan:
        console.rule(f"[bold]{name} run[/]", align="left", characters="=")
        result = run_pipeline([data], options, out_dir / name, force=force, console=console)
        clean = clean_accuracy(result.run_dir, settings.spec(), settings.device)
        runs.append(DemoRun(name, result, clean, run_verdict(result)))
    comparison = None
    if len(runs) > 1:
        comparison = compare_runs([r.pipeline.run_dir for r in runs])
        write_comparison(comparison, out_dir)
    return DemoResult(data, settings.shortcut, runs, comparison)


def clean_accuracy(run_dir: Path, spec: PhantomSpec, device: str = "auto") -> float:
    """Accuracy of the run's model on its test phantoms drawn without the shortcut (each
    phantom's generator is seeded by its index, so they are the same heads and tumours)."""
    from braincam.data.preprocess import preprocess
    from braincam.data.synthetic import make_phantom_arrays
    from braincam.device import device_of
    from braincam.evaluate.predict import predict
    from braincam.models import load_checkpoint

    model, meta = load_checkpoint(RunDir(Path(run_dir)).model, device=device_of(device))
    config = preprocess_config(meta)
    items = make_phantom_arrays(dataclasses.replace(spec, shortcut=None), ("test",))
    images = np.stack([preprocess(item.phantom.image, config).image for item in items])
    labels = np.array([list(meta["classes"]).index(item.label) for item in items])
    return float((predict(model, images, device).argmax(1) == labels).mean())


def run_verdict(result: PipelineResult) -> Verdict:
    """The report's verdict of a finished pipeline run."""
    try:
        audit = json.loads((RunDir(result.run_dir).audit / "audit.json").read_text("utf-8"))
    except (OSError, ValueError):
        audit = None
    return collect_verdict(result.metrics, audit if isinstance(audit, dict) else None,
                           group_findings(_model_first(result)))


def check_phantoms(root: Path, spec: PhantomSpec, force: bool) -> None:
    """Refuse (BraincamError) to replace phantoms of another spec unless ``force``, and a
    ``root`` with files but no spec file, which braincam did not write, even with it."""
    check_folders(root)
    if not (root / SPEC_FILE).exists():
        if root.is_dir() and any(root.iterdir()):
            raise BraincamError(f"{root} holds files braincam demo did not write (it has no "
                                f"{SPEC_FILE}): choose another --out")
        return
    stored = _read_spec(root)
    if stored is None or force:
        return
    changed = [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in _spec_doc(spec).items()
               if stored.get(k) != v]
    if changed:
        raise BraincamError(
            f"{root.parent} holds a demo made with other settings ({'; '.join(changed)}); "
            "pass --force to replace it, or choose another --out"
        )


def write_phantoms(root: Path, spec: PhantomSpec) -> bool:
    """Write ``spec``'s phantoms to ``root`` unless it already holds exactly them (its spec
    file matches); True when written. They are written beside it, spec file last, and then
    take its place: an interrupted write leaves no ``root`` without a spec file, so that one
    (:func:`check_phantoms`) is never braincam's."""
    if _read_spec(root) == _spec_doc(spec):
        return False
    partial = root.with_name(f".{root.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    make_phantom_dataset(partial, spec)
    atomic_write_text(partial / SPEC_FILE, json.dumps(_spec_doc(spec), sort_keys=True))
    if root.exists():
        shutil.rmtree(root)
    os.replace(partial, root)
    return True


def _spec_doc(spec: PhantomSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _read_spec(root: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((root / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def demo_lines(demo: DemoResult) -> list[str]:
    """Rich markup lines, the story in order: what was planted; per run, its accuracy with and
    without the shortcut, the audits' serious findings (grouped) and the verdict; the reports."""
    planted = (f"a {demo.shortcut!r} shortcut on the no_tumor phantoms" if demo.shortcut
               else "no shortcut (clean phantoms)")
    lines = [f"planted: {planted}"]
    for run in demo.runs:
        marked = run.marked_accuracy
        lines.append(f"[bold]{run.name}[/]: test accuracy {_acc(marked)} on the phantoms as "
                     f"given, {_acc(run.clean_accuracy)} on the same phantoms without the "
                     "shortcut")
        serious = [f for f in group_findings(_model_first(run.pipeline)) if f.severity != "info"]
        lines.append(f"  audits: {len(serious)} finding(s) at warning or above"
                     + (":" if serious else ""))
        lines += [f"    {_finding_line(f)}" for f in serious[:MAX_LISTED]]
        if len(serious) > MAX_LISTED:
            lines.append(f"    ... and {len(serious) - MAX_LISTED} more in the report")
        lines.append(f"  verdict: {escape(run.verdict.text)}")
        lines.append(f"  report: {escape(str(run.pipeline.report))}")
    return lines


def _model_first(result: PipelineResult) -> list[Finding]:
    """Both audits' findings, most severe first, the model audit's first within a severity
    (they say what the model uses; the data audit's say what it could use)."""
    return sort_findings(result.model_findings + result.data_findings)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _finding_line(f: Finding) -> str:
    style = "bold red" if f.severity == "critical" else "yellow"
    return f"[{style}]{f.severity}[/] {escape(f.check)}: {escape(f.message)}"
