"""``audit_model`` end to end on a small run directory: timm's 100k-parameter
``test_efficientnet`` (random weights, batch-norm statistics set on the data) saved as a
braincam checkpoint, a split.csv, 64-px phantoms."""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from braincam.audit.findings import SEVERITIES
from braincam.audit.model.base import AuditSettings
from braincam.audit.model.examples import EXAMPLES_FILE, TumourExamples
from braincam.audit.model.run import audit_model
from braincam.data.preprocess import PreprocessCache, PreprocessConfig
from braincam.data.records import load_dataset
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.models import build_model, save_checkpoint

SIZE = 64
ARCH = "test_efficientnet"
FAST = AuditSettings(faithfulness_images=6, road_images=2, road_percentiles=(50,),
                     sanity_images=3, occlusion_images=2, steps=5)


def make_run(run_dir, data_root):
    """A binary run 'trained' on the phantoms' Training folder (in name only)."""
    records = load_dataset([data_root]).records
    prep = PreprocessConfig(size=SIZE)
    images, _, _ = PreprocessCache().load(records, prep)
    torch.manual_seed(0)
    model = build_model(ARCH, 2)
    with torch.no_grad():  # batch-norm statistics of these images, so outputs vary
        model.train()(torch.as_tensor(images).float()[:, None].expand(-1, 3, -1, -1) / 255)
    save_checkpoint(model.eval(), run_dir / "model.safetensors", {
        "arch": ARCH, "classes": ["no_tumor", "tumor"], "task": "binary",
        "preprocess": asdict(prep), "dropout": 0.3})
    with open(run_dir / "split.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "source", "label", "split", "group", "leak_free"])
        for i, r in enumerate(records):
            writer.writerow([r.path, r.source, r.label, r.split, i, r.split == "test"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-run")
    data = make_phantom_dataset(root / "phantoms", PhantomSpec(n_per_class=4, size=SIZE,
                                                                shortcut="marker"))
    make_phantom_dataset(root / "phantoms-b", PhantomSpec(n_per_class=3, size=SIZE, seed=5),
                         splits=("test",))
    run = root / "run"
    run.mkdir()
    make_run(run, data)
    return run


def test_audit_writes_json_and_per_image_csv(run_dir):
    data = run_dir.parent / "phantoms"
    doc = audit_model(run_dir, [data], settings=FAST, device="cpu")
    top = json.loads((run_dir / "audit" / "audit.json").read_text())
    assert top == doc
    # one dataset: the same nested shape as several
    assert set(top) == {"run", "rows", "model", "settings", "skipped", "datasets", "findings"}
    assert list(top["datasets"]) == ["phantoms"] and top["model"] is None
    assert top["rows"] == "unseen"
    on_disk = top["datasets"]["phantoms"]
    assert on_disk["dataset"] == "phantoms"
    assert [f["message"] for f in top["findings"]] == [
        f"[phantoms] {f['message']}" for f in on_disk["findings"]]
    assert on_disk["n_images"] == 8  # the 8 Training images are left out (split.csv)
    att = on_disk["attention"]
    assert att["method"] == "gradcam" and "by_method" not in att
    shares = [att[k] for k in ("brain", "rim", "background")]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1, abs=1e-6)
    uniform = [att[f"uniform_{k}"] for k in ("brain", "rim", "background")]
    assert sum(uniform) == pytest.approx(1, abs=1e-6)
    assert set(att["by_class"]) == {"no_tumor", "tumor"}
    loc = on_disk["localization"]
    assert loc["n_images"] == 4  # the tumour images of Testing have boxes
    assert 0 <= loc["pointing_game"] <= 1 and 0 < loc["box_area"] < 0.2
    assert loc["energy_in_box_ratio"] == pytest.approx(loc["energy_in_box"] / loc["box_area"])
    faith = on_disk["faithfulness"]
    assert faith["n_images"] == 6 and faith["n_road"] == 2
    assert len(faith["deletion_curve"]) == 6 and 0 <= faith["deletion_auc"] <= 1
    sanity = on_disk["sanity"]
    assert isinstance(sanity["passed"], bool) and sanity["n_images"] == 3
    assert sanity["layers"][0] == "head" and sanity["layers"][-1] == "backbone.conv_stem"
    assert sanity["similarity_after_randomization"] == sanity["spearman"][-1]
    cf = on_disk["counterfactual"]
    assert cf["n_tumor_removal"] == 4 and cf["n_intensity_swap"] == 8
    assert 1 <= cf["n_occlusion"] <= 2  # maps without any positive drop carry no share
    for key in ("background_only_survival", "head_only_change", "intensity_swap_flip_rate",
                "tumor_removal_flip_rate", "tumor_removal_prob_drop"):
        assert key in cf
    assert all(f["severity"] in SEVERITIES and f["message"] for f in on_disk["findings"])
    # the phantoms' masks/ hold their exact tumours: mask numbers beside the box numbers
    mask = loc["mask"]
    assert mask["n_images"] == 4 and 0 < mask["mask_area"] < loc["box_area"]
    assert 0 <= mask["dice"] <= 1 and set(mask["by_class"]) == {"tumor"}
    assert sum(v["n_images"] for v in mask["by_size"].values()) == 4
    assert loc["occlusion"]["mask"]["n_images"] <= 2
    # the CAM's grid bounds its pointing game; occlusion maps carry no grid
    assert mask["pointing_game"] <= mask["pointing_ceiling"] <= 1
    assert loc["occlusion"]["mask"]["pointing_ceiling"] is None
    assert cf["n_mask_removal"] == 4 and 0 < cf["n_control_removal"] <= 4
    assert cf["tumor_effect_prob_drop"] is not None
    assert 0 < cf["n_lesion_view"] <= 4 and 0 <= cf["lesion_view_balanced_accuracy"] <= 1
    examples = TumourExamples.load(run_dir / "audit" / EXAMPLES_FILE)
    assert len(examples) == 3 and set(examples.groups) == {"tumor"}
    assert examples.masks.any(axis=(1, 2)).all() and examples.method == "gradcam"

    frame = pd.read_csv(run_dir / "audit" / "audit_images.csv")
    assert len(frame) == 8 and set(frame["method"]) == {"gradcam"}
    assert frame["has_box"].sum() == 4 and frame["has_mask"].sum() == 4
    assert frame["localization_mask_dice"].notna().sum() == 4
    assert frame["localization_mask_pointing_reachable"].notna().sum() == 4
    assert frame["control_removal_flipped"].notna().sum() == cf["n_control_removal"]
    assert frame["lesion_view_tumor_p"].notna().sum() == cf["n_lesion_view"]
    assert frame["localization_energy_in_box"].notna().sum() == 4
    assert frame["faithfulness_deletion_auc"].notna().sum() == 6
    np.testing.assert_allclose(frame[["brain", "rim", "background"]].sum(axis=1), 1, atol=1e-5)
    assert not any("Training" in p for p in frame["path"])


def test_existing_audit_needs_force(run_dir, tmp_path):
    data = run_dir.parent / "phantoms"
    out = tmp_path / "audit"
    settings = AuditSettings(faithfulness_images=2, road_images=0, sanity_images=0,
                             occlusion_images=0, steps=2)
    audit_model(run_dir, [data], out_dir=out, max_images=3, settings=settings, device="cpu")
    with pytest.raises(BraincamError, match="audit already holds audit.json; pass --force"):
        audit_model(run_dir, [data], out_dir=out, settings=settings, device="cpu")
    doc = audit_model(run_dir, [data], out_dir=out, max_images=3, settings=settings,
                      device="cpu", force=True)
    block = doc["datasets"]["phantoms"]
    assert block["n_images"] == 3
    assert block["sanity"]["passed"] is None and block["faithfulness"]["road"] is None


def test_several_datasets_and_methods(run_dir, tmp_path):
    roots = [run_dir.parent / "phantoms", run_dir.parent / "phantoms-b"]
    settings = AuditSettings(faithfulness_images=2, road_images=0, sanity_images=2,
                             occlusion_images=0, steps=2)
    corner = np.zeros((SIZE, SIZE), bool)
    corner[:8, :8] = True
    doc = audit_model(run_dir, roots, ["gradcam", "gradcam++"], tmp_path / "a",
                      regions={"marker": corner}, settings=settings, device="cpu")
    assert set(doc["datasets"]) == {"phantoms", "phantoms-b"}
    assert "attention" not in doc
    b = doc["datasets"]["phantoms-b"]
    assert b["n_images"] == 6
    assert set(b["attention"]["by_method"]) == {"gradcam", "gradcam++"}
    assert b["attention"]["regions"]["marker"] is not None
    assert b["attention"]["uniform_regions"]["marker"] == pytest.approx(64 / SIZE**2)
    n_findings = sum(len(block["findings"]) for block in doc["datasets"].values())
    assert len(doc["findings"]) == n_findings
    assert all(f["message"].startswith("[phantoms") for f in doc["findings"])
    frame = pd.read_csv(tmp_path / "a" / "audit_images.csv")
    assert len(frame) == 2 * (8 + 6)


def test_two_folders_of_one_name_are_two_datasets(run_dir, tmp_path):
    import shutil

    twin = shutil.copytree(run_dir.parent / "phantoms-b", tmp_path / "other" / "phantoms-b")
    settings = AuditSettings(faithfulness_images=0, road_images=0, sanity_images=0,
                             occlusion_images=0, steps=2)
    doc = audit_model(run_dir, [run_dir.parent / "phantoms-b", twin], ["gradcam"],
                      tmp_path / "a", settings=settings, device="cpu")
    assert {k: v["n_images"] for k, v in doc["datasets"].items()} == {
        "phantoms-b": 6, "phantoms-b_": 6}
    # a folder named test is keyed test_, as evaluate keys it (its own "test" is the split)
    named_test = shutil.copytree(run_dir.parent / "phantoms-b", tmp_path / "x" / "test")
    doc = audit_model(run_dir, [named_test], ["gradcam"], tmp_path / "b", settings=settings,
                      device="cpu")
    assert list(doc["datasets"]) == ["test_"]


def test_copies_of_training_images_under_other_paths_are_counted(run_dir, tmp_path):
    """Another folder holding a re-encoded training phantom and a noise image: both are
    audited, and the copy is counted and flagged."""
    train = next(iter((run_dir.parent / "phantoms" / "Training" / "tumor").iterdir()))
    folder = tmp_path / "other" / "tumor"
    folder.mkdir(parents=True)
    Image.open(train).convert("L").save(folder / "copy.jpg", quality=90)
    noise = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    doc = audit_model(run_dir, [tmp_path / "other"], out_dir=tmp_path / "a", settings=FAST,
                      device="cpu")
    block = doc["datasets"]["other"]
    assert (block["n_images"], block["n_seen"]) == (2, 1)
    frame = pd.read_csv(tmp_path / "a" / "audit_images.csv")
    assert dict(zip(frame["path"].map(lambda p: Path(p).name), frame["seen"], strict=True)) == {
        "copy.jpg": True, "noise.png": False}


def test_the_images_a_guide_learnt_from_are_not_audited(run_dir, tmp_path, monkeypatch):
    """A guided run (its checkpoint names a guide): the images its segmenter trained or
    validated on are left out like the run's own; a copy of them elsewhere is counted."""
    import braincam.audit.model.run as audit_run
    import braincam.models

    plain = braincam.models.load_checkpoint
    monkeypatch.setattr(braincam.models, "load_checkpoint", lambda *a, **k: (
        lambda loaded: (loaded[0], {**loaded[1], "guide": {"source": "SEG"}}))(plain(*a, **k)))
    other = sorted((run_dir.parent / "phantoms-b").rglob("*.png"))
    other = [p for p in other if "masks" not in p.parts]
    monkeypatch.setattr(audit_run, "learnt_from",  # the guide's rows; the run's own: none
                        lambda run, meta, own=True: [(other[0], None)])
    doc = audit_model(run_dir, [run_dir.parent / "phantoms-b"], out_dir=tmp_path / "a",
                      settings=FAST, device="cpu")
    assert doc["datasets"]["phantoms-b"]["n_images"] == len(other) - 1
    frame = pd.read_csv(tmp_path / "a" / "audit_images.csv")
    assert str(other[0]) not in set(frame["path"])


def test_validation_audits_the_validation_images_alone(run_dir, tmp_path):
    """A run that validated on three of the Testing phantoms: ``validation`` audits those
    three and nothing else; without it they are left out like the training images."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").symlink_to(run_dir / "model.safetensors")
    table = pd.read_csv(run_dir / "split.csv")
    val = table.index[table["split"] == "test"][[0, 2, 5]]
    table.loc[val, "split"] = "val"
    table.to_csv(run / "split.csv", index=False)
    data = [run_dir.parent / "phantoms"]
    settings = dataclasses.replace(FAST, faithfulness_images=0, road_images=0,
                                   sanity_images=0, occlusion_images=0)
    doc = audit_model(run, data, out_dir=tmp_path / "v", settings=settings, device="cpu",
                      validation=True)
    assert doc["rows"] == "validation" and doc["datasets"]["phantoms"]["n_images"] == 3
    assert doc["datasets"]["phantoms"]["n_seen"] == 0  # an image is no copy of itself
    audited = set(pd.read_csv(tmp_path / "v" / "audit_images.csv")["path"])
    assert audited == {str(Path(p).resolve()) for p in table.loc[val, "path"]}
    unseen = audit_model(run, data, out_dir=tmp_path / "u", settings=settings, device="cpu")
    assert unseen["rows"] == "unseen" and unseen["datasets"]["phantoms"]["n_images"] == 5
    with pytest.raises(BraincamError, match="lists no validation images"):
        audit_model(run_dir, data, out_dir=tmp_path / "w", validation=True, device="cpu")
    with pytest.raises(BraincamError, match="no image under --data is one the run validated"):
        audit_model(run, [run_dir.parent / "phantoms-b"], out_dir=tmp_path / "x",
                    validation=True, device="cpu")


def test_no_faithfulness_images_leaves_the_check_empty(run_dir, tmp_path):
    settings = dataclasses.replace(FAST, faithfulness_images=0)
    doc = audit_model(run_dir, [run_dir.parent / "phantoms-b"], out_dir=tmp_path / "a",
                      settings=settings, device="cpu")
    faithfulness = doc["datasets"]["phantoms-b"]["faithfulness"]
    assert (faithfulness["n_images"], faithfulness["n_road"]) == (0, 0)
    assert faithfulness["deletion_auc"] is None and faithfulness["deletion_curve"] == []


def test_bad_input_gives_one_line_errors(run_dir, tmp_path):
    data = [run_dir.parent / "phantoms"]
    with pytest.raises(BraincamError, match="unknown method"):
        audit_model(run_dir, data, ["gradcamm"], tmp_path / "x")
    with pytest.raises(BraincamError, match="no model.safetensors"):
        audit_model(tmp_path, data, out_dir=tmp_path / "y")
    with pytest.raises(BraincamError, match="region 'corner' must be 64 x 64"):
        audit_model(run_dir, data, out_dir=tmp_path / "z", max_images=2,
                    regions={"corner": np.zeros((8, 8), bool)}, device="cpu")
    with pytest.raises(BraincamError, match="used to train"):
        audit_model(run_dir, [run_dir.parent / "phantoms" / "Training"], out_dir=tmp_path / "w")


def test_a_segmenter_adds_predicted_masks_to_the_examples(run_dir, tmp_path):
    from braincam.models import load_checkpoint
    from braincam.models.segment import build_segmenter, save_segmenter

    seg = tmp_path / "seg"
    seg.mkdir()
    torch.manual_seed(0)
    save_segmenter(build_segmenter("none").eval(), seg / "model.safetensors", {"size": SIZE})
    out = tmp_path / "audit"
    audit_model(run_dir, [run_dir.parent / "phantoms"], out_dir=out, settings=FAST,
                device="cpu", segmenter=seg)
    examples = TumourExamples.load(out / EXAMPLES_FILE)
    assert examples.predicted is not None and examples.predicted.shape == examples.masks.shape
    assert examples.predicted.dtype == bool
    with pytest.raises(BraincamError, match="not a segmenter"):
        audit_model(run_dir, [run_dir.parent / "phantoms"], out_dir=tmp_path / "bad",
                    settings=FAST, device="cpu", segmenter=run_dir)
    assert not (tmp_path / "bad").exists()
    crop = load_checkpoint(run_dir / "model.safetensors")[1]["preprocess"]["crop"]
    other = tmp_path / "seg-other-crop"  # its masks would not line up with the run's images
    other.mkdir()
    save_segmenter(build_segmenter("none").eval(), other / "model.safetensors",
                   {"size": SIZE, "preprocess": {"size": SIZE, "crop": not crop}})
    with pytest.raises(BraincamError, match="would not line up"):
        audit_model(run_dir, [run_dir.parent / "phantoms"], out_dir=tmp_path / "bad",
                    settings=FAST, device="cpu", segmenter=other)
    assert not (tmp_path / "bad").exists()


def test_per_image_numbers_keep_six_significant_digits():
    """A confident model's lesion-view probabilities of 1e-7 would tie at 0 with six
    decimals, and an AUC recomputed from audit_images.csv would differ from audit.json."""
    from braincam.audit.model.base import AuditBatch, CheckOutput
    from braincam.audit.model.run import per_image_frame

    n = 3
    batch = AuditBatch(images=np.zeros((n, 8, 8), np.uint8), head_masks=np.ones((n, 8, 8), bool),
                       labels=np.ones(n, int), classes=("no_tumor", "tumor"),
                       probs=np.array([[1 - 1e-7, 1e-7], [0.5, 0.5], [2e-9, 1 - 2e-9]]),
                       maps={"gradcam": np.zeros((n, 8, 8))})
    tiny = np.array([1.234567e-7, 2.5e-9, 0.123456789])
    results = {"counterfactual": CheckOutput(None, [], {"": {"lesion_view_tumor_p": tiny}})}
    frame = per_image_frame("d", ["a", "b", "c"], batch, ["gradcam"], results)
    assert list(frame["lesion_view_tumor_p"]) == [1.23457e-7, 2.5e-9, 0.123457]


def test_images_of_unknown_classes_are_named_by_their_class(tmp_path, caplog):
    from braincam.audit.model.run import _records_by_dataset

    root = make_phantom_dataset(tmp_path / "ph", PhantomSpec(n_per_class=3, size=48))
    with caplog.at_level("WARNING", logger="braincam.audit.model.run"):
        found = _records_by_dataset(set(), [root], ("tumor",), "binary", None, 0)
    assert {r.label for rs in found.values() for r in rs} == {"tumor"}
    assert "of classes the model does not know (no_tumor; it knows tumor) are left out" in (
        caplog.text)
