"""``braincam bench serve``: what the web layer adds to one upload, measured side by side.

Per repeat, alternating: the Python API on the file decoded in memory, as the server
does it (``Model.explain_slices`` of :func:`braincam.serve.app.in_memory`, no preprocessing
cache: every upload is new), and the same file posted to ``POST /api/predict`` of
:func:`create_app` served by uvicorn on a free loopback port (multipart upload, content
check, temporary file, decoding, explanation, PNG ``data:`` URLs, JSON), timed from the
request to the parsed answer. Medians in milliseconds; the ratio is the median of the
per-repeat ratios, so load that drifts between repeats cancels.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from braincam.api import Model
from braincam.device import interleaved, median_ratio
from braincam.errors import BraincamError
from braincam.serve.app import ServeSettings, create_app, in_memory

BOUNDARY = "braincam-bench-boundary"


def bench_serve(model: Model, file: Path, repeats: int = 20,
                method: str = "gradcam") -> dict[str, object]:
    """Latency (module docstring) of one ``file`` through the API and through the server."""
    import uvicorn

    data = Path(file).read_bytes()
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{Path(file).name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    _ = model.reference  # calibrate before timing
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/predict"
    app = create_app(model, ServeSettings(max_upload=len(data) + 1, method=method))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(300):  # 30 s at most
            if server.started:
                break
            time.sleep(0.1)
        else:
            raise BraincamError("the benchmark's server did not start within 30 s")

        def api() -> None:
            model.explain_slices(in_memory(Path(file), Path(file).name), method=method)

        def http() -> None:
            request = urllib.request.Request(url, data=body, headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            try:
                with urllib.request.urlopen(request, timeout=120) as reply:
                    json.load(reply)
            except urllib.error.HTTPError as exc:  # the server refused the file: say why
                reason = json.loads(exc.read() or b"{}").get("error", exc.reason)
                raise BraincamError(f"the server answers {exc.code} for {file}: {reason}") \
                    from None

        seconds = interleaved({"api": api, "http": http}, repeats, model.device, warmups=2)
        times = {name: [1000 * s for s in secs] for name, secs in seconds.items()}
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    return {
        "arch": model.meta["arch"], "image_size": model.config.size, "device": str(model.device),
        "method": method, "file_bytes": len(data), "repeats": repeats,
        "api_explain_ms": round(statistics.median(times["api"]), 1),
        "http_predict_ms": round(statistics.median(times["http"]), 1),
        "http_vs_api": median_ratio(times["http"], times["api"]),
    }
