"""``masktopo report`` in a real headless browser (Debian's ``chromium``).

The page of a tiny real run (trained here, a few seconds) and a copy cut short is opened at a laptop
width (1366×768) and a phone width (390×844, mobile emulation) and must:

* load with no console error, uncaught exception or browser log error, and request nothing but
  the page itself and its ``data:`` images (DevTools protocol, through tornado's websocket client);
* not overflow the viewport horizontally (the body, every figure, every table's scroll box, with
  every ``<details>`` opened), decode every embedded figure and scale it to fit;
* give screenshots that are not blank, with the first figure's pixels drawn.

Without chromium the browser tests are skipped (``apt-get install chromium``; ``.ci/run`` installs
it as root) and only the page's text is checked for external references. Without tornado the DevTools test is skipped and the command-line test still checks the
layout (``--dump-dom`` of a copy with a measuring script) and screenshots (``--screenshot``).
"""

from __future__ import annotations

import asyncio
import base64
import html as html_lib
import io
import json
import re
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from masktopo.cli.main import main

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)
VIEWPORTS = {"laptop": (1366, 768, False), "phone": (390, 844, True)}
#: A run folder name as people write them: long, without a space to break at.
RUN_NAME = "rigl_spiral-mlp_cubist-spiral_density0.3_update15_adamw_seed0_a-long-folder-name"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
]

# What the page looks like, measured in the page (the report itself has no script).
MEASURE = """(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const de = document.documentElement, vw = de.clientWidth;
  const box = e => { const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top + scrollY, width: r.width, height: r.height}; };
  return JSON.stringify({
    vw, vh: de.clientHeight, scrollWidth: de.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
    title: document.title,
    images: [...document.images].map(i => ({...box(i), complete: i.complete,
      natural: i.naturalWidth, container: (i.closest('main') || document.body).clientWidth})),
    tables: [...document.querySelectorAll('table')].map(t => {
      const s = t.closest('.scroll');
      return {...box(t), scroller: s ? {...box(s), overflowX: getComputedStyle(s).overflowX} : null,
              fontPx: parseFloat(getComputedStyle(t).fontSize)}; }),
    wide: [...document.body.querySelectorAll('*')].filter(e => !e.closest('.scroll'))
      .filter(e => e.getBoundingClientRect().right > vw + 1
              || (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1))
      .map(e => [e.tagName, (e.textContent || '').trim().slice(0, 40),
                 Math.round(e.getBoundingClientRect().right), e.scrollWidth]),
  });
})()"""


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """The report of a finished tiny run and of a copy cut short (a comparison page)."""
    from masktopo.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("browser")
    full = base / RUN_NAME
    cfg = TrainConfig(method="rigl", model="spiral-mlp", dataset="cubist-spiral", density=0.3,
                      epochs=2, batch_size=1000, update_interval=15, optimizer="adamw",
                      weight_decay=0.0)  # fmt: skip
    train(cfg, full)
    partial = base / "still-training"
    shutil.copytree(full, partial)
    (partial / "summary.json").unlink()
    lines = (partial / "events.jsonl").read_text().splitlines(keepends=True)
    (partial / "events.jsonl").write_text("".join(lines[:3]))
    out = base / "report.html"
    assert main(["report", str(full), str(partial), "--out", str(out)]) == 0
    return out


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href", "srcset", "data", "action", "poster", "background"):
                self.refs.append(f"<{tag} {key}={(value or '')[:60]!r}>")


def external_refs(html: str) -> list[str]:
    """Every reference of the page that is not a ``data:`` URI or an in-page ``#fragment``."""
    p = _Refs()
    p.feed(html)
    refs = [r for r in p.refs if not re.search(r"=['\"](data:|#)", r)]
    for m in re.finditer(r"url\(\s*['\"]?([^'\")]*)", html):
        if not m.group(1).startswith(("data:", "#")):
            refs.append(f"url({m.group(1)[:60]})")
    refs += [f"@import {m.group(0)[:60]}" for m in re.finditer(r"@import[^;]*", html)]
    return refs


def test_the_page_references_nothing_outside_itself(page):
    html = page.read_text(encoding="utf-8")
    assert external_refs(html) == []
    assert "<script" not in html.lower()
    assert html.count("<img ") >= 10  # the figures of both runs and of the comparison


