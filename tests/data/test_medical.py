"""DICOM and NIfTI readers: real slices written by pydicom and nibabel read back exactly;
the sample files pydicom and nibabel ship."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from braincam.data.dicom import dicom_info
from braincam.data.imageio import ImageReadError, read_grey
from braincam.data.inputs import expand_inputs
from braincam.data.nifti import choose_slices, read_volume, write_mask_volume
from braincam.data.preprocess import PreprocessCache, PreprocessConfig
from braincam.data.records import load_dataset
from braincam.errors import BraincamError

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def real_slices(datasets_dir) -> np.ndarray:
    """Three Sartaj test slices as uint8, resized to 160 x 128 (one volume's shape)."""
    folder = datasets_dir / "sartaj-brain-tumor-mri" / "Testing" / "glioma_tumor"
    files = sorted(folder.iterdir())[:3]
    greys = [np.rint(read_grey(f) * 255).astype(np.uint8) for f in files]
    return np.stack([cv2.resize(g, (128, 160), interpolation=cv2.INTER_AREA) for g in greys])


def test_a_2d_nifti_file_is_a_volume_of_one_slice(tmp_path, write_nifti):
    """A slice stored as ``X x Y`` reads as the same slice stored as ``X x Y x 1``, and its
    mask is written back on its own 2D grid."""
    import nibabel as nib

    slices = np.random.default_rng(1).integers(0, 256, (1, 20, 16), dtype=np.uint8)
    flat = nib.load(write_nifti(tmp_path / "v.nii", slices, axcodes=("L", "P", "S")))
    nib.save(nib.Nifti1Image(np.asarray(flat.dataobj)[:, :, 0], flat.affine, flat.header),
             tmp_path / "flat.nii.gz")
    shown = read_volume(tmp_path / "flat.nii.gz")
    np.testing.assert_array_equal(shown, read_volume(tmp_path / "v.nii"))
    assert shown.shape == (1, 20, 16)
    voxels, _ = write_mask_volume(tmp_path / "flat.nii.gz", {0: shown[0] > 0.5},
                                  tmp_path / "m.nii.gz")
    written = nib.load(tmp_path / "m.nii.gz")
    assert written.shape == (16, 20) and voxels == (shown[0] > 0.5).sum() > 0
    np.testing.assert_array_equal(np.asarray(written.dataobj),
                                  np.asarray(flat.dataobj)[:, :, 0] > 127)


@pytest.mark.realdata
def test_dicom_8bit_16bit_rescale_monochrome1_read_back_exactly(tmp_path, real_slices,
                                                               write_dicom):
    u8 = real_slices[0]
    expected = u8.astype(np.float32) / 255
    window = (127.5, 255.0)  # [0, 255] -> [0, 1]
    plain = write_dicom(tmp_path / "a.dcm", u8, window=window)
    stored = (u8.astype(np.uint16) * 100 + 1000)  # v = 0.01 * stored - 10 = u8
    rescaled = write_dicom(tmp_path / "b.dcm", stored, rescale=(0.01, -10.0), window=window)
    inverted = write_dicom(tmp_path / "c.dcm", 255 - u8, photometric="MONOCHROME1",
                           window=window)
    for path in (plain, rescaled, inverted):
        np.testing.assert_allclose(read_grey(path), expected, atol=1e-6, err_msg=path.name)



def test_a_multi_valued_rescale_uses_its_first_value(tmp_path, write_dicom):
    """Rescale Slope and Intercept are single-valued by the standard, but files carry two;
    the first values apply, as for Window Center and Width."""
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000
    window = (250.0, 500.0)
    single = write_dicom(tmp_path / "a.dcm", stored, rescale=(0.5, 10.0), window=window)
    multi = write_dicom(tmp_path / "b.dcm", stored, rescale=(["0.5", "2"], ["10", "0"]),
                        window=window)
    np.testing.assert_array_equal(read_grey(multi), read_grey(single))


@pytest.mark.realdata
def test_dicom_without_window_uses_robust_percentiles(tmp_path, real_slices, write_dicom):
    u8 = real_slices[1]
    grey = read_grey(write_dicom(tmp_path / "a.dcm", u8.astype(np.uint16) * 16))
    lo, hi = np.percentile(u8.astype(np.float64) * 16, [0.5, 99.5])
    expected = np.clip((u8 * 16.0 - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    assert grey.min() == 0.0 and grey.max() == 1.0


@pytest.mark.realdata
def test_multiframe_dicom_frames_and_series_order(tmp_path, real_slices, write_dicom):
    multi = write_dicom(tmp_path / "multi.dcm", real_slices, window=(127.5, 255.0))
    assert dicom_info(multi).frames == 3
    for k in range(3):
        np.testing.assert_allclose(read_grey(multi, index=k), real_slices[k] / 255.0, atol=1e-6)
    with pytest.raises(ImageReadError, match="frame 3 out of range"):
        read_grey(multi, index=3)
    series = tmp_path / "series"
    series.mkdir()
    for k, name in enumerate(("z.dcm", "m.dcm", "a.dcm")):  # names against instance order
        write_dicom(series / name, real_slices[k], instance=k + 1)
    (series / "notes.txt").write_text("not DICOM")
    assert [s.file.name for s in expand_inputs(series)] == ["z.dcm", "m.dcm", "a.dcm"]


@pytest.mark.realdata
@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("P", "L", "I")])
def test_nifti_slices_in_canonical_radiological_orientation(tmp_path, real_slices, write_nifti,
                                                            axcodes):
    import nibabel as nib

    path = write_nifti(tmp_path / "vol.nii.gz", real_slices, axcodes=axcodes)
    assert nib.aff2axcodes(nib.load(path).affine) == axcodes
    volume = read_volume(path)
    assert volume.shape == (3, 160, 128)
    np.testing.assert_allclose(volume, real_slices / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_grey(path, index=2), real_slices[2] / 255.0, atol=1e-6)


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("P", "L", "I")])
def test_nifti_mask_volume_lies_on_the_input_voxels(tmp_path, write_nifti, axcodes):
    """Masks drawn on the displayed slices land on the voxels they were drawn from, in the
    file's own axis order and affine; slices not given stay 0."""
    import nibabel as nib

    slices = np.random.default_rng(0).integers(0, 256, (4, 20, 16), dtype=np.uint8)
    path = write_nifti(tmp_path / "v.nii.gz", slices, axcodes=axcodes)
    shown = read_volume(path) > 0.5  # (Z, H, W) as braincam shows the slices
    voxels, ml = write_mask_volume(path, dict(enumerate(shown)), tmp_path / "m.nii.gz")
    source, written = nib.load(path), nib.load(tmp_path / "m.nii.gz")
    assert written.shape == source.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, source.affine)
    expected = np.asarray(source.dataobj) > 127  # the stored values, 128/255 > 0.5
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.astype(np.uint8))
    assert voxels == expected.sum() and ml == pytest.approx(voxels * 0.9 * 0.9 * 5.0 / 1000)
    np.testing.assert_array_equal(read_volume(tmp_path / "m.nii.gz") > 0.5, shown)

    one, _ = write_mask_volume(path, {2: shown[2]}, tmp_path / "one.nii")
    back = read_volume(tmp_path / "one.nii") > 0.5
    assert one == shown[2].sum() and not back[[0, 1, 3]].any()
    np.testing.assert_array_equal(back[2], shown[2])
    header_in_metres = nib.load(path)
    header_in_metres.header.set_xyzt_units("meter")
    nib.save(header_in_metres, tmp_path / "metres.nii")
    _, ml = write_mask_volume(tmp_path / "metres.nii", {2: shown[2]}, tmp_path / "m2.nii")
    assert ml == pytest.approx(one * 0.9 * 0.9 * 5.0 * 1e6)  # 1 m^3 = 1e6 mL
    with pytest.raises(BraincamError, match="slice 1 mask is \\(16, 20\\)"):
        write_mask_volume(path, {1: shown[1].T}, tmp_path / "bad.nii.gz")
    with pytest.raises(BraincamError, match=f"no slice 99 \\(the volume has {len(shown)}\\)"):
        write_mask_volume(path, {99: shown[1]}, tmp_path / "bad.nii.gz")


