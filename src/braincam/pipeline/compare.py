"""``compare_runs``: the headline numbers of several runs side by side.

Per run (a row), from ``metrics.json`` and ``audit/audit.json``:

- ``accuracy``, ``balanced_accuracy``: in-domain test split; ``leak_free_accuracy``: its
  leak-free subset; ``balanced_accuracy@<dataset>``: each extra (cross-dataset) folder;
- ``background_share``: share of CAM energy outside the head (attention check);
- ``energy_in_box_ratio``: share of CAM energy in the tumour box over the box's area share;
  ``energy_in_box_ratio@<dataset>`` for each other audited dataset with boxes (the in-domain
  data often has none, an extra dataset such as Figshare's has);
- ``background_only_survival``, ``head_only_flip_rate``, ``intensity_swap_flip_rate``,
  ``tumor_removal_flip_rate``: the counterfactual rates;
- against expert tumour masks (the mask-aware audit, ``docs/audit.md``), where an audited
  dataset has them: ``mask_pointing_game``, ``mask_pointing_ceiling`` (the highest pointing
  game the map's grid allows) and ``mask_dice`` (``localization.mask``: ``pointing_game``,
  ``pointing_ceiling``, ``dice`` of the map's top-k region), ``energy_in_mask_ratio``, and the
  removal rates ``mask_removal_flip_rate``, ``control_removal_flip_rate`` (the same shape
  inpainted in tumour-free brain), ``tumor_effect_flip_rate`` (their difference) and
  ``lesion_view_balanced_accuracy`` (a view of the tumour against a view of tumour-free brain
  cut from the same slice; ``docs/audit.md``); with
  ``@<dataset>`` for each audited dataset other than the in-domain one. These columns appear
  only when some run has a number for them.

With two or more runs that wrote ``predictions.csv``, the leak-free figures are also
computed on common ground: each run's leak-free subset differs (a guided run also leaves out
what its segmenter learnt from), so ``shared_leak_free_balanced_accuracy`` and
``balanced_accuracy@<dataset>, leak-free in every run`` score every run on the images that
are leak-free in all of them (present in each run's set, ``leak_free`` true in each);
``shared_leak_free_n`` in ``compare.json`` gives their number per set.

A model audit of several datasets is read for its in-domain entry (the dataset named like one
of the run's data roots in config.yaml, or a run's only one), box ratios for every dataset. An
audit of several datasets without an in-domain one (a model spec's, whose folder names no
data roots, or a run audited on other data only) gives every column as
``<column>@<dataset>``, so two such folders line up by dataset whatever the order of their
``--data`` folders.
Per-method checks are read for ``gradcam`` when the audit has it (``by_method``, or one block
per method), else for the method at the top level. Missing numbers are None (``-`` in the
table and compare.csv, null in compare.json).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braincam.audit.model import CHECKS
from braincam.errors import BraincamError
from braincam.evaluate.run import COMBINED, extra_sets
from braincam.models.foreign.spec import is_spec
from braincam.models.segment import is_segment_run
from braincam.report.segmenter import is_score_folder
from braincam.runs import (
    RunDir,
    atomic_save_figure,
    atomic_write_json,
    atomic_write_text,
    json_object,
    true_flags,
)

PERFORMANCE = ("accuracy", "balanced_accuracy", "leak_free_accuracy")
EXTRA_PREFIX = "balanced_accuracy@"
BOX_PREFIX = "energy_in_box_ratio@"
RATES = ("background_share", "background_only_survival", "head_only_flip_rate",
         "intensity_swap_flip_rate", "tumor_removal_flip_rate")
RATIOS = ("energy_in_box_ratio",)
REMOVAL_RATES = ("mask_removal_flip_rate", "control_removal_flip_rate", "tumor_effect_flip_rate")
VIEW_RATES = ("lesion_view_balanced_accuracy",)
MASK_RATES = ("mask_pointing_game", "mask_pointing_ceiling", "mask_dice", *REMOVAL_RATES,
              *VIEW_RATES)
MASK_RATIOS = ("energy_in_mask_ratio",)
SHARED = "shared_leak_free_balanced_accuracy"
SHARED_SUFFIX = ", leak-free in every run"
PREFERRED_METHOD = "gradcam"
MISSING = "-"


@dataclass
class Comparison:
    """``rows[i][column]`` for run ``runs[i]`` (None where missing)."""

    runs: list[str]
    paths: list[Path]
    columns: list[str]
    rows: list[dict[str, float | None]]
    shared_n: dict[str, int] = field(default_factory=dict)  # images per shared leak-free set
    tasks: list[str | None] = field(default_factory=list)  # each run's task (metrics.json)
    cautions: list[str] = field(default_factory=list)  # numbers side by side that differ in kind

    @property
    def note(self) -> str | None:
        """A warning when the runs solve different tasks (their numbers have other chances),
        scored other images under one set name, or were audited on other rows."""
        notes = list(self.cautions)
        if len({t for t in self.tasks if t}) >= 2:
            notes.insert(0, "the runs solve different tasks (" + ", ".join(
                f"{name}: {task}" for name, task in zip(self.runs, self.tasks, strict=True)
                if task) + "): accuracies have other chance levels and do not compare")
        return "; ".join(notes) or None

    def cell(self, run: str, column: str) -> float | None:
        return self.rows[self.runs.index(run)][column]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "shared_leak_free_n": self.shared_n, "note": self.note,
                "runs": [{"run": name, "path": str(Path(path).absolute()), **row}
                         for name, path, row in zip(self.runs, self.paths, self.rows,
                                                    strict=True)]}

    def to_table(self):  # -> rich.table.Table
        """One row per number and one column per run (runs are few, numbers many), 3
        decimals, ``-`` where missing."""
        from rich.table import Table

        caption = ("leak-free in every run: " + ", ".join(
            f"{name} {n} images" for name, n in self.shared_n.items())) if self.shared_n else None
        table = Table(title="runs compared", title_justify="left", caption=caption,
                      caption_justify="left")
        table.add_column("")
        for name in self.runs:
            table.add_column(name, justify="right", overflow="fold")
        for column in self.columns:
            table.add_row(column.replace("_", " "), *(
                MISSING if row[column] is None else f"{row[column]:.3f}" for row in self.rows))
        return table

    def to_csv(self) -> str:
        import io

        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=self.columns, dtype=object)
        frame.insert(0, "run", self.runs)
        buf = io.StringIO()
        frame.to_csv(buf, index=False, na_rep=MISSING)
        return buf.getvalue()


def compare_runs(run_dirs: Sequence[Path | str]) -> Comparison:
    """Read every run, or a model spec's output folder (BraincamError for a path that is not
    a directory or holds neither metrics.json nor audit/audit.json)."""
    if not run_dirs:
        raise BraincamError("give at least one run directory")
    paths = [Path(p) for p in run_dirs]
    rows, extras, boxes, masks, rates, tasks, audit_rows = [], [], [], [], [], [], []
    for path in paths:
        if is_spec(path):
            raise BraincamError(f"{path} is a model spec: compare the folder its evaluate and "
                                "audit wrote into (their --out DIR)")
        if not path.is_dir():
            raise BraincamError(f"{path} is not a directory")
        run = RunDir(path)
        if is_segment_run(path) or is_score_folder(path):
            raise BraincamError(f"{path} is a segment run (braincam segment) or its scores, "
                                f"not a classifier run; braincam report {path} shows them")
        metrics, audit = _read(run.metrics), _read(run.audit_json)
        broken = [f for f, doc in ((run.metrics, metrics), (run.audit_json, audit))
                  if doc is None and f.exists()]
        if broken:
            raise BraincamError(f"{broken[0]} cannot be read as a JSON object (a half-written "
                                "file?); run the command that writes it again")
        if metrics is None and audit is None:
            raise BraincamError(f"{path} holds neither metrics.json nor audit/audit.json")
        row = _metric_values(metrics or {}) | _audit_values(audit or {}, _root_names(run))
        task = (metrics or {}).get("task")
        tasks.append(task if isinstance(task, str) else None)
        audit_rows.append((audit or {}).get("rows"))
        extras += [k for k in row if k.startswith(EXTRA_PREFIX) and k not in extras]
        boxes += [k for k in row if k.startswith(BOX_PREFIX) and k not in boxes]
        masks += [k for k in row if _mask_key(k) and row[k] is not None and k not in masks]
        rates += [k for k in row if _rate_key(k) and row[k] is not None and k not in rates]
        rows.append(row)
    tables = [_predictions(RunDir(p)) for p in paths]
    shared, shared_n = _shared_leak_free(tables)
    for row, values in zip(rows, shared or [{}] * len(rows), strict=True):
        row |= values
    shared_columns = list(shared[0]) if shared else []
    mask_rates = [k for k in masks if _mask_key(k) in MASK_RATES]
    mask_ratios = [k for k in masks if _mask_key(k) in MASK_RATIOS]
    columns = [*PERFORMANCE, *[c for c in shared_columns if c == SHARED], *extras,
               *[c for c in shared_columns if c != SHARED], *RATES, *rates, *mask_rates, *RATIOS,
               *boxes, *mask_ratios]
    rows = [{c: row.get(c) for c in columns} for row in rows]
    names = _names(paths)
    cautions = [*_other_images(tables, names), *_other_audit_rows(audit_rows, names)]
    return Comparison(names, paths, columns, rows, shared_n, tasks, cautions)


def _predictions(run: RunDir):  # -> pandas.DataFrame | None
    """The run's ``predictions.csv``, None when it has none or it cannot be read."""
    import pandas as pd

    try:
        return pd.read_csv(run.predictions)
    except (OSError, ValueError):
        return None


