"""``POST /api/predict`` through FastAPI's TestClient: a good PNG gets predict's numbers and
the explanation's overlay; every kind of bad upload gets a 4xx JSON error with a message."""

from __future__ import annotations

import base64
import io
import tempfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from braincam.errors import BraincamError
from braincam.serve import ServeSettings, create_app

from .conftest import SIZE


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model)) as c:
        yield c


def post(client, name: str, data: bytes, mime: str = "image/png"):
    return client.post("/api/predict", files={"file": (name, data, mime)})


def pixels(url: str) -> np.ndarray:
    head, b64 = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_a_png_gets_predicts_numbers_and_the_overlay(client, model, png_file):
    reply = post(client, "scan.png", png_file.read_bytes())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    (expected,) = model.predict([png_file])
    (exp,) = model.explain([png_file], method="gradcam")
    assert (body["file"], body["kind"], body["method"]) == ("scan.png", "image", "gradcam")
    assert body["classes"] == list(expected.probabilities) == ["no_tumor", "tumor"]
    assert body["focus"] == 0
    (item,) = body["slices"]
    (row,) = body["rows"]
    assert 0.01 < expected.probabilities["tumor"] < 0.99  # a number worth comparing
    for name, p in expected.probabilities.items():
        assert item["probabilities"][name] == pytest.approx(p, abs=1e-6)
        assert row[f"prob_{name}"] == pytest.approx(p, abs=1e-6)
    assert item["label"] == expected.label == row["pred"]
    assert item["ood_score"] == pytest.approx(expected.ood_score, abs=1e-6)
    # the row of `braincam predict --explain gradcam`, named by the upload
    assert row == {**exp.prediction.to_row(), "path": "scan.png"}
    assert item["warnings"] == exp.prediction.warnings
    assert np.array_equal(pixels(item["overlay"]), exp.overlay)
    grey = pixels(item["image"])
    assert grey.shape == (SIZE, SIZE, 3) and np.array_equal(grey[..., 1], expected.image)
    assert "tumour_fraction" not in item and "tumour_fraction" not in row  # no segmenter


def test_a_segmenter_adds_the_tumour_fraction_and_outline(tiny_run, segmenter_run,
                                                          disc_segmenter, png_file):
    import cv2

    import braincam
    from braincam.explain.render import TUMOUR_RGB

    model = braincam.load(tiny_run, segment=segmenter_run, device="cpu", ood=False)
    with TestClient(create_app(model)) as client:
        reply = post(client, "scan.png", png_file.read_bytes())
        page, script = client.get("/").text, client.get("/app.js").text
    assert reply.status_code == 200, reply.text
    body = reply.json()
    (item,) = body["slices"]
    (row,) = body["rows"]
    fraction = disc_segmenter.fraction(SIZE)
    assert item["tumour_fraction"] == row["tumour_fraction"] == fraction
    assert list(row)[-2:] == ["tumour_fraction", "warnings"]
    (tumour,) = model.segment([png_file])
    disc_segmenter.assert_matches(tumour.mask, tumour.preprocessed)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    rim = tumour.mask & ~cv2.erode(tumour.mask.astype(np.uint8), cross).astype(bool)
    magenta = (pixels(item["overlay"]) == TUMOUR_RGB).all(axis=2)
    assert rim.sum() > 20 and np.array_equal(magenta, rim)
    assert 'id="tumour"' in page and "item.tumour_fraction" in script  # the page shows it


def test_type_is_decided_by_content_not_name(client, png_file):
    reply = post(client, "scan.dcm", png_file.read_bytes(), "application/dicom")
    assert reply.status_code == 200 and reply.json()["kind"] == "image"


@pytest.mark.parametrize(("name", "data", "status", "words"), [
    ("empty.png", b"", 400, "empty"),
    ("notes.png", b"patient notes, not pixels\n" * 20, 415, "not a PNG, JPEG"),
    ("report.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 200, 415, "not a PNG, JPEG"),
    ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, 422, "broken.png: not a readable image"),
])
def test_bad_content_gets_4xx_with_a_message(client, name, data, status, words):
    reply = post(client, name, data)
    assert reply.status_code == status
    message = reply.json()["error"]
    assert words in message and "braincam-serve-" not in message and "Traceback" not in message


