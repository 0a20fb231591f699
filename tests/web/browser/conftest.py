"""Chromium, driven by Playwright, for the page's tests (marker ``browser``).

These tests need Debian's Chromium (``apt-get install chromium``) and ``pip install
playwright`` (the ``browser`` extra); Playwright cannot download its own browser here, so it
launches /usr/bin/chromium (``$GPUNN_CHROMIUM`` overrides). They are deselected from the
default run, with the count shown, and run with ``pytest -m browser`` (as ``.ci/run`` does);
asked for without Chromium or Playwright they fail, naming what to install.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Leave the browser tests out unless the marker expression names them."""
    if "browser" in (config.getoption("markexpr") or ""):
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("browser") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def chromium():
    executable = os.environ.get("GPUNN_CHROMIUM", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[browser]'")
    if not Path(executable).exists():
        pytest.fail(f"the browser tests need Chromium at {executable}: apt-get install chromium "
                    "(or set GPUNN_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page_errors():
    """What the page logged as errors (JavaScript exceptions, failed loads); a test that
    provokes some on purpose removes them."""
    return []


@pytest.fixture
def page(chromium, page_errors):
    """A fresh page (1400 x 800, touch enabled); the test fails if the page logged an error."""
    context = chromium.new_context(viewport={"width": 1400, "height": 800}, has_touch=True)
    page = context.new_page()
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: page_errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not page_errors, page_errors


@pytest.fixture(scope="module")
def serve():
    """``serve(net, tests=None) -> url``: gpunn.web's server for ``net`` on a free port."""
    from gpunn import web

    servers = []

    def start(net, tests=None):
        bundle = web.model_bundle(net, tests=tests)
        server = web.make_server(net, web.render_page(bundle))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
