"""A real OpenAI-compatible server on 127.0.0.1: llama-cpp-python's `python -m llama_cpp.server`.

It serves the tiny GGUF fixtures from this interpreter (the project's .venv), one process per
`OpenAIServer`; `kill()` ends it by its PID (SIGKILL, as a crash would) and `start()` brings it
back on the same port.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time
from typing import Any
import urllib.error
import urllib.request

import pytest_socket

START_GUARD_S = 120.0  # a guard against a hang, not a measurement


@contextlib.contextmanager
def sockets_open() -> Iterator[None]:
    """Sockets for a session fixture, which runs before `socket_enabled` could open them; closed
    again afterwards as HA's test plugin leaves them (only 127.0.0.1, unix sockets)."""
    pytest_socket.enable_socket()
    try:
        yield
    finally:
        pytest_socket.socket_allow_hosts(["127.0.0.1"])
        pytest_socket.disable_socket(allow_unix_socket=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenAIServer:
    """`python -m llama_cpp.server --config_file ...` with the given models (aliases are their ids)."""

    def __init__(self, folder: Path, models: list[dict[str, Any]], api_key: str | None = None) -> None:
        self.port = free_port()
        self.api_key = api_key
        self.config = folder / f"server-{self.port}.json"
        settings: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "models": models}
        if api_key:
            settings["api_key"] = api_key
        self.config.write_text(json.dumps(settings))
        self.log = folder / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        request = urllib.request.Request(f"{self.url}/models", headers=self._headers())
        guard = time.monotonic() + START_GUARD_S
        while time.monotonic() < guard:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(request, timeout=2):
                    return
            except urllib.error.URLError, ConnectionError, TimeoutError:
                time.sleep(0.1)
        raise RuntimeError(f"llama_cpp.server did not answer within {START_GUARD_S} s")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def kill(self) -> None:
        """End the server at once (SIGKILL by its PID), like a crash or a power cut."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def tiny_models(text: Path, vision: Path, mmproj: Path) -> list[dict[str, Any]]:
    """The server's models: `tiny` (text, tools) and `tiny-vision` (with the projector, through mtmd)."""
    common = {"n_ctx": 16384, "n_threads": 1, "verbose": False}
    return [
        {"model": str(text), "model_alias": "tiny", **common},
        {
            "model": str(vision),
            "model_alias": "tiny-vision",
            "clip_model_path": str(mmproj),
            "chat_format": "mtmd",
            **common,
        },
    ]
