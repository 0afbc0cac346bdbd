"""What an upload is, decided by its bytes, never by its name.

Signatures checked (offsets in bytes):

- PNG ``89 50 4E 47 0D 0A 1A 0A`` at 0; JPEG ``FF D8 FF`` at 0; BMP ``BM`` at 0 with an
  info-header size of a BMP version at 14;
  TIFF ``II*\\0`` or ``MM\\0*`` at 0.
- DICOM Part 10: ``DICM`` at 128, after the 128-byte preamble; checked first, since the
  preamble of a dual-format file holds a TIFF header.
- NIfTI-1: ``sizeof_hdr = 348`` (int32 at 0, either byte order) and ``n+1\\0`` at 344;
  NIfTI-2: ``sizeof_hdr = 540`` and ``n+2\\0`` at 4. A gzip stream (``1F 8B`` at 0) is
  inflated just far enough to check the same header inside.

The client's file name is only echoed back: it must be a plain name (no folder, no ``..``,
no control characters), and the temporary copy is named by :attr:`Upload.suffix`, which
the readers dispatch on.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from braincam.data.dicom import is_dicom
from braincam.errors import BraincamError

IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)
NIFTI1 = (348, 344, (b"n+1\x00",))
NIFTI2 = (540, 4, (b"n+2\x00",))
NIFTI_PAIR = (b"ni1\x00", b"ni2\x00")  # header of a .hdr/.img pair: no voxels in this file
MAX_NAME = 255
BMP_INFO_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)  # BITMAPCOREHEADER ... BITMAPV5HEADER


class UploadError(BraincamError):
    """A rejected upload; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """A checked upload: its plain file name, kind and the suffix its copy is saved under."""

    name: str
    kind: str  # image | dicom | nifti
    suffix: str  # .png .jpg .bmp .tif .dcm .nii .nii.gz


def _bmp_header(data: bytes) -> bool:
    """``BM`` is two common letters: a BMP also has a known info-header size at byte 14."""
    return len(data) >= 18 and struct.unpack("<I", data[14:18])[0] in BMP_INFO_SIZES


def check_name(name: str | None) -> str:
    """The client's file name if it is a plain name; else :class:`UploadError` (400)."""
    if not name:
        return "upload"
    if len(name) > MAX_NAME:
        raise UploadError(f"file name {name[:60]!r}... is longer than {MAX_NAME} characters")
    if (
        name in (".", "..")
        or any(sep in name for sep in ("/", "\\"))
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
    ):
        raise UploadError(
            f"file name {name[:60]!r} is not a plain file name (no folders, '..' or "
            "control characters)"
        )
    return name


def sniff(data: bytes, name: str | None = None) -> Upload:
    """Check ``name`` and classify ``data`` by content (rules in the module docstring).

    Raises :class:`UploadError`: 400 for an empty file or a bad name, 415 for content that
    is none of the accepted kinds.
    """
    name = check_name(name)
    if not data:
        raise UploadError(f"{name}: the file is empty (0 bytes)")
    if is_dicom(data):  # first: the preamble may hold a TIFF header (PS3.10 7.5)
        return Upload(name, "dicom", ".dcm")
    for magic, suffix in IMAGE_SIGNATURES:
        if data.startswith(magic) and (suffix != ".bmp" or _bmp_header(data)):
            return Upload(name, "image", suffix)
    if _nifti_header(data):
        return Upload(name, "nifti", ".nii")
    if data.startswith(b"\x1f\x8b"):
        if _nifti_header(_inflate_head(data, 544)):
            return Upload(name, "nifti", ".nii.gz")
        raise UploadError(f"{name}: a gzip file that is not a NIfTI volume", 415)
    if data[344:348] in NIFTI_PAIR:
        raise UploadError(f"{name}: the header of a NIfTI .hdr/.img pair; upload one .nii "
                          "or .nii.gz file", 415)
    raise UploadError(
        f"{name}: not a PNG, JPEG, BMP, TIFF, DICOM or NIfTI file (decided by its content, "
        "not its name)", 415,
    )


def _nifti_header(head: bytes) -> bool:
    for size, offset, magics in (NIFTI1, NIFTI2):
        if len(head) < max(offset + 4, 4):
            continue
        sizes = struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]
        if size in sizes and head[offset:offset + 4] in magics:
            return True
    return False


def _inflate_head(data: bytes, n: int) -> bytes:
    """The first ``n`` inflated bytes of a gzip stream (fewer when it is shorter or broken)."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, n)
    except zlib.error:
        return b""
