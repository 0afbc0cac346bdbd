"""``run_pipeline``: data audit -> train -> evaluate -> model audit -> explain -> report, into
one run directory, resumable stage by stage.

The model audit picks the images it looks at (the test split and every extra dataset, at most
``explain_cap`` of each); the explain stage then writes explanations and overlays of exactly
those images, so the report's gallery can show every explained image with the audit's
per-image numbers.

Each stage is a thin call of its module's public function; what is new here is the order, the
resumption (markers and fingerprints, see :mod:`braincam.pipeline.stages`) and the guard
against overwriting a run made with other options:

- ``RUN/.stages/pipeline.json`` holds the data roots and the result-deciding options of the
  run. A later call with other ones that would redo a finished stage is refused unless
  ``force``; with ``force`` the stages whose inputs changed are redone (and everything
  downstream), the others kept. (Other options after a failed stage, e.g. ``--weights none``
  after ImageNet weights could not be had, need no ``force``: nothing finished is replaced.)
- A directory that holds run files (config.yaml, model.safetensors...) but no
  ``pipeline.json`` was written by another command and is likewise refused without ``force``.

Stage inputs (the fingerprints):

============ ===============================================================================
data-audit   data files; task, split, seed, n_boot
train        data files; the settings that decide the model (TrainConfig.model_settings);
             the files of --guide dataset folders, if any
evaluate     train; extra data files; n_boot
model-audit  train; data and extra data files; methods, explain_cap, audit settings,
             regions
explain      model-audit (its images); methods
report       all of the above
============ ===============================================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from braincam.audit.data.run import FILES as DATA_AUDIT_FILES
from braincam.audit.findings import Finding, sort_findings
from braincam.audit.model.examples import EXAMPLES_FILE
from braincam.errors import BraincamError
from braincam.pipeline import stages as S
from braincam.pipeline.options import PipelineOptions
from braincam.runs import (
    OUTPUT_STAMP,
    RunDir,
    atomic_write_json,
    atomic_write_yaml,
    braincam_wrote,
    check_folders,
    check_outside_data,
    check_spares,
)

STAGES = ("data-audit", "train", "evaluate", "model-audit", "explain", "report")
PIPELINE_FILE = "pipeline.json"
TRAIN_WORK = "train.tmp"  # RUN/.stages/train.tmp: train_run's own (empty) output directory
LOCK_FILE = "lock"  # RUN/.stages/lock: held while the stages run


def train_owned(run: RunDir) -> tuple[Path, ...]:
    """Files of a run that its training (or a use of its model) wrote: replaced or removed
    when the train stage runs again, so none describes the model it replaced."""
    return (run.config, run.model, run.history, run.split, run.skipped, run.upweighted,
            run.guide, run.ood_reference)


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float  # this call's time (0 when skipped)
    fingerprint: str


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageOutcome]
    metrics: dict[str, Any] | None  # metrics.json
    data_findings: list[Finding]  # the data audit's, most severe first
    model_findings: list[Finding]  # the model audit's (every dataset), most severe first
    report: Path
    seconds: float = 0.0

    def stage(self, name: str) -> StageOutcome:
        return next(s for s in self.stages if s.name == name)

    @property
    def findings(self) -> list[Finding]:
        """Both audits' findings, most severe first."""
        return sort_findings(self.data_findings + self.model_findings)


@dataclass
class _Stage:
    name: str
    inputs: dict[str, Any]
    outputs: list[Path]  # all must exist for a matching marker to count
    action: Callable[[], None]
    optional: tuple[str, ...] = ()  # glob patterns (in the run) of outputs written sometimes
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        self.fingerprint = S.fingerprint({"stage": self.name, **self.inputs})


