"""A tiny binary run trained on phantoms, a phantom PNG, and the loaded model the app
serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_arrays, make_phantom_dataset
from braincam.train import TrainConfig, train_run

SIZE = 64
ARCH = "test_efficientnet"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A binary run trained for two head epochs on phantoms (seconds on a CPU)."""
    base = tmp_path_factory.mktemp("serve-run")
    data = make_phantom_dataset(base / "phantoms", PhantomSpec(n_per_class=14, size=SIZE))
    config = TrainConfig(arch=ARCH, weights="none", head_epochs=2, finetune_epochs=0,
                         batch_size=8, preprocess=PreprocessConfig(size=SIZE), device="cpu")
    train_run([data], config, base / "run", progress=False)
    return base / "run"


@pytest.fixture(scope="session")
def png_file(tmp_path_factory) -> Path:
    """A phantom with a tumour, not one of the training images."""
    (item,) = [i for i in make_phantom_arrays(PhantomSpec(n_per_class=1, size=SIZE, seed=9),
                                              splits=("test",)) if i.label == "tumor"]
    path = tmp_path_factory.mktemp("serve-png") / "phantom.png"
    Image.fromarray(item.phantom.image).save(path)
    return path


@pytest.fixture(scope="session")
def model(tiny_run):
    import braincam

    return braincam.load(tiny_run, device="cpu")


@pytest.fixture(scope="session")
def volume_file(tmp_path_factory) -> Path:
    """A gzipped NIfTI volume of five phantom slices (identity affine: axial = third axis)."""
    import nibabel as nib

    items = make_phantom_arrays(PhantomSpec(n_per_class=3, size=SIZE, seed=11), splits=("test",))
    stack = np.stack([i.phantom.image for i in items[1:]], axis=-1).astype(np.int16)
    path = tmp_path_factory.mktemp("serve-nifti") / "brain.nii.gz"
    nib.save(nib.Nifti1Image(stack, np.eye(4)), path)
    return path


@pytest.fixture(scope="session")
def dicom_file(tmp_path_factory, png_file, write_dicom) -> Path:
    """``png_file``'s pixels as an 8-bit MONOCHROME2 DICOM file."""
    path = tmp_path_factory.mktemp("serve-dicom") / "slice.dcm"
    return write_dicom(path, np.asarray(Image.open(png_file)))
