"""The page in a real browser: headless Chromium, driven over its DevTools protocol, uploads
through the page's file input; the probabilities, label and overlay pixels it shows equal
the model's own, and a text file renamed ``.png`` shows the server's message.

The server runs in a thread on a free loopback port; Chromium is told to listen on a free
loopback port too (``--remote-debugging-port=0``, read back from ``DevToolsActivePort``).
Every wait is a bounded poll. Needs the Debian package ``chromium`` (skipped without it)
and ``websocket-client``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from braincam.serve import create_app

from .conftest import SIZE

websocket = pytest.importorskip("websocket", reason="needs websocket-client")
uvicorn = pytest.importorskip("uvicorn")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for name in BROWSERS if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="headless Chromium not installed (apt-get install -y chromium)"
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0")
TIMEOUT = 60.0


def poll(check, timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """``check()``'s first truthy value, polled every 0.1 s up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        poll(lambda: server.started, 30, "the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


class Browser:
    """Headless Chromium with one page, driven by DevTools protocol commands."""

    def __init__(self, profile: Path, width: int = 1100, height: int = 900) -> None:
        self.log = profile.with_suffix(".log")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [BROWSER, *FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=err,
            )
        try:
            active = profile / "DevToolsActivePort"
            port = poll(lambda: active.is_file() and active.read_text().split("\n")[0], 30,
                        "Chromium's DevTools port")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.next_id = 0

    def send(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # events arrive in between; skip them
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise TimeoutError(f"no answer to {method}")

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        poll(lambda: self.eval("document.readyState === 'complete' && "
                               "document.body.dataset.state === 'idle'"), what="the page")

    def choose(self, path: Path) -> None:
        """Choose ``path`` in the page's file input (the page uploads it at once)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(path)])

    def upload(self, path: Path) -> str:
        """Choose ``path`` in the page's file input; the page's state once it settles."""
        self.choose(path)
        return poll(lambda: self.eval(
            "['done', 'error'].includes(document.body.dataset.state) && "
            "document.body.dataset.state"), what="the page's answer")

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


SHOWN = """(() => {
  const img = document.getElementById('overlay');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  return {
    label: document.getElementById('label').textContent,
    probs: Object.fromEntries([...document.querySelectorAll('#probs tr')]
      .map(r => [r.dataset.class, Number(r.dataset.p)])),
    warnings: [...document.querySelectorAll('#warnings li:not(.none)')].map(l => l.textContent),
    width: img.naturalWidth, height: img.naturalHeight,
    visible: !document.getElementById('result').hidden,
    overlay: Array.from(rgba),
  };
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    yield b
    b.close()


@pytest.fixture(scope="module")
def url(model) -> Iterator[str]:
    with serving(create_app(model)) as base:
        yield base


def test_upload_shows_predicts_numbers_and_overlay(browser, url, model, png_file):
    browser.open(url)
    assert browser.upload(png_file) == "done"
    shown = browser.eval(SHOWN)
    (expected,) = model.predict([png_file])
    (exp,) = model.explain([png_file], method="gradcam")
    assert shown["visible"] and shown["label"] == expected.label
    assert shown["probs"].keys() == expected.probabilities.keys()
    for name, p in expected.probabilities.items():
        assert shown["probs"][name] == pytest.approx(p, abs=1e-6)
    assert shown["warnings"] == expected.warnings
    assert (shown["width"], shown["height"]) == (SIZE, SIZE)
    rgba = np.array(shown["overlay"], dtype=np.uint8).reshape(SIZE, SIZE, 4)
    assert np.array_equal(rgba[..., :3], exp.overlay)  # the pixels the model explained
    assert "Content Security Policy" not in browser.log.read_text()


def test_text_renamed_png_shows_the_servers_message(browser, url, tmp_path):
    fake = tmp_path / "scan.png"
    fake.write_text("these are notes, not an image\n" * 20)
    browser.open(url)
    assert browser.upload(fake) == "error"
    message = browser.eval("document.getElementById('error').textContent")
    assert message.startswith("scan.png: not a PNG, JPEG, BMP, TIFF, DICOM or NIfTI file")
    assert browser.eval("document.getElementById('result').hidden") is True


def test_a_volume_opens_on_its_most_tumour_like_slice_and_the_slider_moves(
        browser, url, model, volume_file):
    expected = model.predict([volume_file])
    tumour = [p.probabilities["tumor"] for p in expected]
    browser.open(url)
    assert browser.upload(volume_file) == "done"
    assert browser.eval("!document.getElementById('slice-control').hidden") is True
    assert browser.eval("document.getElementById('slice').max") == str(len(expected) - 1)
    focus = int(np.argmax(tumour))
    assert browser.eval("document.getElementById('slice').value") == str(focus)
    for index in (0, len(expected) - 1):
        browser.eval(f"(() => {{ const s = document.getElementById('slice'); s.value = '{index}';"
                     f" s.dispatchEvent(new Event('input')); }})()")
        shown = browser.eval(SHOWN)
        assert shown["probs"]["tumor"] == pytest.approx(tumour[index], abs=1e-6)
        assert browser.eval("document.getElementById('slice-number').textContent") == (
            f"{expected[index].slice} ({index + 1} of {len(expected)})")


def test_the_page_policy_refuses_anything_external(browser, url):
    """Negative control for the CSP checks above: an external image is refused unloaded."""
    browser.open(url)
    directive = browser.eval("""new Promise((done) => {
      document.addEventListener('securitypolicyviolation', (e) => done(e.effectiveDirective));
      setTimeout(() => done('loaded'), 5000);
      const img = new Image();
      img.src = 'http://example.invalid/x.png';
      document.body.appendChild(img);
    })""")
    assert directive == "img-src"



class FirstAnswerLate:
    """An ASGI app that holds the first upload's request for ``delay`` seconds."""

    def __init__(self, app, delay: float) -> None:
        self.app, self.delay, self.uploads = app, delay, 0

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        if scope["type"] == "http" and scope["path"] == "/api/predict":
            self.uploads += 1
            if self.uploads == 1:
                await asyncio.sleep(self.delay)
        await self.app(scope, receive, send)


def test_a_newer_choice_is_shown_even_when_an_older_answer_comes_later(browser, model,
                                                                      png_file, volume_file):
    """The volume's answer arrives after the image's: the page keeps showing the image, the
    file chosen last."""
    slow = FirstAnswerLate(create_app(model), delay=3.0)
    with serving(slow) as base:
        browser.open(base)
        browser.choose(volume_file)
        poll(lambda: slow.uploads == 1, what="the first upload")
        assert browser.upload(png_file) == "done"
        time.sleep(slow.delay + 1.0)  # the first answer would have arrived by now
        assert browser.eval("document.getElementById('file-name').textContent") == \
            png_file.name
        assert browser.eval("document.body.dataset.state") == "done"
