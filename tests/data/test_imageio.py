"""read_grey: every pixel format becomes float32 grey in [0, 1]; bad files give one-line errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from braincam.data.imageio import ImageReadError, read_grey
from braincam.errors import BraincamError


def _save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_8bit_grey_png_is_value_over_255(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    grey = read_grey(_save(tmp_path / "g.png", arr))
    assert grey.dtype == np.float32 and grey.shape == (16, 16)
    np.testing.assert_allclose(grey, arr / 255.0, atol=1e-7)


def test_16bit_png_is_scaled_by_dtype_max(tmp_path):
    arr = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    grey = read_grey(tmp_path / "g16.png")
    np.testing.assert_allclose(grey[::4, ::4], arr[::4, ::4] / 65535.0, atol=1e-6)


def test_16bit_tiff(tmp_path):
    arr = np.full((8, 8), 16384, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.tif")
    np.testing.assert_allclose(read_grey(tmp_path / "g16.tif"), 16384 / 65535, atol=1e-7)


@pytest.mark.parametrize("values", [(-500, 3000), (0, 200_000)])
def test_32bit_tiff_outside_16_bits_is_min_max_scaled(tmp_path, values):
    """A signed (CT-like) or wide 32-bit TIFF keeps its contrast instead of reading black."""
    lo, hi = values
    arr = np.linspace(lo, hi, 64, dtype=np.int32).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    np.testing.assert_allclose(read_grey(tmp_path / "i32.tif"), (arr - lo) / (hi - lo),
                               atol=1e-6)


def test_rgb_uses_luma_weights(tmp_path):
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:4, :, 0] = 255  # red
    arr[4:, :, 2] = 255  # blue
    grey = read_grey(_save(tmp_path / "c.png", arr))
    np.testing.assert_allclose(grey[0, 0], 0.299, atol=1 / 255)  # 8-bit luma
    np.testing.assert_allclose(grey[7, 0], 0.114, atol=1 / 255)


def test_rgba_is_composited_on_black(tmp_path):
    arr = np.zeros((8, 8, 4), dtype=np.uint8)
    arr[..., :3] = 255
    arr[..., 3] = 128
    arr[0, 0, 3] = 0
    grey = read_grey(_save(tmp_path / "a.png", arr))
    np.testing.assert_allclose(grey[1, 1], 128 / 255, atol=1e-6)
    assert grey[0, 0] == 0.0


def test_la_is_composited_on_black(tmp_path):
    arr = np.zeros((8, 8, 2), dtype=np.uint8)
    arr[..., 0] = 200
    arr[..., 1] = 255
    arr[:, :4, 1] = 0
    path = _save(tmp_path / "la.png", arr)
    assert Image.open(path).mode == "LA"
    grey = read_grey(path)
    np.testing.assert_allclose(grey[:, 4:], 200 / 255, atol=1e-6)
    assert (grey[:, :4] == 0).all()


def test_palette_matches_its_rgb_conversion(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    expected = read_grey(_save(tmp_path / "rgb.png", np.asarray(palette.convert("RGB"))))
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_allclose(read_grey(tmp_path / "p.png"), expected, atol=1e-6)


def test_colour_jpeg_is_its_luma_and_bytes_argument(tmp_path):
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 32, dtype=np.uint8)
    rgb[..., 1] = 90
    path = _save(tmp_path / "j.jpg", rgb, quality=95)
    grey = read_grey(path)
    decoded = np.asarray(Image.open(path), dtype=np.float32) / 255
    assert np.abs(grey - decoded @ np.array([0.299, 0.587, 0.114])).max() < 2.5 / 255
    np.testing.assert_array_equal(read_grey(path, path.read_bytes()), grey)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is not an image\n", "not a readable image"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_grey(path)
    assert isinstance(info.value, BraincamError)
    assert reason in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_raises(tmp_path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cannot decode image"):
        read_grey(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageReadError, match="cannot decode image"):
        read_grey(tmp_path / "nope.png")


def test_exif_orientation_is_applied_as_viewers_show_the_image(tmp_path):
    """A JPEG stored turned with EXIF Orientation 6 (turn 90 degrees clockwise to show) reads
    upright, its record's size is the upright size, and a mask drawn on the upright image
    lines up with it."""
    from braincam.data.records import load_dataset

    upright = np.zeros((40, 64), np.uint8)  # wider than tall, bright on the left third
    upright[:, :20] = 255
    stored = np.rot90(upright, 1)  # what a camera stores before tagging Orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    root = tmp_path / "data"
    (root / "tumor").mkdir(parents=True)
    (root / "masks" / "tumor").mkdir(parents=True)
    Image.fromarray(stored).save(root / "tumor" / "a.jpg", exif=exif, quality=95)
    Image.fromarray(upright).save(root / "masks" / "tumor" / "a.png")
    (root / "no_tumor").mkdir()
    Image.fromarray(upright).save(root / "no_tumor" / "b.png")
    grey = read_grey(root / "tumor" / "a.jpg")
    assert grey.shape == (40, 64)
    assert grey[:, :18].mean() > 0.9 and grey[:, 22:].mean() < 0.1
    (record,) = [r for r in load_dataset([root]).records if r.label == "tumor"]
    assert (record.width, record.height) == (64, 40) and record.mask is not None


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".png"])
def test_the_header_size_is_the_size_of_the_decoded_image(tmp_path, suffix):
    """Whatever the format does with EXIF Orientation 6, ``shown_size`` from the header is
    the ``(width, height)`` that ``read_grey`` decodes."""
    from braincam.data.imageio import shown_size

    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"turned{suffix}"
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(path, exif=exif)
    with Image.open(path) as im:
        size = shown_size(im)
    assert size == read_grey(path).shape[::-1] == (64, 96)
