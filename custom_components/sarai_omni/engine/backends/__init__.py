"""The backends behind the seam (base.py): which one runs a role follows from its model's source.

- llamacpp.py: a GGUF file, in a llama.cpp worker process under HA's Python;
- transformers/: a model folder, in a transformers worker under the torch venv's Python;
- remote/: a model on an OpenAI-compatible server (aiohttp; imported only where a role needs it).
process.py is the worker-process lifecycle the two local ones share; client.py the worker's protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..spec import FolderModel, ModelSpec, RemoteModel
from .base import Backend, BackendFactory
from .llamacpp import llama_cpp_factory
from .transformers import transformers_factory

if TYPE_CHECKING:
    import aiohttp


def default_factory(
    python: str | None = None, session: aiohttp.ClientSession | None = None, memory_limit: int | None = None
) -> BackendFactory:
    """Local workers each get a hard `memory_limit` (bytes) where the kernel offers one (cgroup.py)."""
    local, torch = llama_cpp_factory(python, memory_limit), transformers_factory(memory_limit)

    def make(spec: ModelSpec, on_crash: Callable[[], None] | None) -> Backend:
        if isinstance(spec.source, RemoteModel):
            from .remote import RemoteBackend  # noqa: PLC0415  (aiohttp stays out of what workers could import)

            return RemoteBackend(spec, session)
        if isinstance(spec.source, FolderModel):
            return torch(spec, on_crash)
        return local(spec, on_crash)

    return make