@pytest.mark.parametrize("name", ["../../etc/passwd.png", "..\\..\\boot.ini", "dir/x.png"])
def test_path_traversal_names_are_refused(client, png_file, name):
    reply = post(client, name, png_file.read_bytes())
    assert reply.status_code == 400
    assert "not a plain file name" in reply.json()["error"]


def test_oversized_uploads_get_413(model, png_file):
    data = png_file.read_bytes()
    with TestClient(create_app(model, ServeSettings(max_upload=len(data) - 1))) as small:
        reply = post(small, "scan.png", data)
        assert reply.status_code == 413
        limit = f"the upload is larger than the limit of {len(data) - 1} bytes"
        assert reply.json()["error"] == limit
        # far past the cap: refused by the declared length, before the body is read
        reply = post(small, "scan.png", data + b"\x00" * 100_000)
        assert reply.status_code == 413
        # no declared length (chunked): counted while it streams in
        body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
                b"\r\n" + data + b"\x00" * 100_000 + b"\r\n--b--\r\n")
        chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
        reply = small.post("/api/predict", content=chunks,
                           headers={"content-type": "multipart/form-data; boundary=b"})
        assert "content-length" not in reply.request.headers
        assert reply.status_code == 413
    with TestClient(create_app(model, ServeSettings(max_upload=len(data)))) as exact:
        assert post(exact, "scan.png", data).status_code == 200


def test_images_of_more_pixels_than_the_limit_get_413(model, png_file):
    import cv2

    height, width = cv2.imread(str(png_file), cv2.IMREAD_UNCHANGED).shape[:2]
    settings = ServeSettings(max_pixels=height * width - 1)
    with TestClient(create_app(model, settings)) as small:
        reply = post(small, "scan.png", png_file.read_bytes())
        assert reply.status_code == 413
        assert reply.json()["error"] == (
            f"scan.png: {width} x {height} pixels is more than this server takes "
            f"({(height * width - 1) / 1e6:g} megapixels; braincam serve --max-megapixels)")
    with TestClient(create_app(model, ServeSettings(max_pixels=height * width))) as exact:
        assert post(exact, "scan.png", png_file.read_bytes()).status_code == 200
    for bad in (ServeSettings(max_pixels=0), ServeSettings(method="magic")):
        with pytest.raises(BraincamError):
            create_app(model, bad)


def test_the_pixel_limit_is_checked_on_the_header_before_decoding(model, monkeypatch,
                                                                   png_file, dicom_file,
                                                                   volume_file):
    """A small file can decode to a huge image: images, DICOM files and NIfTI volumes (its
    axial plane) are measured from their headers and refused before their pixels are read."""
    import braincam.serve.app as serve_app

    def decoded(*_):
        raise AssertionError("decoded an upload over the limit")

    monkeypatch.setattr(serve_app, "in_memory", decoded)
    settings = ServeSettings(max_pixels=SIZE * SIZE - 1)
    with TestClient(create_app(model, settings)) as small:
        for name, file in (("a.png", png_file), ("a.dcm", dicom_file),
                           ("a.nii.gz", volume_file)):
            reply = post(small, name, file.read_bytes())
            assert reply.status_code == 413, (name, reply.text)
            assert f"{SIZE} x {SIZE} pixels is more than" in reply.json()["error"]


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"data": {"file": "plain text field"}}, 415),  # a url-encoded form, no file
    ({"content": b"\x89PNG", "headers": {"content-type": "image/png"}}, 415),  # not multipart
    ({"files": {"other": ("x.png", b"\x89PNG", "image/png")}}, 400),  # wrong part name
])
def test_requests_without_a_file_part_get_4xx(client, kwargs, status):
    reply = client.post("/api/predict", **kwargs)
    assert reply.status_code == status and reply.json()["error"]


