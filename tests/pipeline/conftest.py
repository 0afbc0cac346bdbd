"""One tiny pipeline run on marker phantoms (timm resnet10t at 32 px, one epoch per phase),
shared by the pipeline tests; tests that change a run work on a copy of it."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from braincam.audit.model.base import AuditSettings
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.pipeline import PipelineOptions, PipelineResult, run_pipeline
from braincam.train import TrainConfig

CAP = 4  # images explained and audited per dataset (the test split has 6)


def tiny_options(**changes) -> PipelineOptions:
    train = TrainConfig(
        arch="resnet10t", weights="none", split="dedup", head_epochs=1, finetune_epochs=1,
        batch_size=8, preprocess=PreprocessConfig(size=32), device="cpu",
    )
    audit = AuditSettings(faithfulness_images=2, road_images=1, road_percentiles=(50,),
                          sanity_images=2, occlusion_images=1, steps=5)
    return PipelineOptions(train=train, explain_cap=CAP, n_boot=20, audit=audit,
                           progress=False).replace(**changes)


class Recorder:
    """Runs the pipeline with its terminal output captured in ``text``."""

    def __init__(self) -> None:
        self.text = ""

    def __call__(self, roots, options, out, force=False) -> PipelineResult:
        buf = io.StringIO()
        result = run_pipeline(roots, options, out, force=force,
                              console=Console(file=buf, width=120))
        self.text = buf.getvalue()
        return result


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-data") / "phantoms"
    return make_phantom_dataset(root, PhantomSpec(n_per_class=8, size=48, shortcut="marker",
                                                  seed=1))


@pytest.fixture(scope="session")
def first_run(phantoms, tmp_path_factory) -> tuple[PipelineResult, str]:
    """The tiny run made once; (result, terminal output)."""
    record = Recorder()
    result = record([phantoms], tiny_options(), tmp_path_factory.mktemp("runs") / "run")
    return result, record.text


@pytest.fixture
def run_copy(first_run, tmp_path) -> Path:
    """A copy of the first run (modification times kept) that a test may change."""
    return Path(shutil.copytree(first_run[0].run_dir, tmp_path / "run", copy_function=shutil.copy2))


@pytest.fixture
def record() -> Recorder:
    return Recorder()


def mtimes(root: Path) -> dict[str, int]:
    """Modification time (ns) of every file under ``root`` but the stage markers."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and ".stages" not in p.parts}


@pytest.fixture(name="mtimes")
def mtimes_fixture() -> Callable[[Path], dict[str, int]]:
    return mtimes


@pytest.fixture(name="tiny_options")
def tiny_options_fixture() -> Callable[..., PipelineOptions]:
    return tiny_options


@pytest.fixture(name="cap")
def cap_fixture() -> int:
    return CAP