def _other_images(tables: list, names: list[str]) -> list[str]:
    """A caution per extra set name under which two runs' ``predictions.csv`` (``tables``)
    list other images (two folders of one name): their ``balanced_accuracy@<set>`` share a
    column but not their data."""
    images: dict[str, dict[str, frozenset[str]]] = {}  # set -> run -> its image paths
    for table, name in zip(tables, names, strict=True):
        if table is None or not {"path", "split", "dataset"} <= set(table.columns):
            continue
        extra = table[table["split"] == "extra"]
        for dataset, rows in extra.groupby("dataset"):
            images.setdefault(str(dataset), {})[name] = frozenset(rows["path"].astype(str))
    return [f"{EXTRA_PREFIX}{dataset}: the runs scored other images under that name ("
            + ", ".join(f"{run} {len(seen)}" for run, seen in runs.items()) + ")"
            for dataset, runs in images.items() if len(set(runs.values())) > 1]


def _other_audit_rows(audit_rows: list[Any], names: list[str]) -> list[str]:
    """A caution when the runs' model audits read other rows (``audit.json`` ``rows``: unseen
    images, or with ``--validation`` the run's validation images)."""
    rows = {name: kind for name, kind in zip(names, audit_rows, strict=True)
            if isinstance(kind, str)}
    if len(set(rows.values())) < 2:
        return []
    return ["the audits read other images (" + ", ".join(
        f"{name}: {kind}" for name, kind in rows.items()) + "): their rates do not compare"]