@pytest.mark.realdata
def test_nifti_slice_choice_and_records(tmp_path, real_slices, write_nifti):
    blank = np.zeros_like(real_slices[:1])
    volume_slices = np.concatenate([blank, real_slices, blank])
    (tmp_path / "data" / "glioma").mkdir(parents=True)
    path = write_nifti(tmp_path / "data" / "glioma" / "vol.nii", volume_slices)
    volume = read_volume(path)
    assert choose_slices(volume) == [0, 1, 2, 3, 4]
    assert choose_slices(volume, every=2) == [0, 2, 4]
    assert choose_slices(volume, min_head=0.1) == [1, 2, 3]
    records = load_dataset([tmp_path / "data"]).records
    assert [(r.label, r.slice, r.width, r.height) for r in records] == [
        ("glioma", k, 128, 160) for k in (1, 2, 3)
    ]
    cache = PreprocessCache()
    config = PreprocessConfig(size=64)
    images, _, skipped = cache.load(records, config)
    assert not skipped
    for k, record in enumerate(records):
        direct = cache.get(path, config, record.slice).image
        np.testing.assert_array_equal(images[k], direct)
    assert not np.array_equal(images[0], images[1])  # the slice is part of the cache key


def test_pydicom_samples_compressed_and_uncompressed_agree():
    reference = read_grey(PYDICOM_FILES / "MR_small.dcm")
    assert reference.shape == (64, 64) and 0.0 <= reference.min() < reference.max() <= 1.0
    for name in ("MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        np.testing.assert_array_equal(read_grey(PYDICOM_FILES / name), reference, err_msg=name)


def test_undecodable_compression_names_the_plugin():
    path = PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm"
    try:
        grey = read_grey(path)
    except ImageReadError as exc:
        message = str(exc)
        assert "JPEG-LS" in message and "pyjpegls" in message and "\n" not in message
    else:  # a JPEG-LS plugin is installed: then it decodes losslessly
        np.testing.assert_array_equal(grey, read_grey(PYDICOM_FILES / "MR_small.dcm"))


def test_nibabel_sample_and_bad_files(tmp_path):
    volume = read_volume(NIBABEL_DATA / "anatomical.nii")
    assert volume.ndim == 3 and volume.dtype == np.float32
    assert 0.0 == volume.min() and volume.max() == 1.0
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"\x1f\x8b" + b"junk" * 10)
    with pytest.raises(ImageReadError, match="fake.nii.gz"):
        read_grey(fake)
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((16, 16), np.uint8))
    with pytest.raises(ImageReadError, match="no slice 3"):
        read_grey(png, index=3)