# ------------------------------------------------------------------------------------------------
# Checks shared by both ways of driving chromium
# ------------------------------------------------------------------------------------------------
def check_layout(m: dict, viewport: str) -> None:
    vw = m["vw"]
    assert m["title"].startswith("masktopo report: ")
    assert m["scrollWidth"] <= vw and m["bodyScrollWidth"] <= vw, (
        f"{viewport}: the page is {m['scrollWidth']}px wide in a {vw}px viewport; "
        f"too wide: {m['wide'][:8]}"
    )
    assert m["wide"] == [], f"{viewport}: elements beyond the viewport: {m['wide'][:8]}"
    assert len(m["images"]) >= 10
    for i, img in enumerate(m["images"]):
        where = f"{viewport}: figure {i}"
        assert img["complete"] and img["natural"] > 0, f"{where} does not decode"
        assert img["left"] >= 0 and img["right"] <= vw + 0.5, f"{where} overflows: {img}"
        assert img["height"] > 50, f"{where} is not visible: {img}"
        # scaled to fit: as wide as the column on a phone, a readable size on a laptop
        assert img["width"] >= min(480, img["container"] - 40), f"{where} is too small: {img}"
    assert len(m["tables"]) >= 10
    for i, t in enumerate(m["tables"]):
        where = f"{viewport}: table {i}"
        assert t["width"] > 0 and t["height"] > 0, f"{where} is not visible"
        s = t["scroller"]
        assert s is not None and s["overflowX"] in ("auto", "scroll"), f"{where}: no scroll box"
        assert s["left"] >= 0 and s["right"] <= vw + 0.5, f"{where}: its box overflows: {s}"
        assert t["fontPx"] >= 11, f"{where}: {t['fontPx']}px text"


def check_screenshot(png: bytes, name: str, folder: Path) -> np.ndarray:
    """Not blank: many colours, dark text and coloured marks. Saved for a look on failure."""
    (folder / f"{name}.png").write_bytes(png)
    img = imread(io.BytesIO(png))[..., :3]
    rgb = (img.reshape(-1, 3) * 255).round().astype(np.uint32)
    colours = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).size
    drawn = (rgb < 200).any(axis=1).mean()
    assert colours >= 20 and drawn > 0.01, f"{name}: blank screenshot ({colours} colours)"
    return img


def check_figure_pixels(img: np.ndarray, name: str) -> None:
    """A cut-out of one figure: its plot is drawn (dark and coloured pixels)."""
    rgb = img.reshape(-1, 3)
    assert (rgb < 0.4).all(axis=1).mean() > 0.002, f"{name}: no dark marks (axes, text)"
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    assert (chroma > 0.3).mean() > 0.002, f"{name}: no coloured marks (data)"


