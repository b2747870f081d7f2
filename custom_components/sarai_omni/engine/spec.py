"""What a role is configured as: its model's source, how it runs, and its policy (typed, frozen).

A role is one model: a GGUF file (llama.cpp), a model folder (transformers, in the torch venv's
interpreter) or a model on an OpenAI-compatible server. Its capabilities are declared in the
configuration or read from the model's files (capabilities.py); which backend runs it follows from
its source alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import defaults

BACKEND_LLAMA_CPP, BACKEND_TRANSFORMERS, BACKEND_REMOTE = "llama_cpp", "transformers", "remote"


@dataclass(frozen=True, slots=True)
class GGUFModel:
    """A GGUF file run by llama.cpp, with its multimodal projector (mmproj) if any."""

    path: str
    mmproj: str | None = None


@dataclass(frozen=True, slots=True)
class FolderModel:
    """A Hugging Face model folder run by transformers/torch in its own interpreter."""

    path: str
    python: str  # the torch venv's interpreter: torch never enters Home Assistant's venv
    dtype: str = defaults.TORCH_DTYPE  # float32 or bfloat16
    device: str = defaults.TORCH_DEVICE  # cpu, cuda or auto (cuda when torch sees one)
    quantization: str = defaults.TORCH_QUANTIZATION  # none or int8 (weight-only, the thinker's linears)


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """A model served by an OpenAI-compatible server (llama.cpp server, vLLM, Ollama)."""

    base_url: str  # http://host:port/v1
    model: str  # the id the server lists at /v1/models
    api_key: str | None = field(default=None, repr=False)  # never printed
    vision: bool = False  # the server takes images for this model
    audio: bool = False  # ... and audio (input_audio)
    also: tuple[str, ...] = ()  # more servers of the same model: a request goes to one that answers

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.base_url, *(u for u in self.also if u != self.base_url))


Source = GGUFModel | FolderModel | RemoteModel


@dataclass(frozen=True, slots=True)
class Runtime:
    """How a local model runs: context, threads, batch, KV cache, GPU layers, decoding."""

    n_ctx: int = defaults.N_CTX
    n_threads: int = defaults.N_THREADS
    n_batch: int = defaults.N_BATCH
    kv_type: str = defaults.KV_TYPE
    n_gpu_layers: int = 0
    prompt_lookup: bool = defaults.PROMPT_LOOKUP  # speculative decoding by prompt lookup (an option)
    kv_cache_dir: str | None = None  # where standing-prompt KV states are saved (None: not saved)
    voices_dir: str | None = None  # reference clips a Qwen3-TTS voice speaks in (beside the shipped one)


@dataclass(frozen=True, slots=True)
class LoadVariant:
    """How llama.cpp loads a model on this machine, decided by measurement (pool/calibration.py)."""

    repack: bool = False  # CPU weight repacking: a second copy of the weights beside the mmap'd file
    flash_attn: bool = False  # always on with a quantized KV cache (the worker sees to it)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One role: its name, its model, how it runs, whether it stays loaded, what it can do."""

    role: str
    source: Source
    runtime: Runtime = Runtime()
    pinned: bool = False  # kept loaded (never evicted, never unloaded when idle)
    capabilities: frozenset[str] | None = None  # declared; None: read from the model's files
    variant: LoadVariant | None = None  # None: measured where the backend calibrates, else the plain way

    @property
    def name(self) -> str:
        """What the user calls this model: the file or folder name, or the server's model id."""
        if isinstance(self.source, RemoteModel):
            return self.source.model
        return Path(self.source.path).name

    @property
    def backend(self) -> str:
        """Which kind of runner this role needs: llama_cpp, transformers or remote."""
        if isinstance(self.source, RemoteModel):
            return BACKEND_REMOTE
        return BACKEND_TRANSFORMERS if isinstance(self.source, FolderModel) else BACKEND_LLAMA_CPP

    @property
    def path(self) -> str:
        """The local model file or folder ("" for a role on a server)."""
        return "" if isinstance(self.source, RemoteModel) else self.source.path

    @property
    def mmproj(self) -> str | None:
        return self.source.mmproj if isinstance(self.source, GGUFModel) else None


def server_label(base_url: str) -> str:
    """scheme://host:port/path of a server URL, without credentials (for logs, sensors, errors)."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}".rstrip("/")