def _shared_leak_free(tables: list) -> tuple[list[dict[str, float]], dict[str, int]]:
    """Per run, the balanced accuracy of each evaluated set (``test``, each extra dataset) on
    the images leak-free in every run (module docstring), and those sets' sizes; nothing
    unless every run (two or more) has a ``predictions.csv`` (``tables``) with ``leak_free``."""
    if len(tables) < 2 or any(t is None or not {
            "path", "split", "dataset", "leak_free", "label", "pred"} <= set(t.columns)
            for t in tables):
        return [], {}
    tables = [t.assign(set=t["dataset"].where(t["split"] == "extra", t["split"]),
                       free=true_flags(t["leak_free"])) for t in tables]
    values: list[dict[str, float]] = [{} for _ in tables]
    shared_n = {}
    for name in tables[0].loc[tables[0]["split"].isin(["test", "extra"]), "set"].unique():
        common = None
        for t in tables:
            free = set(t.loc[(t["set"] == name) & t["free"], "path"])
            common = free if common is None else common & free
        if not common:
            continue
        key = SHARED if name == "test" else f"{EXTRA_PREFIX}{name}{SHARED_SUFFIX}"
        shared_n[str(name)] = len(common)
        for t, out in zip(tables, values, strict=True):
            rows = t[(t["set"] == name) & t["path"].isin(common)]
            out[key] = _balanced_accuracy(rows["label"].to_numpy(), rows["pred"].to_numpy())
    return values, shared_n