def run_pipeline(
    roots: Sequence[Path | str],
    options: PipelineOptions,
    out_dir: Path | str,
    force: bool = False,
    console: Console | None = None,
) -> PipelineResult:
    """Run every stage into ``out_dir`` (see the module docstring), skipping the finished ones
    whose inputs are unchanged; return what the run holds at the end."""
    start = time.perf_counter()
    console = console or Console()
    if isinstance(roots, str | os.PathLike):  # one folder, not a sequence of characters
        roots = [roots]
    roots = [Path(r).resolve() for r in roots]
    if not roots:
        raise BraincamError("no dataset folder given")
    for root in roots:
        if not root.is_dir():
            raise BraincamError(f"{root} is not a directory")
    options.validate()
    options = _resolved_guide(options)
    check_outside_data(out_dir, [*roots, *options.extra, *_guide_data(options)])
    check_spares(out_dir, [*roots, *options.extra, *_guide_paths(options)], deletes=False)
    run = RunDir(Path(out_dir))
    plan = _plan(run, roots, options)
    markers = {stage.name: S.read_marker(run, stage.name) for stage in plan}
    redone = [s.name for s in plan if markers[s.name] and markers[s.name].fingerprint
              != s.fingerprint]
    check_run_dir(run, roots, options, force, redone)
    check_rewritten(run, plan, markers, force)
    with _exclusive(run):
        return _run_stages(run, roots, options, plan, markers, set(redone), console, start)


def check_rewritten(run: RunDir, plan: list[_Stage], markers: dict[str, Any],
                    force: bool) -> None:
    """Refuse, unless ``force``, a run whose finished stages' files another command wrote
    since (``braincam evaluate RUN --data X --force``): skipping them would show that
    command's figures beside the stages' own, and redoing them would replace its work."""
    if force:
        return
    changed = {s.name: S.rewritten(run, markers[s.name]) for s in plan
               if markers[s.name] is not None and markers[s.name].fingerprint == s.fingerprint}
    changed = {name: files for name, files in changed.items() if files}
    if changed:
        name, files = next(iter(changed.items()))
        raise BraincamError(
            f"{run.root} holds {files[0]}, written by another command since braincam run made "
            f"it ({', '.join(changed)} would be redone); pass --force to redo them, or choose "
            "another --out")


def _run_stages(run: RunDir, roots: list[Path], options: PipelineOptions, plan: list[_Stage],
                markers: dict[str, Any], changed: set[str], console: Console,
                start: float) -> PipelineResult:
    """The stages of ``plan`` in order; ``changed``: the finished ones whose inputs changed."""
    for name in changed:  # to be redone: an interrupted command resumes them, not refuses
        S.clear_marker(run, name)
    atomic_write_json(run.stages / PIPELINE_FILE, _identity(roots, options))

    outcomes = []
    ran: set[str] = set()  # fingerprints of the stages that ran: their dependants run too
    for i, stage in enumerate(plan, 1):
        head = f"[{i}/{len(plan)}] {stage.name}"
        marker = markers[stage.name]
        same = marker is not None and marker.fingerprint == stage.fingerprint
        after = [v for v in stage.inputs.values() if isinstance(v, str) and v in ran]
        if same and _exist([*stage.outputs, *(run.root / p for p in marker.produced)]) \
                and not after and not S.rewritten(run, marker):
            console.print(f"{head}: done, skipped")
            outcomes.append(StageOutcome(stage.name, "skipped", 0.0, stage.fingerprint))
            continue
        reason = ("a stage it reads ran again" if same and after else
                  "outputs missing or written by another command" if same else
                  "inputs changed" if stage.name in changed else "running")
        console.rule(f"{head}: {reason}", align="left")
        S.clear_marker(run, stage.name)
        if stage.name != "train" and not ran:  # the model is kept: this command makes the rest
            _record_command(run, options.command)
        began = time.perf_counter()
        stage.action()
        seconds = time.perf_counter() - began
        produced = tuple(sorted(str(p.relative_to(run.root)) for pattern in stage.optional
                                for p in run.root.glob(pattern)))
        # config.yaml takes each run's command; a report rebuilt by braincam report is the same
        stamped = [] if stage.name == "report" else [p for p in stage.outputs if p != run.config]
        S.write_marker(run, stage.name, stage.fingerprint, stage.inputs, seconds, produced,
                       S.file_stamps(run, [*stamped, *(run.root / p for p in produced)]))
        ran.add(stage.fingerprint)
        console.print(f"{head}: done in {seconds:.1f} s")
        outcomes.append(StageOutcome(stage.name, "ran", seconds, stage.fingerprint))
    return PipelineResult(
        run.root, outcomes, _read_json(run.metrics), *collect_findings(run), run.report,
        time.perf_counter() - start,
    )


