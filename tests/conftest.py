"""Shared fixtures: where the real datasets are, and small generated images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    return Path(os.environ.get("BRAINCAM_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    root = datasets_root()
    if not (root / "sartaj-brain-tumor-mri").is_dir():
        pytest.skip(f"real datasets not found under {root}")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test session gets its own preprocessing cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "braincam-cache"
    monkeypatch.setenv("BRAINCAM_CACHE", str(cache))


@pytest.fixture(scope="session", autouse=True)
def _contained_temp_files(tmp_path_factory: pytest.TempPathFactory):
    """Subprocesses (torchrun's agent, headless Chromium) put their temporary folders under the
    session's base folder, which pytest prunes, instead of leaving them in the system's /tmp."""
    temp = tmp_path_factory.getbasetemp() / "tmp"
    temp.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temp))
        yield


def _dicom_file(path: Path, pixels, photometric: str = "MONOCHROME2",
                rescale: tuple[float, float] | None = None,
                window: tuple[float, float] | None = None, instance: int | None = None,
                position: float | tuple[float, float, float] | None = None,
                series: tuple[str, int] | None = None, study: str | None = None,
                orientation: tuple[float, ...] | None = None) -> Path:
    """An MR DICOM file (explicit VR little endian) of uint8/uint16 ``(H, W)`` or ``(N, H, W)``
    pixels, with a patient name and ID that must never reach an output."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "MR", "Secret^Patient", "PID-31337"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = 8 * pixels.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = len(pixels)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = (list(position) if isinstance(position, tuple)
                                   else [0.0, 0.0, position])
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if series is not None:
        ds.SeriesInstanceUID, ds.SeriesNumber = series
    if study is not None:
        ds.StudyInstanceUID = study
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def write_dicom():
    """``write_dicom(path, pixels, photometric=, rescale=(slope, intercept), window=(c, w),
    instance=, position=z or (x, y, z), series=(uid, number), study=uid,
    orientation=(row and column direction cosines))`` -> path."""
    return _dicom_file


def _nifti_file(path: Path, slices, axcodes: tuple[str, str, str] = ("R", "A", "S"),
                cal: tuple[float, float] | None = (0.0, 255.0)) -> Path:
    """A NIfTI volume whose canonical axial slice ``k`` shown radiologically (anterior up,
    patient's right on the left) is ``slices[k]`` (uint8 ``(Z, H, W)``), stored in the
    orientation ``axcodes``; ``cal``: the header's display range."""
    import nibabel as nib
    import numpy as np

    slices = np.asarray(slices)
    ras = np.ascontiguousarray(slices[:, ::-1, ::-1].transpose(2, 1, 0))  # (X, Y, Z) RAS+
    image = nib.Nifti1Image(ras.astype(np.int16), np.diag([0.9, 0.9, 5.0, 1.0]))
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(axcodes)
    )
    image = image.as_reoriented(ornt)
    if cal is not None:
        image.header["cal_min"], image.header["cal_max"] = cal
    nib.save(image, str(path))
    return path


@pytest.fixture
def write_nifti():
    """``write_nifti(path, slices (Z, H, W) uint8, axcodes=("R","A","S"), cal=(0, 255))``."""
    return _nifti_file


@pytest.fixture(scope="session")
def segmenter_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``braincam segment`` run folder holding an untrained U-Net (64 px input)."""
    import torch

    from braincam.models.segment import build_segmenter, save_segmenter

    seg = tmp_path_factory.mktemp("segmenter-run")
    torch.manual_seed(0)
    save_segmenter(build_segmenter("none").eval(), seg / "model.safetensors",
                   {"size": 64, "preprocess": {"size": 64}, "threshold": 0.5})
    return seg


class Disc:
    """What ``Segmenter.predict`` answers under the ``disc_segmenter`` fixture: P(tumour) = 1
    on the pixels whose centres lie within ``radius * S`` of the model input's centre, else 0."""

    def __init__(self, radius: float = 0.3) -> None:
        self.radius = radius

    def probability(self, size: int):
        import numpy as np

        centres = np.arange(size) + 0.5 - size / 2
        inside = centres[None, :] ** 2 + centres[:, None] ** 2 <= (self.radius * size) ** 2
        return inside.astype(np.float32)

    def fraction(self, size: int) -> float:
        """The disc's share of the model input's pixels, to 4 decimals."""
        return round(float(self.probability(size).mean()), 4)

    def original(self, prep):
        """The disc mapped back to the original image (bool H x W): a pixel is inside when its
        centre, in model-input coordinates through the crop, lies within the disc."""
        import numpy as np

        width, height = prep.original_size
        x0, y0, x1, y1 = prep.crop
        size = prep.image.shape[0]
        u = (np.arange(width) + 0.5 - x0) * size / (x1 - x0) - size / 2
        v = (np.arange(height) + 0.5 - y0) * size / (y1 - y0) - size / 2
        return u[None, :] ** 2 + v[:, None] ** 2 <= (self.radius * size) ** 2

    def assert_matches(self, mask, prep, border: int = 1) -> None:
        """``mask`` (bool, original pixels) is the mapped-back disc up to ``border`` pixels."""
        import cv2
        import numpy as np

        expected = self.original(prep).astype(np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        inner = cv2.erode(expected, kernel, iterations=border).astype(bool)
        outer = cv2.dilate(expected, kernel, iterations=border).astype(bool)
        assert mask.shape == expected.shape and mask.dtype == bool
        assert inner.any()
        assert mask[inner].all(), "a pixel well inside the disc is missing"
        assert not mask[~outer].any(), "a pixel well outside the disc is set"


@pytest.fixture
def disc_segmenter(monkeypatch: pytest.MonkeyPatch) -> Disc:
    """``Segmenter.predict`` answers :class:`Disc` for every image (exact expected masks)."""
    import numpy as np

    from braincam.models.segment import Segmenter

    disc = Disc()

    def predict(self, images):
        return np.stack([disc.probability(images.shape[1])] * len(images))

    monkeypatch.setattr(Segmenter, "predict", predict)
    return disc
