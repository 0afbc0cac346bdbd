"""The report in a real browser: headless Chromium loads it offline, every image decodes,
nothing is logged to the console, and anything external would be refused and noticed.

The report itself has no JavaScript. The test loads an instrumented copy: an inline script
(allowed by adding ``script-src 'unsafe-inline'`` to the copy's Content-Security-Policy)
counts images that failed to decode and appends a marker element, read back from
``--dump-dom``. Console messages (CSP refusals, errors) appear on stderr with
``--enable-logging=stderr`` as ``CONSOLE`` lines.

Needs the Debian package ``chromium`` (``apt-get install -y chromium``); skipped without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braincam.report import build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for name in BROWSERS if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="headless Chromium not installed (apt-get install -y chromium)"
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000")
PROBE = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  const marker = document.createElement("div");
  marker.id = "browser-probe";
  marker.dataset.images = document.images.length;
  marker.dataset.broken = broken.length;
  marker.dataset.sections = ["findings", "data", "training", "metrics", "gallery",
    "model-audit", "settings"].filter(id => document.getElementById(id)).length;
  document.body.appendChild(marker);
});
</script>
"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


def instrumented(report: Path, out: Path, extra_html: str = "") -> Path:
    html = report.read_text(encoding="utf-8")
    html = html.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; "
                        "script-src 'unsafe-inline'", 1)
    html = html.replace("</body>", f"{extra_html}{PROBE}</body>", 1)
    out.write_text(html, encoding="utf-8")
    return out


def probe(dom: str) -> dict[str, int]:
    marker = re.search(r'<div id="browser-probe"([^>]*)>', dom)
    assert marker, "the probe script did not run"
    return {k: int(v) for k, v in re.findall(r'data-(\w+)="(\d+)"', marker.group(1))}


@pytest.fixture(scope="module")
def report(tmp_path_factory, kit) -> Path:
    return build_report(kit.make_fake_run(tmp_path_factory.mktemp("browser")))


def test_every_image_decodes_and_the_console_stays_silent(report, tmp_path):
    page = instrumented(report, tmp_path / "page.html")
    done = chromium(tmp_path, "--dump-dom", page.as_uri())
    counts = probe(done.stdout)
    assert counts == {"images": 13, "broken": 0, "sections": 7}
    assert "CONSOLE" not in done.stderr, done.stderr


def test_an_external_resource_would_be_refused_and_caught(report, tmp_path):
    """Negative control: the checks above would notice a link leaking into the report."""
    page = instrumented(report, tmp_path / "page.html",
                        '<img src="https://example.invalid/x.png" alt="leak">')
    done = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert probe(done.stdout)["broken"] == 1
    assert re.search(r"CONSOLE.*Content Security Policy", done.stderr)


def test_screenshot_shows_a_rendered_page(report, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}",
             report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert pixels.shape == (1600, 1280, 3)
    # a laid-out page: mostly white background, with text and coloured finding boxes
    assert 0.5 < (pixels.min(axis=2) > 245).mean() < 0.95
    critical = (np.abs(pixels - (253, 232, 235)).max(axis=2) < 4).mean()  # --crit-bg
    assert critical > 0.01


def test_the_segmenter_page_decodes_every_image_silently(tmp_path, kit):
    report = build_report(kit.make_segment_run(tmp_path / "seg"))
    page = instrumented(report, tmp_path / "page.html")
    done = chromium(tmp_path, "--dump-dom", page.as_uri())
    # the Dice box plot, the training curves and three overlays; data, training, settings
    assert probe(done.stdout) == {"images": 5, "broken": 0, "sections": 3}
    assert "CONSOLE" not in done.stderr, done.stderr
