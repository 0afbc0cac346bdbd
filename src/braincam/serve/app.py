"""The web app: one static page and ``POST /api/predict``, around a model loaded once.

Requests are checked before any model work: the body is read in chunks and refused (413)
as soon as it passes the cap, so an oversized upload never reaches the disk; the file name
must be plain and the type is decided by content (:mod:`braincam.serve.sniff`). The upload
is written under its own :class:`tempfile.TemporaryDirectory` only while it is decoded
(the DICOM and NIfTI readers take files), which is removed whatever happens. One lock
serialises model calls: Grad-CAM hooks the model, so two requests must not run it at once.
Every error answers ``{"error": message}`` with a 4xx status (5xx only for a fault of the
server, never with a traceback).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from braincam.api import Model
from braincam.data.inputs import InputSlice, expand_inputs, read_slice
from braincam.data.records import SkippedFile
from braincam.errors import BraincamError
from braincam.serve.payload import response_json
from braincam.serve.sniff import Upload, UploadError, sniff

log = logging.getLogger(__name__)
MiB = 1 << 20
DEFAULT_MAX_UPLOAD = 64 * MiB
DEFAULT_MAX_PIXELS = 25_000_000  # 5000 x 5000; one 8000 x 8000 upload took the server 4.3 GB
FORM_SLACK = 64 * 1024  # multipart boundaries and part headers on top of the file itself
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
HEADERS = {
    # everything is served from here; images arrive as data: URLs inside the JSON
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class ServeSettings:
    """What the app does with each upload."""

    max_upload: int = DEFAULT_MAX_UPLOAD  # bytes of one uploaded file
    method: str = "gradcam"  # explanation method of the overlays
    max_pixels: int = DEFAULT_MAX_PIXELS  # of one decoded image or slice

    def validate(self) -> None:
        from braincam.explain import METHODS

        if self.method not in METHODS:
            raise BraincamError(
                f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.max_upload < 1 or self.max_pixels < 1:
            raise BraincamError("the upload and pixel limits must be positive")


def create_app(model: Model, settings: ServeSettings | None = None) -> FastAPI:
    """The app around ``model`` (``braincam.load(RUN)``), loaded once by the caller."""
    settings = settings or ServeSettings()
    settings.validate()
    app = FastAPI(title="braincam", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()

    @app.exception_handler(UploadError)
    async def _rejected(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        try:
            response = await call_next(request)
        except Exception:  # a fault of the server: logged here, one line to the client
            log.exception("request %s failed", request.url.path)
            response = _error(500, "internal error; see the server's log")
        response.headers.update(HEADERS)
        return response

    for route, (name, media) in STATIC.items():
        app.add_api_route(route, _static_route(name, media), methods=["GET", "HEAD"])

    @app.post("/api/predict")
    async def predict(request: Request) -> JSONResponse:
        """Multipart form with one part ``file``: the image, DICOM file or NIfTI volume."""
        name, data = await _read_upload(request, settings.max_upload)
        upload = sniff(data, name)

        def work() -> dict[str, Any]:
            slices = _decode(upload, data, settings.max_pixels)
            try:
                with lock:
                    explanations = model.explain_slices(slices, method=settings.method)
            except BraincamError as exc:
                raise UploadError(str(exc), 422) from None
            return response_json(upload, settings.method, explanations)

        return JSONResponse(await run_in_threadpool(work))

    return app


def _decode(upload: Upload, data: bytes, max_pixels: int) -> list[InputSlice]:
    """The upload's slices as in-memory arrays named by the upload's name; a slice of more
    than ``max_pixels`` is refused (413): a small compressed file may decode to an image
    whose explanation overlay, drawn at full size, takes gigabytes.

    The bytes exist on disk only while they are decoded, in a folder removed right after;
    in-memory slices also keep uploads out of the preprocessing cache (which keys files by
    content and would keep a copy of every upload's model input)."""
    with tempfile.TemporaryDirectory(prefix="braincam-serve-") as tmp:
        path = Path(tmp) / f"upload{upload.suffix}"
        path.write_bytes(data)
        try:
            _check_pixels(upload, _header_size(path, upload), max_pixels)
            slices = in_memory(path, upload.name)
        except UploadError:
            raise
        except BraincamError as exc:  # undecodable content: say why, without our path
            raise UploadError(str(exc).replace(str(path), upload.name), 422) from None
    for item in slices:  # the decoded sizes, where a header could not tell
        _check_pixels(upload, item.array.shape[::-1], max_pixels)
    return slices


def _header_size(path: Path, upload: Upload) -> tuple[int, int] | None:
    """``(width, height)`` of the upload's slices from its header alone, before anything is
    decoded; None where the header cannot tell (decoding then says why). An image past
    Pillow's own limit (about 179 megapixels) is refused here, as too large."""
    from PIL import Image

    try:
        if upload.kind == "dicom":
            from braincam.data.dicom import dicom_info

            info = dicom_info(path)
            return info.width, info.height
        if upload.kind == "nifti":
            from braincam.data.nifti import slice_size

            return slice_size(path)
        from braincam.data.imageio import shown_size

        with Image.open(path) as im:
            return shown_size(im)
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{upload.name}: {' '.join(str(exc).split())}", 413) from None
    except Exception:  # noqa: BLE001 - an unreadable header is judged by the decoder
        return None


def _check_pixels(upload: Upload, size: tuple[int, int] | None, max_pixels: int) -> None:
    if size is not None and size[0] * size[1] > max_pixels:
        raise UploadError(
            f"{upload.name}: {size[0]} x {size[1]} pixels is more than this server "
            f"takes ({max_pixels / 1e6:g} megapixels; braincam serve --max-megapixels)", 413)


def in_memory(path: Path, name: str) -> list[InputSlice]:
    """Every slice of the file at ``path``, decoded into memory and named ``name``; a volume
    without a slice of head is an error."""
    skipped: list[SkippedFile] = []
    slices = expand_inputs(path, skipped=skipped)
    if skipped:
        raise BraincamError(f"{path}: {skipped[0].reason}")
    return [InputSlice(name, s.slice, array=read_slice(s)) for s in slices]


def _static_route(name: str, media: str):
    body = resources.files("braincam.serve").joinpath("static", name).read_bytes()

    async def page() -> Response:
        return Response(body, media_type=media)

    return page


async def _read_upload(request: Request, limit: int) -> tuple[str | None, bytes]:
    """The uploaded file's name and bytes, refusing more than ``limit`` file bytes (413).

    The body is counted as it streams in (a false or missing Content-Length cannot
    get past the cap) and the multipart form is parsed from memory."""
    too_big = UploadError(f"the upload is larger than the limit of {_size(limit)}", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_SLACK:
        raise too_big
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise UploadError("send the file as multipart/form-data in a part named 'file'", 415)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + FORM_SLACK:
            raise too_big
        chunks.append(chunk)
    body = b"".join(chunks)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
            part = form.get("file")
            if isinstance(part, str):  # a form field without a filename: text, not a file
                raise UploadError("the part named 'file' is a text field; send the file as a "
                                  "file part (with a filename)")
            if not isinstance(part, UploadFile):
                raise UploadError("no file: send it in a multipart part named 'file'")
            data = await part.read()
            name = part.filename
    except UploadError:
        raise
    except Exception as exc:  # python-multipart/starlette: malformed or too many parts
        raise UploadError(f"malformed multipart upload ({exc})") from None
    if len(data) > limit:
        raise too_big
    return name, data


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