@pytest.mark.realdata
def test_dicom_files_in_a_dataset_are_records_per_frame(tmp_path, real_slices, write_dicom):
    folder = tmp_path / "data" / "no_tumor"
    folder.mkdir(parents=True)
    write_dicom(folder / "one.dcm", real_slices[0], window=(127.5, 255.0))
    write_dicom(folder / "multi.dcm", real_slices[1:], window=(127.5, 255.0))
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 10)
    dataset = load_dataset([tmp_path / "data"])
    assert [(r.path.name, r.slice, r.width, r.height) for r in dataset.records] == [
        ("multi.dcm", 0, 128, 160), ("multi.dcm", 1, 128, 160), ("one.dcm", None, 128, 160),
    ]
    assert [(s.path.name, s.reason) for s in dataset.skipped] == [
        ("broken.dcm", "DICOM file without an image (no Rows/Columns)")
    ]
    images, _, skipped = PreprocessCache().load(dataset.records, PreprocessConfig(size=64))
    assert not skipped and len(images) == 3
    assert not np.array_equal(images[0], images[1])


def _nifti_bytes(shape, dtype, edit=None) -> bytes:
    """A NIfTI-1 file of zeros; ``edit(header)`` then changes header fields in place (the
    voxels stay as written)."""
    import nibabel as nib

    raw = nib.Nifti1Image(np.zeros(shape, dtype), np.eye(4)).to_bytes()
    if edit is None:
        return raw
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    edit(header)
    return header.binaryblock + raw[len(header.binaryblock):]


def _huge(header) -> None:  # 4000^3 int16 voxels: 128 GB that the file does not hold
    header["dim"][1:4] = 4000


def _flat(header) -> None:  # an affine of zeros
    header["qform_code"], header["sform_code"] = 0, 1
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = 0


def test_damaged_nifti_volumes_are_one_line_read_errors(tmp_path, monkeypatch):
    import braincam.data.nifti as nifti

    rgb = [("R", "u1"), ("G", "u1"), ("B", "u1")]
    cases = {  # file -> (its bytes, what the error says)
        "huge.nii": (_nifti_bytes((4, 4, 4), np.int16, _huge),
                     "truncated NIfTI volume (its header declares 128000000000 bytes"),
        "rgb.nii.gz": (gzip.compress(_nifti_bytes((8, 8, 3), rgb)), "cannot read NIfTI"),
        "flat.nii": (_nifti_bytes((8, 8, 3), np.uint8, _flat), "cannot read NIfTI"),
        "inflating.nii.gz": (gzip.compress(_nifti_bytes((20, 20, 20), np.uint8)), "inflates"),
    }
    monkeypatch.setattr(nifti, "MAX_VOLUME_BYTES", 4096)
    for name, (data, says) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageReadError) as err:
            read_grey(path, index=0)
        message = str(err.value)
        assert name in message and "\n" not in message and says in message, message
    path = tmp_path / "small.nii.gz"  # one under the inflation limit reads
    path.write_bytes(gzip.compress(_nifti_bytes((8, 8, 3), np.uint8)))
    assert read_grey(path, index=0).shape == (8, 8)


