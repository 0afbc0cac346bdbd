"""``braincam serve``: a local web page and its JSON API (``POST /api/predict``) around a
model loaded once; uploads are checked by content and kept only in a temporary folder."""

from braincam.serve.app import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD, ServeSettings, create_app
from braincam.serve.sniff import Upload, UploadError, sniff

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD", "ServeSettings", "Upload", "UploadError",
           "create_app", "sniff"]
