"""The transformers backend: Qwen2.5-Omni in a worker (engine/worker/transformers) under the torch venv's
Python. It speaks (`Speaks`); it neither keeps a prefix cache (no `Warms`) nor constrains its output
(no `ConstrainsOutput`: a grammar or JSON-schema request is refused by the engine, never ignored).

Same protocol, crash isolation, RSS measurement and budget as the llama.cpp worker: only the
interpreter and the module differ. torch never enters Home Assistant's venv: a Python that is missing
or cannot import torch is a TorchMissing that says which interpreter and what it lacks.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

from ... import protocol
from ...errors import TorchMissing
from ...spec import FolderModel, ModelSpec
from ..base import LoadResult, Speech
from ..process import WorkerBackend
from .folder import TORCH_RUNTIME_BYTES


class TransformersBackend(WorkerBackend):
    """A transformers worker process (hf_worker.py) under `python` (the torch venv's interpreter)."""

    module = "worker.transformers"  # engine/worker/transformers/__main__.py
    spare_bytes = TORCH_RUNTIME_BYTES  # an idle worker has torch and transformers imported

    def __init__(
        self,
        name: str,
        python: str,
        on_crash: Callable[[], None] | None = None,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(name, python, on_crash, memory_limit=memory_limit)
        self.python = python

    async def prespawn(self) -> None:
        try:
            await super().prespawn()
        except OSError as err:
            raise self._missing(err) from err

    async def load(self, spec: ModelSpec) -> LoadResult:
        try:
            return await super().load(spec)
        except OSError as err:  # the interpreter is not there (or cannot be run)
            raise self._missing(err) from err

    async def speak(
        self, text: str, voice: str, language: str | None = None, deadline: float | None = None
    ) -> AsyncIterator[Speech]:
        """One piece: Omni's talker says the whole sentence (in the language of its text)."""
        data: dict[str, Any] = {}
        async for event in self.client.stream(protocol.OP_SPEAK, {"text": text, "voice": voice}, deadline):
            data = event.get("data", {})
        yield Speech(
            pcm=base64.b64decode(data["audio"]),
            sample_rate=int(data["sample_rate"]),
            voice=str(data["voice"]),
            ms=float(data.get("ms", 0.0)),
        )

    def _missing(self, err: OSError) -> TorchMissing:
        return TorchMissing(f"the torch venv's Python {self.python} cannot be started: {err.strerror or err}")


def transformers_factory(
    memory_limit: int | None = None,
) -> Callable[[ModelSpec, Callable[[], None] | None], TransformersBackend]:
    """backend.BackendFactory for model folders (each with its own interpreter)."""

    def make(spec: ModelSpec, on_crash: Callable[[], None] | None) -> TransformersBackend:
        assert isinstance(spec.source, FolderModel)
        return TransformersBackend(spec.role, spec.source.python, on_crash, memory_limit=memory_limit)

    return make