def _record_command(run: RunDir, command: str | None) -> None:
    """``config.yaml``'s ``command`` (the report's "Command") becomes this one when stages
    after training run again on the kept model (its training settings are the same, or
    the train stage would run): the command that made the run's outputs as they now are."""
    if not command or not run.config.is_file():
        return
    try:
        config = run.read_config()
    except BraincamError:
        return
    if config.get("command") != command:
        atomic_write_yaml(run.config, {**config, "command": command})


@contextlib.contextmanager
def _exclusive(run: RunDir) -> Iterator[None]:
    """Hold ``RUN/.stages/lock`` while the stages run: a second ``braincam run`` on the same
    folder stops at once instead of interleaving its files with this one's (POSIX ``flock``;
    released when the process ends, however it ends)."""
    run.stages.mkdir(parents=True, exist_ok=True)
    with open(run.stages / LOCK_FILE, "w") as handle:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no lock
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BraincamError(f"{run.root} is being written by another braincam run; wait "
                                "for it to finish or choose another --out") from None
        yield


def _resolved_guide(options: PipelineOptions) -> PipelineOptions:
    """``--guide``'s parts as absolute paths: a segment run or folder is the same guide
    however it is spelt, and wherever the command runs from."""
    from braincam.train.guide import resolved_guide

    guide = options.train.guide
    if not guide:
        return options
    return dataclasses.replace(options, train=dataclasses.replace(
        options.train, guide=resolved_guide(guide)))


def _guide_data(options: PipelineOptions) -> list[Path]:
    """``--guide``'s dataset folders (its segment runs left out)."""
    from braincam.train.guide import guide_parts

    return list(guide_parts(options.train.guide)[1]) if options.train.guide else []


def _guide_paths(options: PipelineOptions) -> list[Path]:
    from braincam.train.guide import guide_parts

    if not options.train.guide:
        return []
    runs, data = guide_parts(options.train.guide)
    return [*runs, *data]


def check_run_dir(run: RunDir, roots: Sequence[Path], options: PipelineOptions, force: bool,
                  redone: Sequence[str] | None = None) -> None:
    """Refuse (BraincamError), unless ``force``, to run into a directory another command
    wrote, or into a run made with other data roots or options when that would redo finished
    stages. ``redone``: the finished stages whose inputs changed (None: assume any)."""
    check_folders(run.root)
    stored = _read_json(run.stages / PIPELINE_FILE)
    if stored is None:  # not a braincam run folder: anything in it is someone else's
        foreign = sorted(p.name for p in run.root.iterdir()
                         if p.name not in (".stages", OUTPUT_STAMP)) if run.root.is_dir() else []
        if foreign and not braincam_wrote(run.root):
            raise BraincamError(f"{run.root} holds {foreign[0]}, which braincam did not write: "
                                "choose another --out")
        if foreign and not force:  # another command's output (braincam train's)
            raise BraincamError(
                f"{run.root} holds {foreign[0]}, not written by braincam run; pass --force to "
                "run the pipeline there (its outputs are replaced) or choose another --out"
            )
        return
    if force:
        return
    current = json.loads(json.dumps(_identity(roots, options)))
    changed = _differences(stored.get("data"), current["data"], "data") + _differences(
        stored.get("options"), current["options"])
    if changed and (redone is None or redone):
        stages = f" ({', '.join(redone)} would be redone)" if redone else ""
        raise BraincamError(
            f"{run.root} holds a run made with other options ({'; '.join(changed[:3])}){stages}; "
            "pass --force to redo the stages they affect, or choose another --out"
        )
    if redone:  # same options: the data, or a guide's segmenter, changed since
        raise BraincamError(
            f"{run.root} holds a run whose inputs changed since ({', '.join(redone)} would be "
            "redone: files of the data or of a --guide run were added, edited or touched); "
            "pass --force to redo them, or choose another --out")


