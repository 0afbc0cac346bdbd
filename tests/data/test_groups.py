"""Patient-proxy groups (numbered slices that look alike) and the splits that respect them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braincam.data.groups import correlation, merged_groups, patient_groups
from braincam.data.records import ImageRecord, load_dataset
from braincam.data.splits import make_split
from braincam.errors import BraincamError


def _patient(seed):
    return np.random.default_rng(seed).integers(0, 255, (40, 40)).astype(np.float64)


def _slice(base, seed):
    """A neighbouring slice: the patient's pattern plus a little noise (correlation ~0.97)."""
    noise = np.random.default_rng(1000 + seed).normal(0, 15, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write(root, label, number, array):
    path = root / label / f"{number}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_runs_of_similar_neighbours_form_groups(tmp_path):
    root = tmp_path / "fig"
    a, b = _patient(1), _patient(2)
    for n in (1, 2, 3):
        _write(root, "glioma", n, _slice(a, n))
    for n in (4, 5):
        _write(root, "glioma", n, _slice(b, n))  # looks different from 3: new patient
    _write(root, "glioma", 7, _slice(b, 7))  # 6 missing: a gap starts a new group
    _write(root, "meningioma", 8, _slice(b, 8))  # same look, other label: new group
    _write(root, "glioma", "x", _slice(a, 9))  # not numbered: a group of its own
    records = load_dataset([root]).records
    ids = dict(zip((r.path.name for r in records), patient_groups(records), strict=True))
    assert ids == {
        "1.png": "fig/p1", "2.png": "fig/p1", "3.png": "fig/p1",
        "4.png": "fig/p4", "5.png": "fig/p4", "7.png": "fig/p7", "8.png": "fig/p8",
        "x.png": f"fig/{root / 'glioma' / 'x.png'}",
    }


def test_numbers_chain_within_a_folder_never_across_folders(tmp_path):
    """Sartaj-like splits with numbered files: Training/tumor/1.png and Testing/no_tumor/1.png
    are unrelated; per-patient subfolders keep each patient's slices together."""
    root = tmp_path / "numbered"
    a, b = _patient(1), _patient(2)
    for split, label, base in (("Training", "tumor", a), ("Testing", "tumor", b),
                               ("Testing", "no_tumor", a)):
        for n in (1, 2):
            _write(root / split, label, n, _slice(base, n))
    for patient, base in (("pat1", a), ("pat2", b)):  # CLASS/patX/0..2.png
        for n in (0, 1, 2):
            _write(root / "Training" / "no_tumor", patient, n, _slice(base, n))
    records = load_dataset([root]).records
    groups = patient_groups(records)
    folder = {(r.path.parent, r.path.name): g for r, g in zip(records, groups, strict=True)}
    by_folder: dict[Path, set[str]] = {}
    for (parent, _), group in folder.items():
        by_folder.setdefault(parent, set()).add(group)
    assert all(len(g) == 1 for g in by_folder.values()), by_folder  # one chain a folder
    assert len(set(groups)) == len(by_folder) == 5  # and no two folders share one
    numbered_once = tmp_path / "fig"  # a source whose numbers are unique keeps short ids
    for n in (1, 2):
        _write(numbered_once, "glioma", n, _slice(a, n))
    _write(numbered_once, "meningioma", 3, _slice(b, 3))
    assert patient_groups(load_dataset([numbered_once]).records) == ["fig/p1", "fig/p1",
                                                                      "fig/p3"]


def test_correlation_is_pearson():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert correlation(a, 2 * a + 1) == 1.0
    assert abs(correlation(a, -a) + 1.0) < 1e-6
    assert correlation(a, np.ones_like(a)) == 0.0


def test_merged_groups_join_duplicates_and_patients():
    duplicate = np.array([0, 1, 1, 2, 3, 4])  # records 1 and 2 are duplicates
    patient = ["p", "q", "r", "r", "s", "p"]  # 2 and 3 one patient, 0 and 5 one patient
    assert merged_groups(duplicate, patient).tolist() == [0, 1, 1, 1, 2, 0]


def test_dedup_split_never_puts_a_merged_group_on_two_sides():
    n = 400
    records = [ImageRecord(Path(f"/d/{i}.png"), "d", None, ("glioma", "meningioma")[i // 40 % 2],
                           64, 64, None) for i in range(n)]
    patient = [f"p{i // 10}" for i in range(n)]  # runs of 10 slices
    duplicate = np.arange(n)
    duplicate[5::50] = duplicate[17::50]  # duplicates across neighbouring patients
    groups = merged_groups(duplicate, patient)
    assert len(np.unique(groups)) < n // 10  # the duplicates chained some patients
    for seed in range(3):
        s = make_split(records, "multiclass", "dedup", seed=seed, groups=groups)
        assert s.counts["straddling_groups"] == 0
        for members in (np.flatnonzero(np.array(patient) == p) for p in set(patient)):
            assert len(set(s.split[members])) == 1


def test_make_split_finds_patient_groups_by_itself(tmp_path):
    root = tmp_path / "fig"
    for p in range(10):
        base = _patient(p)
        for k in range(4):
            n = 4 * p + k + 1
            _write(root, ("glioma", "meningioma")[p % 2], n, _slice(base, n))
    records = load_dataset([root]).records
    s = make_split(records, "multiclass", "dedup", val_fraction=0.2, test_fraction=0.2)
    by_patient: dict[int, set[str]] = {}
    for r, side in zip(records, s.split, strict=True):
        by_patient.setdefault((int(r.path.stem) - 1) // 4, set()).add(str(side))
    assert len(by_patient) == 10 and all(len(sides) == 1 for sides in by_patient.values())
    assert set(s.split) == {"train", "val", "test"} and s.counts["groups"] == 10


def test_too_few_images_per_class_for_the_folds_is_one_line():
    records = [ImageRecord(Path(f"/d/{i}.png"), "d", None, ("glioma", "meningioma")[i % 2],
                           64, 64, None) for i in range(12)]
    with pytest.raises(BraincamError, match="cannot hold out 10% of"):
        make_split(records, "multiclass", "dedup", val_fraction=0.0, test_fraction=0.1,
                   groups=np.arange(12))


def test_the_files_of_one_dicom_study_share_a_group_and_a_side(tmp_path, write_dicom):
    rng = np.random.default_rng(0)
    root = tmp_path / "dicom"
    for c, label in enumerate(("glioma", "no_tumor")):
        (root / label).mkdir(parents=True)
        for study in range(4):  # four patients a class, three slice files each, one folder
            for k in range(3):
                name = f"s{study}_{k}" + (".dcm" if c == 0 else "")  # DICOM files often
                write_dicom(root / label / name,  # have no suffix: found by their marker
                            rng.integers(0, 256, (32, 32), dtype=np.uint8), instance=k + 1,
                            study=f"1.2.826.0.1.{c}.{study}")
    (root / "no_tumor" / "notes").write_text("not an image")
    records = load_dataset([root]).records
    assert len(records) == 24
    groups = patient_groups(records)
    study = [f"{r.label}/{r.path.name.split('_')[0]}" for r in records]
    assert len(set(groups)) == 8
    assert all((groups[i] == groups[j]) == (study[i] == study[j])
               for i in range(len(records)) for j in range(len(records)))
    for seed in range(3):
        split = make_split(records, "binary", "dedup", 0.25, 0.25, seed)
        sides = {}
        for name, side in zip(study, split.split, strict=True):
            sides.setdefault(name, set()).add(str(side))
        assert all(len(s) == 1 for s in sides.values()), sides


def test_volumes_annotated_by_one_label_volume_share_a_group(tmp_path, write_nifti):
    rng = np.random.default_rng(1)
    root = tmp_path / "brats"
    (root / "glioma").mkdir(parents=True)
    (root / "masks" / "glioma").mkdir(parents=True)
    yy, xx = np.mgrid[:48, :48]
    head = ((xx - 24) / 20) ** 2 + ((yy - 24) / 18) ** 2 <= 1
    for patient in range(3):
        labels = np.zeros((3, 48, 48), np.uint8)
        labels[1, 20:26, 20 + 4 * patient:26 + 4 * patient] = 1
        write_nifti(root / "masks" / "glioma" / f"p{patient}_seg.nii.gz", labels)
        for sequence in ("t1", "flair"):  # each sequence linked to the patient's one seg
            image = np.stack([np.where(head, rng.integers(60, 200, (48, 48)), 0)
                              for _ in range(3)]).astype(np.uint8)
            write_nifti(root / "glioma" / f"p{patient}_{sequence}.nii.gz", image)
            (root / "masks" / "glioma" / f"p{patient}_{sequence}.nii.gz").symlink_to(
                root / "masks" / "glioma" / f"p{patient}_seg.nii.gz")
    records = load_dataset([root]).records
    assert len(records) == 18 and all(r.mask is not None for r in records)
    groups = patient_groups(records)
    patient = [r.path.name.split("_")[0] for r in records]
    assert len(set(groups)) == 3
    assert all((groups[i] == groups[j]) == (patient[i] == patient[j])
               for i in range(18) for j in range(18))