def _balanced_accuracy(truth, pred) -> float:
    """scikit-learn's balanced accuracy: the mean recall of the true classes present, so a
    one-class set (Figshare: tumours only) scores its recall; sklearn warns about predicted
    classes absent from ``truth`` there, which is expected."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(truth, pred))


def write_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """``compare.csv``, ``compare.json`` and ``compare.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / name for name in ("compare.csv", "compare.json", "compare.png")]
    atomic_write_text(files[0], comparison.to_csv())
    atomic_write_json(files[1], comparison.to_dict())
    atomic_save_figure(files[2], comparison_figure(comparison), dpi=120, bbox_inches="tight")
    return files


def comparison_figure(comparison: Comparison):  # -> matplotlib Figure
    """Grouped horizontal bars, one colour per run: accuracies, then shares and rates (both
    on [0, 1]), then the energy-in-box ratio (its own scale, 1 = chance)."""
    import numpy as np
    from matplotlib.figure import Figure

    panels = [
        ("accuracy (in-domain, leak-free, cross-dataset)",
         [c for c in comparison.columns
          if c in PERFORMANCE or c == SHARED or c.startswith(EXTRA_PREFIX)]),
        ("shortcut and grounding signals: shares and rates",
         [c for c in comparison.columns
          if c in RATES or _rate_key(c) or _mask_key(c) in MASK_RATES]),
        ("energy in tumour box or mask / its area (1 = chance)",
         [c for c in comparison.columns
          if c in RATIOS or c.startswith(BOX_PREFIX) or _mask_key(c) in MASK_RATIOS]),
    ]
    heights = [len(cols) + 1 for _, cols in panels]
    fig = Figure(figsize=(8, 0.45 * sum(heights) + 1.5))
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights})
    n = len(comparison.runs)
    width = 0.8 / n
    for ax, (title, cols) in zip(axes, panels, strict=True):
        y = np.arange(len(cols))
        for i, (name, row) in enumerate(zip(comparison.runs, comparison.rows, strict=True)):
            values = [np.nan if row[c] is None else row[c] for c in cols]
            ax.barh(y + (i - (n - 1) / 2) * width, values, height=width, label=name,
                    color=f"C{i % 10}")
        ax.set_yticks(y, [c.replace("_", " ") for c in cols], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9, loc="left")
        if title.startswith("energy"):
            ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        else:
            ax.set_xlim(0, 1)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _metric_values(metrics: dict[str, Any]) -> dict[str, float | None]:
    test, leak_free = json_object(metrics.get("test")), json_object(metrics.get("test_leak_free"))
    row = {"accuracy": test.get("accuracy"), "balanced_accuracy": test.get("balanced_accuracy"),
           "leak_free_accuracy": leak_free.get("accuracy")}
    for s in extra_sets(metrics):
        if s.name != COMBINED:
            key = EXTRA_PREFIX + s.name + (", leak-free" if s.leak_free else "")
            row[key] = (s.metrics or {}).get("balanced_accuracy")
    return {k: _number(v) for k, v in row.items()}


