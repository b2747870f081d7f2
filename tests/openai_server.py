"""Real OpenAI-compatible servers on 127.0.0.1: llama-cpp-python's `python -m llama_cpp.server`
(`OpenAIServer`, from this interpreter: the project's .venv) and llama.cpp's own `llama-server`
(`LlamaServer`, built by scripts/setup from the same pinned sources: .venv/bin/llama-server).

One process per server; `kill()` ends it by its PID (SIGKILL, as a crash would) and `start()` brings
it back on the same port.
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
from typing import Any, Self
import urllib.error
import urllib.request

import pytest_socket

START_GUARD_S = 120.0  # a guard against a hang, not a measurement
LLAMA_SERVER = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "llama-server"


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

    name = "llama_cpp.server"

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

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.config)]

    def start(self, *, wait: bool = True) -> Self:
        """Start the server; with `wait`, return once it lists its models."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        if wait:
            self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        request = urllib.request.Request(f"{self.url}/models", headers=self._headers())
        guard = time.monotonic() + START_GUARD_S
        while time.monotonic() < guard:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(request, timeout=2):
                    return
            except urllib.error.URLError, ConnectionError, TimeoutError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {START_GUARD_S} s")

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


class LlamaServer(OpenAIServer):
    """`llama-server` serving one model as `alias` (`--jinja`: its chat template, native tool calls),
    with its projector (`--mmproj`: images and audio through mtmd) where given."""

    name = "llama-server"

    def __init__(
        self, folder: Path, model: Path, alias: str, *, mmproj: Path | None = None, api_key: str | None = None,
        parallel: int = 1, n_ctx: int = 16384, extra: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.api_key = api_key
        self.log = folder / f"llama-server-{self.port}.log"
        self.process = None
        self.args = [
            "-m", str(model), "--alias", alias, "--host", "127.0.0.1", "--port", str(self.port),
            "-c", str(n_ctx * parallel), "-np", str(parallel), "-t", "1", "--jinja", "--no-webui", *extra,
        ]  # fmt: skip
        if mmproj is not None:
            self.args += ["--mmproj", str(mmproj)]
        if api_key:
            self.args += ["--api-key", api_key]

    def command(self) -> list[str]:
        return [str(LLAMA_SERVER), *self.args]


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
