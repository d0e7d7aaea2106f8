"""The HTML report of a real paper run, rendered by a real browser (headless Chromium from
the distribution's packages): the screenshot exists and is not blank; every chart has axis
labels and a legend, every card a unit."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

from dgm_helpers import PIPELINES

SVG = "{http://www.w3.org/2000/svg}"
WIDTH, HEIGHT = 1280, 2400


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) scanlines of a PNG, checked
    against its header: a truncated or corrupt file fails here."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + width * channels * depth // 8)
    return width, height, raw


def screenshot(html: Path, png: Path, profile: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed: apt-get install -y chromium"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", html.as_uri()],
        check=True, capture_output=True, timeout=120)


def test_report_of_a_paper_run_in_a_real_browser(run_pr3dict, tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text((PIPELINES / "complement-paper.toml").read_text().replace(
        'scenario = "scenarios/', f'scenario = "{PIPELINES}/scenarios/'))
    run_pr3dict("run", str(pipeline), "--cycles", "150", "--run-id", "br-1").assert_success()
    run_pr3dict("report", "br-1").assert_success()
    html_path = tmp_path / "runs" / "br-1" / "report.html"
    html = html_path.read_text()

    # Every chart: an x and a y axis label, and a legend naming at least one colour.
    charts = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(charts) >= 7
    for chart in charts:
        root = ET.fromstring(chart)
        title = root.get("aria-label")
        texts = {t.get("class"): "".join(t.itertext()) for t in root.iter(f"{SVG}text")
                 if t.get("class")}
        assert texts.get("axis-label x") and texts.get("axis-label y"), title
        legends = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
        assert legends and any("".join(t.itertext()).strip()
                               for t in legends[0].iter(f"{SVG}text")), title
    # Histograms count what they say: trades or entry legs, never a bare "count".
    assert "entry legs</text>" in html and ">count<" not in html
    # Every card carries a unit.
    cards = re.findall(r"<div class='card'><div class='v'>(.*?) <span class='u'>(.*?)</span>"
                       r"</div><div class='k'>(.*?)</div></div>", html)
    assert len(cards) == html.count("<div class='card'>") >= 8
    assert all(unit for _, unit, _ in cards)
    assert {"USDC", "ms", "%", "trades"} <= {unit for _, unit, _ in cards}
    for heading in ("PnL by market", "Drawdowns", "Slowest legs", "Why trades rolled back"):
        assert f"<h2>{heading}" in html

    png = tmp_path / "report.png"
    screenshot(html_path, png, tmp_path / "chromium-profile")
    width, height, raw = png_pixels(png)
    assert (width, height) == (WIDTH, HEIGHT)
    # A blank page compresses to a handful of byte values; a rendered report (text, bars,
    # lines in several colours) to many.
    assert len(set(raw)) > 64, "the screenshot is blank"
