"""Reliability campaign fixtures: the HA fixtures of tests/ha, engines on the tiny models, the
event-loop stall detector, and the figures written at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import time
from typing import Any

import pytest

from tests.engine.conftest import make_engine  # noqa: F401  (fixture)
from tests.ha.conftest import (  # noqa: F401  (fixtures)
    auto_enable_custom_integrations,
    entry_data,
    garden_camera,
    kitchen_light,
    loaded_entry,
    setup_core,
    vision_entry,
)

from .figures import write

STALL_LIMIT_S = 0.05


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    write()


class StallDetector:
    """The longest CPU time one event-loop callback took (thread time: a busy machine that
    preempts the loop does not count, a callback that computes or blocks on CPU does)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.where = ""

    def note(self, seconds: float, handle: Any) -> None:
        if seconds > self.longest:
            self.longest, self.where = seconds, repr(handle)[:300]


@pytest.fixture
def stalls() -> Iterator[StallDetector]:
    detector = StallDetector()
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        started = time.thread_time()
        run(handle)
        detector.note(time.thread_time() - started, handle)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
    try:
        yield detector
    finally:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]