# ------------------------------------------------------------------------------------------------
# DevTools protocol (console, network, layout, screenshots)
# ------------------------------------------------------------------------------------------------
class DevTools:
    """A minimal DevTools-protocol client on one page target (tornado's websocket client)."""

    def __init__(self, conn):
        self.conn = conn
        self.next_id = 0
        self.events: list[dict] = []

    async def _read(self, timeout: float) -> dict:
        msg = await asyncio.wait_for(self.conn.read_message(), timeout)
        if msg is None:
            raise RuntimeError("the DevTools connection closed")
        return json.loads(msg)

    async def call(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        mid = self.next_id
        await self.conn.write_message(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            data = await self._read(timeout)
            if data.get("id") == mid:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            if "method" in data:
                self.events.append(data)

    async def wait_for(self, method: str, since: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[since:]:
                if ev["method"] == method:
                    return ev
            data = await self._read(max(0.1, deadline - time.monotonic()))
            if "method" in data:
                self.events.append(data)

    async def evaluate(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"measuring script failed: {r['exceptionDetails']}")
        return r["result"]["value"]


def _launch(profile: Path) -> tuple[subprocess.Popen, str]:
    """chromium with a DevTools port; returns the process and the page target's websocket URL."""
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode}")
        if port_file.is_file() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("chromium did not open its DevTools port within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


async def _visit(ws_url: str, url: str, folder: Path) -> dict:
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url, max_message_size=512 * 2**20)
    try:
        cdp = DevTools(conn)
        for domain in ("Page", "Runtime", "Log", "Network"):
            await cdp.call(f"{domain}.enable")
        results = {}
        for name, (width, height, mobile) in VIEWPORTS.items():
            await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                           deviceScaleFactor=1, mobile=mobile)  # fmt: skip
            since = len(cdp.events)
            await cdp.call("Page.navigate", url=url)
            await cdp.wait_for("Page.loadEventFired", since)
            shot = await cdp.call("Page.captureScreenshot", format="png")
            measured = json.loads(await cdp.evaluate(MEASURE))
            first = measured["images"][0]
            clip = {"x": first["left"], "y": first["top"], "width": first["width"],
                    "height": first["height"], "scale": 1}  # fmt: skip
            fig = await cdp.call("Page.captureScreenshot", format="png", clip=clip,
                                 captureBeyondViewport=True)  # fmt: skip
            results[name] = {
                "measured": measured,
                "shot": base64.b64decode(shot["data"]),
                "figure": base64.b64decode(fig["data"]),
            }
        results["events"] = cdp.events
        return results
    finally:
        conn.close()


@needs_chromium
def test_report_in_chromium_devtools(page, tmp_path):
    pytest.importorskip("tornado.websocket", reason="no websocket client (tornado) installed")
    proc, ws_url = _launch(tmp_path / "profile")
    try:
        t0 = time.monotonic()
        results = asyncio.run(asyncio.wait_for(_visit(ws_url, page.as_uri(), tmp_path), 300))
        elapsed = time.monotonic() - t0
    finally:
        _stop(proc)
    events = results.pop("events")
    errors = [
        e["params"]
        for e in events
        if e["method"] == "Runtime.exceptionThrown"
        or (
            e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
        )
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert errors == [], f"console errors: {errors[:3]}"
    requests = [e["params"]["request"]["url"] for e in events
                if e["method"] == "Network.requestWillBeSent"]  # fmt: skip
    assert page.as_uri() in requests  # the protocol saw the page itself load
    foreign = [u[:80] for u in requests if u != page.as_uri() and not u.startswith("data:")]
    assert foreign == [], f"the page requested {foreign}"
    assert not [e for e in events if e["method"] == "Network.webSocketCreated"]
    for name, r in results.items():  # screenshots first: saved in tmp_path for a look
        check_screenshot(r["shot"], f"{name}-viewport", tmp_path)
        fig = check_screenshot(r["figure"], f"{name}-first-figure", tmp_path)
        check_figure_pixels(fig, f"{name}: first figure")
    for name, r in results.items():
        check_layout(r["measured"], name)
    assert elapsed < 240


# ------------------------------------------------------------------------------------------------
# Command line only (no websocket library needed): --dump-dom and --screenshot
# ------------------------------------------------------------------------------------------------
def _chromium(profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@needs_chromium
def test_report_in_chromium_command_line(page, tmp_path):
    """Layout measured by a script in a copy of the page (the report itself has none)."""
    probe = tmp_path / "probe.html"
    script = (
        "<script>addEventListener('load', () => { const p = document.createElement('pre');"
        f" p.id = 'masktopo-measure'; p.textContent = {MEASURE};"
        " document.body.appendChild(p); });</script>"
    )
    html = page.read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", script + "</body>"), encoding="utf-8")
    for name, (width, height, _mobile) in VIEWPORTS.items():
        proc = _chromium(tmp_path / f"profile-{name}", f"--window-size={width},{height}",
                         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        m = re.search(r'<pre id="masktopo-measure">(.*?)</pre>', proc.stdout, re.S)
        assert m, f"{name}: the measuring script did not run: {proc.stdout[-500:]}"
        measured = json.loads(html_lib.unescape(m.group(1)))
        # the appended <pre> itself is as wide as the body; leave it out
        measured["wide"] = [w for w in measured["wide"] if w[0] != "PRE"]
        check_layout(measured, name)
        shot = tmp_path / f"{name}.png"
        proc = _chromium(tmp_path / f"profile-{name}", f"--window-size={width},{height}",
                         f"--screenshot={shot}", page.as_uri())  # fmt: skip
        assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
        check_screenshot(shot.read_bytes(), f"{name}-cli", tmp_path)
