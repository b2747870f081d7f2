"""Waiting within a request's deadline (event-loop time): the one helper the pool, the worker client and
the remote backend share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import EngineError

T = TypeVar("T")  # no PEP 695 generics in engine/: ruff holds it to Python 3.11


async def within(awaitable: Awaitable[T], deadline: float | None, timed_out: Callable[[], EngineError]) -> T:
    """`awaitable`'s result, or `timed_out()` raised once `deadline` passes (None: no deadline)."""
    if deadline is None:
        return await awaitable
    remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
    try:
        return await asyncio.wait_for(awaitable, remaining)
    except TimeoutError as err:
        raise timed_out() from err