def test_uploads_live_only_in_a_temporary_folder_that_is_removed(client, png_file, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert post(client, "a.png", png_file.read_bytes()).status_code == 200
    assert post(client, "b.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10).status_code == 422
    assert list(tmp_path.iterdir()) == []


def test_a_fault_of_the_server_is_one_line_500(png_file):
    class Failing:
        def explain_slices(self, slices, method):
            raise RuntimeError("secret internals")

    with TestClient(create_app(Failing()), raise_server_exceptions=False) as c:
        reply = post(c, "scan.png", png_file.read_bytes())
    assert reply.status_code == 500
    assert reply.json() == {"error": "internal error; see the server's log"}


def test_the_page_is_served_locally_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/app.js", "/style.css"):
        reply = client.get(asset)
        assert reply.status_code == 200 and "://" not in reply.text  # nothing external
    for route in ("/", "/app.js"):  # health checks and link checkers ask with HEAD
        assert client.head(route).status_code == 200
    assert "://" not in page.text
    assert client.get("/nothing-here").json() == {"error": "Not Found"}


def test_a_nifti_volume_gets_every_slice_and_the_volume_row(client, model, volume_file):
    reply = post(client, "brain.nii.gz", volume_file.read_bytes(), "application/octet-stream")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = model.predict([volume_file])
    assert body["kind"] == "nifti" and len(body["slices"]) == len(expected) == 5
    for item, pred in zip(body["slices"], expected, strict=True):
        assert item["slice"] == pred.slice
        assert item["probabilities"]["tumor"] == pytest.approx(pred.probabilities["tumor"],
                                                               abs=1e-6)
    assert [r["kind"] for r in body["rows"]] == ["slice"] * 5 + ["volume"]
    tumour = [p.probabilities["tumor"] for p in expected]
    assert body["focus"] == int(np.argmax(tumour))
    assert body["rows"][-1]["slice"] == expected[body["focus"]].slice
    assert {r["path"] for r in body["rows"]} == {"brain.nii.gz"}


def test_a_volume_without_a_slice_of_head_gets_422_saying_so(client, tmp_path):
    import nibabel as nib

    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 4), np.int16), np.eye(4)), blank)
    reply = post(client, "blank.nii.gz", blank.read_bytes(), "application/octet-stream")
    assert reply.status_code == 422
    assert reply.json()["error"] == "blank.nii.gz: no slice whose head covers 10% of it"


def test_a_dicom_file_gets_predicts_numbers(client, model, dicom_file):
    reply = post(client, "slice", dicom_file.read_bytes(), "application/dicom")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    (expected,) = model.predict([dicom_file])
    assert body["kind"] == "dicom" and body["file"] == "slice"
    for name, p in expected.probabilities.items():
        assert body["slices"][0]["probabilities"][name] == pytest.approx(p, abs=1e-6)


def test_the_media_type_of_the_form_is_read_without_regard_to_case(client, png_file):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + \
        png_file.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    reply = client.post("/api/predict", content=body, headers={
        "content-type": f"Multipart/Form-Data; boundary={boundary}"})
    assert reply.status_code == 200, reply.text


def test_a_file_sent_as_a_text_field_is_told_so(client):
    """``curl -F "file=<scan.png"`` sends the bytes as a text field named 'file'."""
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"
            f"not a file part\r\n--{boundary}--\r\n").encode()
    reply = client.post("/api/predict", content=body, headers={
        "content-type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status_code == 400
    assert reply.json()["error"] == ("the part named 'file' is a text field; send the file as "
                                     "a file part (with a filename)")


def test_an_image_past_pillows_limit_and_a_turned_volume_get_413_from_the_header(model,
                                                                                 tmp_path):
    """A PNG header declaring 15000 x 15000 pixels is refused as too large (413), not as
    undecodable; a volume stored anterior-first is measured in its shown width x height."""
    import struct
    import zlib

    import nibabel as nib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)  # grey, 8 bits
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    turned = tmp_path / "turned.nii.gz"  # stored axes: A (50), R (60), S (5)
    affine = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(np.zeros((50, 60, 5), np.int16), affine), turned)
    with TestClient(create_app(model, ServeSettings(max_pixels=60 * 50 - 1))) as small:
        reply = post(small, "huge.png", bomb)
        assert reply.status_code == 413 and reply.json()["error"].startswith("huge.png: ")
        reply = post(small, "turned.nii.gz", turned.read_bytes())
        assert reply.status_code == 413
        assert "60 x 50 pixels is more than this server takes" in reply.json()["error"]
