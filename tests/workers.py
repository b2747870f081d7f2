"""Test helpers that reach below the backend seam on purpose: the worker process, and killing it."""

from __future__ import annotations

import os
import signal
from typing import Any

from custom_components.sarai_omni.engine import Engine
from custom_components.sarai_omni.engine.backends.base import Inspects
from custom_components.sarai_omni.engine.backends.client import WorkerClient
from custom_components.sarai_omni.engine.backends.llamacpp import LlamaCppBackend
from tests.echo_backend import EchoBackend


def worker(engine: Engine, role: str = "fast") -> WorkerClient:
    """The llama.cpp worker client of `role` (its process id, its crash count)."""
    backend = engine.pool.slot(role).backend
    assert isinstance(backend, LlamaCppBackend)
    return backend.client


async def worker_stats(engine: Engine, role: str = "fast") -> dict[str, Any]:
    """What the role's runner says of itself (a backend that `Inspects`, or the echo backend)."""
    backend = engine.pool.slot(role).backend
    assert isinstance(backend, Inspects | EchoBackend)
    return await backend.stats()


def kill(engine: Engine, role: str = "fast", sig: int = signal.SIGKILL) -> None:
    """What a crash is for the role's backend: a signal to the worker, or the echo backend dying."""
    backend = engine.pool.slot(role).backend
    if isinstance(backend, EchoBackend):
        backend.die(-sig)
        return
    pid = worker(engine, role).pid
    assert pid is not None
    os.kill(pid, sig)
