"""Run the dashboard as deployed (`streamlit run dashboard/app.py`) and open it in headless
Chromium: shared by the browser tests and bench/dashboard_load.py.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright through its executable path, so
no browser is ever downloaded. Every wait here is bounded.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect

from infra.stack.certs import CertificateAuthority
from infra.stack.web import WebService, dashboard_service
from traffic_core.settings import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")
VIEWPORT = {"width": 1400, "height": 2400}
"""Tall: Streamlit scrolls inside its main block, so a screenshot shows only the viewport."""
ARTIFACTS = REPO_ROOT / ".local" / "artifacts" / "dashboard"

RUNNING = '[data-testid="stStatusWidget"]'
EXCEPTION = '[data-testid="stException"]'
SKELETON = '[data-testid="stSkeleton"]'
SVG_MAP = ".sensor-map svg circle"
"""The live map's default SVG drawing (dashboard.sensor_map), inside the component's shadow
root, which Playwright's CSS selectors enter."""
DECK_MAP = '[data-testid="stDeckGlJsonChart"] canvas'
"""The deck.gl map, drawn when the heat layer or raster tiles are on."""
MAP_DRAWN = f"{SVG_MAP}, {DECK_MAP}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_dashboard(
    state_dir: Path,
    env: Mapping[str, str],
    timeout: float = 120.0,
    tls: CertificateAuthority | None = None,
) -> Iterator[WebService]:
    """The Streamlit server on a free port until the block ends (its whole process group is
    stopped); `state_dir` receives its pid file and log; over HTTPS with `tls`."""
    service = dashboard_service(state_dir, port=free_port(), tls=tls)
    service.start(env=dict(env), timeout=timeout)
    pid = service.process.pid()
    try:
        yield service
    finally:
        if pid is not None and not service.process.pid_file.exists():
            # Someone wiped the state folder: restore the pid file so stop() finds the server
            # (it still checks the pid's command line, so a recycled pid is left alone).
            service.process.pid_file.parent.mkdir(parents=True, exist_ok=True)
            service.process.pid_file.write_text(str(pid))
        service.stop()


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True
    )


def open_page(browser: Browser, url: str, ready: str, timeout_s: float = 60.0) -> Page:
    """A new tab at url, returned once `ready` (a selector) shows and the script run ended."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url, timeout=timeout_s * 1000)
    settle(page, ready, timeout_s)
    return page


def settle(page: Page, ready: str, timeout_s: float = 60.0) -> None:
    """Wait for `ready` to be visible, for Streamlit's running indicator to go away, and for
    the placeholders of lazily loaded elements (tables, charts, maps) to be replaced."""
    page.locator(ready).first.wait_for(state="visible", timeout=timeout_s * 1000)
    page.locator(RUNNING).wait_for(state="detached", timeout=timeout_s * 1000)
    expect(page.locator(SKELETON)).to_have_count(0, timeout=timeout_s * 1000)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