def test_damaged_dicom_pixels_are_one_line_read_errors(tmp_path, write_dicom):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)

    def damaged(name: str, edit) -> Path:
        path = write_dicom(tmp_path / name, pixels)
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
        return path

    def no_bits(ds):
        del ds.BitsAllocated

    def empty(ds):
        ds.PixelData = b""

    def garbage_rle(ds):
        ds.file_meta.TransferSyntaxUID = RLELossless
        ds.PixelData = encapsulate([b"\0" * 64])

    for edit, says in ((no_bits, "Bits Allocated"), (empty, "cannot decode pixel data"),
                       (garbage_rle, "cannot decode compressed pixel data (RLE Lossless: ")):
        path = damaged(f"{edit.__name__}.dcm", edit)
        with pytest.raises(ImageReadError) as err:
            read_grey(path)
        message = str(err.value)
        assert path.name in message and says in message and "\n" not in message, message
        assert "install" not in message  # RLE decodes without a plugin: the data is damaged


def test_a_frame_of_a_multi_frame_file_is_decoded_alone(tmp_path, write_dicom, monkeypatch):
    """Reading frame k decodes frame k, not the whole file (which made a file of N frames
    cost N^2 frame decodes); the frames read back exactly."""
    import pydicom

    frames = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16) % 256
    path = write_dicom(tmp_path / "multi.dcm", frames, window=(127.5, 255.0))

    def whole(self):
        raise AssertionError("decoded every frame")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(whole))
    for k in range(3):
        np.testing.assert_allclose(read_grey(path, index=k), frames[k] / 255, atol=1e-6)


def test_a_ybr_jpeg_dicom_reads_as_its_rgb_copy():
    """pydicom turns YBR pixels into RGB; converting them again moved grey values (a red
    pixel read 0.69 instead of 0.30). pydicom's own test files: one picture as YBR JPEG and
    as RGB RLE."""
    from pydicom.data import get_testdata_file

    ybr = read_grey(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    rgb = read_grey(get_testdata_file("SC_rgb_rle.dcm"))
    assert ybr.shape == rgb.shape == (100, 100)
    assert np.abs(ybr - rgb).max() < 0.01  # JPEG's loss alone


def test_a_legacy_dcm_file_without_preamble_is_read_and_junk_named_dcm_is_one_line(tmp_path):
    """Older exports write the dataset without the Part 10 preamble and ``DICM`` marker: a
    ``.dcm`` file is read anyway (transfer syntax as detected); a ``.dcm`` file that is no
    dataset is one line without pydicom's ``force=True`` advice."""
    from pydicom.dataset import Dataset

    pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) % 4000).astype(np.uint16)
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 48, 64, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    ds.PixelData = pixels.tobytes()
    legacy = tmp_path / "ds" / "glioma" / "old.dcm"
    legacy.parent.mkdir(parents=True)
    ds.save_as(legacy, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert legacy.read_bytes()[128:132] != b"DICM"
    grey = read_grey(legacy)
    expected = np.clip((pixels.astype(np.float64) - (2000 - 0.5 - 3999 / 2)) / 3999, 0, 1)
    assert grey.shape == (48, 64) and np.abs(grey - expected).max() < 1e-3
    assert [(s.name, s.slice) for s in expand_inputs(legacy)] == [(str(legacy), None)]
    assert [r.path.name for r in load_dataset([tmp_path / "ds"]).records] == ["old.dcm"]
    misnamed = tmp_path / "png.dcm"  # an image named .dcm stays an image
    cv2.imwrite(str(misnamed.with_suffix(".png")), np.full((40, 40), 120, np.uint8))
    misnamed.with_suffix(".png").rename(misnamed)
    assert read_grey(misnamed).mean() == pytest.approx(120 / 255)
    assert [(s.name, s.slice) for s in expand_inputs(misnamed)] == [(str(misnamed), None)]
    junk = tmp_path / "junk.dcm"
    junk.write_text("hello")
    with pytest.raises(ImageReadError, match=r"junk.dcm: not a readable DICOM file \(no 'DICM' "
                                             r"marker, and no image dataset when read"):
        read_grey(junk)