def collect_findings(run: RunDir) -> tuple[list[Finding], list[Finding]]:
    """Findings of the data audit and of the model audit, each most severe first; malformed
    entries are left out. The model audit lists every dataset's findings at its top level,
    each prefixed ``[dataset]``."""
    data_audit = _read_json(run.data_audit_json) or {}
    audit = _read_json(run.audit_json) or {}
    model = audit.get("findings") if isinstance(audit.get("findings"), list) else []
    return _findings(data_audit.get("findings") or []), _findings(model)


def _findings(raw: list[Any]) -> list[Finding]:
    found = []
    for item in raw:
        try:
            found.append(Finding.from_dict(item))
        except (AttributeError, TypeError, ValueError):
            continue
    return sort_findings(found)


def _plan(run: RunDir, roots: list[Path], options: PipelineOptions) -> list[_Stage]:
    """The stages in order, with their inputs, outputs and actions."""
    from braincam.train.guide import guide_plan

    config = options.train
    data = S.data_fingerprint(roots)
    extra = _extra_inputs(options.extra)
    audit_inputs = {"data": data, "task": config.task, "split": config.split,
                    "seed": config.carve_seed, "n_boot": options.n_boot}
    if options.extra:  # checked for copies of the training images
        audit_inputs |= extra
    audit_stage = _Stage(
        "data-audit", audit_inputs,
        [run.data_audit / name for name in DATA_AUDIT_FILES if name != "duplicate_grid.png"],
        lambda: _data_audit(run, roots, options), (f"{run.data_audit.name}/duplicate_grid.png",),
    )
    train_inputs = {"data": data, "train": options.train_inputs()}
    guide = guide_plan(config.guide) if config.guide else None
    if guide is not None and guide.data:  # they train the guide's segmenter inside this stage
        train_inputs["guide_data"] = S.data_fingerprint(guide.data)
    if guide is not None and guide.runs:  # a retrained segment run is another guide
        train_inputs["guide_runs"] = S.model_fingerprint(guide.runs)
    trained_guide = [RunDir(run.guide).model] if guide is not None and guide.data else []
    train = _Stage("train", train_inputs,
                   [run.config, run.model, run.split, run.history, *trained_guide],
                   lambda: _train(run, roots, options))
    evaluate = _Stage(
        "evaluate", {"train": train.fingerprint, **extra, "n_boot": options.n_boot},
        [run.metrics, run.predictions], lambda: _evaluate(run, options),
        ("confusion_*.png", "roc_*.png"),
    )
    model_audit = _Stage(
        "model-audit",
        {"train": train.fingerprint, "data": data, **extra,
         "methods": list(options.methods), "explain_cap": options.explain_cap,
         "settings": asdict(options.audit), "regions": options.to_dict()["regions"]},
        [run.audit_json, run.audit_images],
        lambda: _model_audit(run, roots, options),
        (str(run.audit.relative_to(run.root) / EXAMPLES_FILE),),
    )
    explain = _Stage(
        "explain", {"model-audit": model_audit.fingerprint, "methods": list(options.methods)},
        [p for m in options.methods for p in (run.explanations(m), run.explain / m / "overlays")],
        lambda: _explain(run, roots, options),
    )
    done = [audit_stage, train, evaluate, model_audit, explain]
    guide_page = [RunDir(run.guide).report] if trained_guide else []
    report = _Stage("report", {s.name: s.fingerprint for s in done}, [run.report, *guide_page],
                    lambda: _report(run))
    return [*done, report]


def _extra_inputs(extra: Sequence[Path]) -> dict[str, Any]:
    """The ``--data`` folders as stage inputs: each one's data fingerprint and, where two
    share a folder name, their order too, which names them (``X``, then ``X_``)."""
    inputs: dict[str, Any] = {"extra": S.data_fingerprint(list(extra))}
    names = [Path(e).resolve().name for e in extra]
    if len(set(names)) < len(set(Path(e).resolve() for e in extra)):
        inputs["extra_order"] = list(dict.fromkeys(str(Path(e).resolve()) for e in extra))
    return inputs