def _audit_values(audit: dict[str, Any], in_domain: list[str]) -> dict[str, float | None]:
    blocks = _blocks(audit)
    spec = isinstance(audit.get("model"), dict)  # a model spec's: no in-domain data at all
    # one audited set of a run whose data is unknown: its own (nothing else to mix it up with)
    lone = next(iter(blocks)) if len(blocks) == 1 and not spec and not in_domain else None
    own = next((n for n in in_domain if n in blocks), lone)
    row: dict[str, Any] = _dataset_values(blocks[own]) if own is not None else {}
    for name, other in blocks.items():  # boxes and masks often exist only in an extra dataset
        if name == own:
            continue
        if _number(_box_ratio(other)) is not None:
            row[BOX_PREFIX + name] = _box_ratio(other)
        values = _dataset_values(other) if own is None else _mask_values(other)
        row |= {f"{k}@{name}": v for k, v in values.items() if k not in RATIOS}
    return {k: _number(v) for k, v in row.items()}


def _dataset_values(checks: dict[str, Any]) -> dict[str, Any]:
    """Every column one dataset's checks give (unsuffixed)."""
    attention = _one_method(checks.get("attention"))
    counterfactual = json_object(checks.get("counterfactual"))
    row = {"background_share": attention.get("background"),
           "energy_in_box_ratio": _box_ratio(checks)}
    row |= {c: counterfactual.get(c) for c in RATES if c != "background_share"}
    return row | _mask_values(checks)


def _mask_values(checks: dict[str, Any]) -> dict[str, Any]:
    """The mask-based numbers of one dataset's checks (None where absent)."""
    mask = _one_method(checks.get("localization")).get("mask")
    mask = json_object(mask)
    counterfactual = json_object(checks.get("counterfactual"))
    return {"mask_pointing_game": mask.get("pointing_game"),
            "mask_pointing_ceiling": mask.get("pointing_ceiling"), "mask_dice": mask.get("dice"),
            "energy_in_mask_ratio": mask.get("energy_in_mask_ratio"),
            **{k: counterfactual.get(k) for k in REMOVAL_RATES + VIEW_RATES}}


def _mask_key(column: str) -> str | None:
    """The mask-based number a column holds (``name`` or ``name@dataset``), else None."""
    name = column.split("@")[0]
    return name if name in MASK_RATES + MASK_RATIOS else None


def _rate_key(column: str) -> str | None:
    """The rate a ``rate@dataset`` column holds (audits without in-domain data), else None."""
    name, at, _ = column.partition("@")
    return name if at and name in RATES else None


def _blocks(audit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Dataset name -> its checks (the ``datasets`` blocks of audit.json)."""
    nested = audit.get("datasets") if isinstance(audit.get("datasets"), dict) else {}
    return {str(k): v for k, v in nested.items()
            if isinstance(v, dict) and any(key in v for key in CHECKS)}


def _box_ratio(checks: dict[str, Any]) -> Any:
    return _one_method(checks.get("localization")).get("energy_in_box_ratio")


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _root_names(run: RunDir) -> list[str]:
    """Folder names of the run's data roots (config.yaml ``data``), the model audit's
    dataset names for in-domain images."""
    try:
        return [root.name for root in run.data_roots()]
    except BraincamError:
        return []


def _one_method(values: Any) -> dict[str, Any]:
    """A check's numbers, flat or per explanation method (gradcam preferred)."""
    if not isinstance(values, dict):
        return {}
    by_method = values.get("by_method")
    if isinstance(by_method, dict) and isinstance(by_method.get(PREFERRED_METHOD), dict):
        return by_method[PREFERRED_METHOD]
    per_method = {k: v for k, v in values.items() if isinstance(v, dict)}
    if per_method and len(per_method) == len(values):
        return per_method.get(PREFERRED_METHOD) or next(iter(per_method.values()))
    return values


def _names(paths: list[Path]) -> list[str]:
    """Folder names; where two runs share one, ``parent/name``; then a numeric suffix."""
    names = [p.resolve().name for p in paths]
    names = [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n
             for p, n in zip(paths, names, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _read(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
