"""Fixtures of the browser tests: one real Home Assistant per session, one fresh Chromium per test."""

from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path

import pytest

from tests.browser.home_assistant import HomeAssistant
from tests.browser.page import CHROMEDRIVER, CHROMIUM, Page
from tests.openai_server import sockets_open

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Debian's chromium + chromium-driver (scripts/setup installs them where it may use apt),
    the browser tests are skipped and say why."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    skip = pytest.mark.skip(reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt: chromium chromium-driver)")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def home_assistant(tmp_path_factory: pytest.TempPathFactory, gemma: Path) -> Iterator[HomeAssistant]:
    """A real Home Assistant on 127.0.0.1 whose allow-listed models folder holds the embedded gemma."""
    with sockets_open():
        server = HomeAssistant(tmp_path_factory.mktemp("browser_ha"), gemma.parent).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: SARAI_SCREENSHOTS (e.g. docs/screenshots), else a temporary folder."""
    chosen = os.environ.get("SARAI_SCREENSHOTS")
    return (ROOT / chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(socket_enabled: None, screenshots: Path) -> Iterator[Page]:
    browser = Page(screenshots)
    yield browser
    browser.close()