def _data_audit(run: RunDir, roots: list[Path], options: PipelineOptions) -> None:
    from braincam.audit.data.run import audit_data

    _remove(run.data_audit)
    config = options.train
    audit_data(roots, task=config.task, split_strategy=config.split, out_dir=run.data_audit,
               n_boot=options.n_boot, seed=config.carve_seed, others=options.extra)


def _train(run: RunDir, roots: list[Path], options: PipelineOptions) -> None:
    """``train_run`` into an empty work folder (it refuses or wipes a non-empty one, and the
    run already holds the data audit), then its files move into the run. A guide segmenter
    trained before (the run's, or one an interrupted training finished in the work folder)
    waits there: ``train_run`` keeps it, and reuses it if its data and settings are unchanged
    (``braincam.train.guide.finished``)."""
    from braincam.train import train_run

    work = run.stages / TRAIN_WORK
    if run.guide.is_dir() and not (work / run.guide.name).exists():  # train_run may reuse it
        work.mkdir(parents=True, exist_ok=True)
        os.replace(run.guide, work / run.guide.name)
    train_run(roots, options.train, work, force=True, progress=options.progress,
              command=options.command)
    for stale in train_owned(run):  # the replaced model's files the new one does not have
        if (work / stale.name).exists():
            continue
        if stale.is_dir():
            _remove(stale)
        else:
            stale.unlink(missing_ok=True)
    for item in sorted(work.iterdir()):
        target = run.root / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    work.rmdir()


def _evaluate(run: RunDir, options: PipelineOptions) -> None:
    from braincam.evaluate import evaluate_run

    evaluate_run(run.root, options.extra, force=True, device=options.train.device,
                 n_boot=options.n_boot, progress=options.progress)


def _model_audit(run: RunDir, roots: list[Path], options: PipelineOptions) -> None:
    from braincam.audit.model.run import audit_model

    _remove(run.audit)
    audit_model(run.root, [*roots, *options.extra], methods=options.methods, out_dir=run.audit,
                max_images=options.explain_cap, regions=options.region_masks(),
                settings=options.audit,
                device=options.train.device, force=True, progress=options.progress)


def _explain(run: RunDir, roots: list[Path], options: PipelineOptions) -> None:
    """Every method on the images the model audit looked at, one folder per method."""
    from braincam.data.preprocess import preprocess_config
    from braincam.device import device_of
    from braincam.explain.files import explain_files
    from braincam.models import load_checkpoint
    from braincam.models.checkpoint import meta_task
    from braincam.pipeline.images import audited_items

    _remove(run.explain)
    model, meta = load_checkpoint(run.model, device=device_of(options.train.device))
    items = audited_items(run.audit_images, [*roots, *options.extra])
    for method in options.methods:
        explain_files(model, items, preprocess_config(meta), meta["classes"],
                      meta_task(meta, run.model), run.explain / method, method=method,
                      progress=options.progress)


def _report(run: RunDir) -> None:
    """``RUN/guide/report.html`` for a segmenter trained into the run, then ``RUN/report.html``
    (which links the guide's page)."""
    from braincam.models.segment import is_segment_run
    from braincam.report import build_report

    if is_segment_run(run.guide):
        build_report(run.guide)
    build_report(run.root)


def _identity(roots: Sequence[Path], options: PipelineOptions) -> dict[str, Any]:
    """What a run directory is for: its data roots and result-deciding options."""
    return {"data": [str(Path(r).resolve()) for r in roots], "options": options.to_dict()}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(old.get(key), new.get(key), name)
        return out
    return [] if old == new else [f"{prefix or 'value'}: {old!r} -> {new!r}"]


def _exist(paths: Sequence[Path]) -> bool:
    return all(p.exists() for p in paths)


def _remove(path: Path) -> None:
    """A stage's own output folder goes before the stage reruns (no stale files left)."""
    if path.is_dir():
        shutil.rmtree(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
