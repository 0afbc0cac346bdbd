"""Uploads are classified by their bytes: every accepted signature, and the look-alikes that
must be refused."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from braincam.serve.sniff import UploadError, check_name, sniff

GREY = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) % 256).astype(np.uint8)


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(GREY).save(buf, format=fmt)
    return buf.getvalue()




def nifti_bytes(version: int = 1) -> bytes:
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    return cls(np.zeros((4, 4, 3), np.int16), np.eye(4)).to_bytes()


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("JPEG", ".jpg"),
                                             ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_images_by_signature(fmt, suffix):
    upload = sniff(encoded(fmt), "scan.dat")  # the name says nothing; the bytes decide
    assert (upload.kind, upload.suffix, upload.name) == ("image", suffix, "scan.dat")


def test_dicom_nifti_and_gzipped_nifti(tmp_path, write_dicom):
    dicom = write_dicom(tmp_path / "slice.dcm", GREY).read_bytes()
    assert (sniff(dicom, "a.png").kind, sniff(dicom).suffix) == ("dicom", ".dcm")
    dual = b"II*\x00" + dicom[4:]  # a TIFF header in the preamble: still DICOM
    assert (sniff(dual).kind, sniff(dual).suffix) == ("dicom", ".dcm")
    assert sniff(nifti_bytes(1), "x.png").suffix == ".nii"
    assert sniff(nifti_bytes(2)).suffix == ".nii"
    assert sniff(gzip.compress(nifti_bytes(1)), "x.nii").suffix == ".nii.gz"
    big_endian = nib.Nifti1Image(np.zeros((2, 2, 2), ">i2"), np.eye(4),
                                 header=nib.Nifti1Header(endianness=">"))
    assert big_endian.to_bytes()[:4] == b"\x00\x00\x01\x5c"
    assert sniff(big_endian.to_bytes()).kind == "nifti"


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"", 400, "empty"),
    (b"hello, I am text\n" * 10, 415, "not a PNG"),
    (encoded("PNG")[1:], 415, "not a PNG"),  # a damaged signature is not an image
    (gzip.compress(b"text" * 200, mtime=0), 415, "gzip file that is not a NIfTI"),
    (nifti_bytes(1)[:344] + b"ni1\x00", 415, ".hdr/.img pair"),
    (b"\x00" * 128 + b"DICX" + b"\x00" * 64, 415, "not a PNG"),
    (b"BMI,weight,height\n24.1,70,1.70\n", 415, "not a PNG"),  # BM, yet no BMP header
])
def test_refused_content(data, status, words):
    with pytest.raises(UploadError, match=words) as info:
        sniff(data, "scan.png")
    assert info.value.status == status


@pytest.mark.parametrize("name", ["../../etc/passwd.png", "..", "a/b.png", "c:\\x\\y.png",
                                  "evil\x00.png", "line\nbreak.png"])
def test_names_that_are_not_plain_are_refused(name):
    with pytest.raises(UploadError, match="not a plain file name") as info:
        sniff(encoded("PNG"), name)
    assert info.value.status == 400


def test_a_name_too_long_says_so():
    with pytest.raises(UploadError, match="is longer than 255 characters") as info:
        sniff(encoded("PNG"), "x" * 256 + ".png")
    assert info.value.status == 400


def test_plain_names_pass_and_a_missing_one_gets_a_placeholder():
    assert check_name("Tr-gl_0010 (copy).png") == "Tr-gl_0010 (copy).png"
    assert check_name("..hidden.png") == "..hidden.png"
    assert check_name(None) == check_name("") == "upload"
