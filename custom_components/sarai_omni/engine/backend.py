"""The backend seam: what the pool and the chat stream need from whatever runs a model.

Every backend (the llama.cpp worker process, a remote OpenAI-compatible server, a transformers
worker in the torch venv's interpreter) implements `Backend`. The pool, the router, the HA services and entities
never know which one they talk to: they pass a `ModelSpec` to load and a `ChatRequest` to generate,
and get typed results back. Errors are the engine's typed errors (errors.py), whichever backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
import io
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit
import wave

from . import defaults
from .prompts import Message

SPARE_BYTES = 128 * 2**20  # what an idle llama.cpp worker holds (Python with llama.cpp imported, no model)


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """A model served by an OpenAI-compatible server (llama.cpp server, vLLM, Ollama)."""

    base_url: str  # http://host:port/v1
    model: str  # the id the server lists at /v1/models
    api_key: str | None = field(default=None, repr=False)  # never printed
    vision: bool = False  # the server takes images for this model
    audio: bool = False  # ... and audio (input_audio)


@dataclass(frozen=True, slots=True)
class TransformersModel:
    """How a model folder (Hugging Face layout) runs on transformers/torch, in its own interpreter."""

    python: str  # the torch venv's interpreter: torch never enters Home Assistant's venv
    dtype: str = defaults.TORCH_DTYPE  # float32 or bfloat16
    device: str = defaults.TORCH_DEVICE  # cpu, cuda or auto (cuda when torch sees one)
    quantization: str = defaults.TORCH_QUANTIZATION  # none or int8 (weight-only, the thinker's linears)


def server_label(base_url: str) -> str:
    """scheme://host:port/path of a server URL, without credentials (for logs, sensors, errors)."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}".rstrip("/")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to run one model role: a local GGUF file (`path`), or a `remote` model."""

    role: str
    path: str
    mmproj: str | None = None
    n_ctx: int = defaults.N_CTX
    n_threads: int = defaults.N_THREADS
    n_batch: int = defaults.N_BATCH
    kv_type: str = defaults.KV_TYPE
    n_gpu_layers: int = 0
    pinned: bool = False
    repack: bool | None = None  # CPU weight repacking (a second copy of the weights); None: measure
    flash_attn: bool | None = None  # flash attention (always on with a quantized KV cache); None: measure
    kv_cache_dir: str | None = None  # where standing-prompt KV states are saved (None: not saved)
    prompt_lookup: bool = True  # speculative decoding by prompt lookup, where it measurably pays
    remote: RemoteModel | None = None  # served by a server: no local file, no local memory
    transformers: TransformersModel | None = None  # `path` is a model folder run by transformers

    @property
    def name(self) -> str:
        """What the user calls this model: the file name, or the server's model id."""
        return self.remote.model if self.remote else Path(self.path).name

    @property
    def backend(self) -> str:
        """Which kind of runner this spec needs: llama_cpp, transformers or remote."""
        return "remote" if self.remote else "transformers" if self.transformers else "llama_cpp"

    def load_params(self) -> dict[str, Any]:
        torch = (
            {"dtype": self.transformers.dtype, "device": self.transformers.device,
             "quantization": self.transformers.quantization}
            if self.transformers else {}
        )  # fmt: skip
        return torch | {
            "model_path": self.path,
            "mmproj_path": self.mmproj,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_batch": self.n_batch,
            "kv_type": self.kv_type,
            "n_gpu_layers": self.n_gpu_layers,
            "repack": bool(self.repack),
            "flash_attn": bool(self.flash_attn),
            "kv_cache_dir": self.kv_cache_dir,
            "prompt_lookup": self.prompt_lookup,
        }


@dataclass(slots=True)
class ChatRequest:
    """One generation request."""

    messages: list[Message]
    role: str = "fast"
    tools: list[dict[str, Any]] | None = None
    max_tokens: int = defaults.MAX_TOKENS
    temperature: float = defaults.TEMPERATURE
    grammar: str | None = None
    stop: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    route_reason: str = ""  # why the router chose `role`; shown in the model's state attributes
    ignore_eos: bool = False  # benchmarks: always generate max_tokens
    json_schema: dict[str, Any] | None = None  # constrain the output to JSON of this schema
    schema_as_tool_call: bool = False  # ... inside <tool_call> tags (tool-call repair)
    cameras: tuple[str, ...] = ()  # where the request's images came from (shown, never interpreted)

    def payload(self) -> dict[str, Any]:
        """What a backend needs of the request (routing and timing stay with the engine)."""
        return {
            "messages": self.messages,
            "tools": self.tools,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "grammar": self.grammar,
            "stop": self.stop,
            "ignore_eos": self.ignore_eos,
            "json_schema": self.json_schema,
            "schema_as_tool_call": self.schema_as_tool_call,
        }


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A model that is ready."""

    load_ms: float
    n_ctx: int = 0
    chat_template: bool = False
    vision_pending: bool = False  # the projector is still loading: `media_ready` says when and how
    voices: tuple[str, ...] = ()  # the voices a model with a talker speaks in


@dataclass(frozen=True, slots=True)
class BenchResult:
    """Prefill and decode speed on synthetic tokens (load-variant calibration)."""

    prefill_tps: float
    decode_tps: float


@dataclass(frozen=True, slots=True)
class Generated:
    """How a generation ended and what it cost: the last item a `generate` stream yields."""

    finish_reason: str = ""
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    evaluated_prompt_tokens: int = 0
    dropped_messages: int = 0  # oldest turns left out because the history outgrew n_ctx
    audio_seconds: float = 0.0  # of the clips the prompt carried

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Generated:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Speech:
    """Spoken text: 16-bit mono PCM and what it took."""

    pcm: bytes = field(repr=False)
    sample_rate: int
    voice: str
    ms: float = 0.0

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0

    def wav(self) -> bytes:
        """The PCM in a WAV container (the header says its true length)."""
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(self.pcm)
        return out.getvalue()


@runtime_checkable
class Backend(Protocol):
    """One model role's runner. `generate` yields text deltas (str), then exactly one `Generated`."""

    name: str
    spare_bytes: int  # what an idle runner process holds (a spare is reserved that much; 0: none starts)

    @property
    def crashes(self) -> int:
        """Deaths we did not ask for (busy or idle)."""

    @property
    def last_exit(self) -> int | None:
        """How the last death ended (negative: the signal), or None."""

    @property
    def calibrates(self) -> bool:
        """Whether load variants (llama.cpp's weight repacking) are measured on this machine."""

    @property
    def running(self) -> bool:
        """Whether a model process/connection is up (a loaded model needs it)."""

    @property
    def available(self) -> bool:
        """Whether requests should be sent now (False for a while after a server did not answer)."""

    @property
    def failures(self) -> int:
        """Requests in a row that could not reach the runner (0 once one gets through)."""

    def resident_bytes(self) -> int:
        """Local memory this backend holds now (0 for a remote server)."""

    def crashes_within(self, seconds: float) -> int:
        """Crashes in the last `seconds` (crash-loop detection)."""

    async def load(self, spec: ModelSpec) -> LoadResult:
        """Load the model `spec` describes, replacing any loaded one."""

    def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        """Stream a reply; abandoning the iterator stops the work. `deadline` is event-loop time."""

    async def media_ready(self) -> str | None:
        """Wait until the projector has loaded; its error, if it failed (text still works)."""

    async def prespawn(self) -> None:
        """Get ready for a load that may come (a spare worker process); nothing where nothing starts."""

    async def speak(self, text: str, voice: str) -> Speech:
        """Say `text` in `voice` (a model with a talker); InvalidInput where the model does not speak."""

    async def warm(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Put a standing prompt (with the tools a turn lists) in the cache (from disk when saved before)."""

    async def logits(self, messages: list[Message], top: int) -> dict[str, Any]:
        """Next-token logits after `messages` (tests and benchmarks)."""

    async def bench(self) -> BenchResult:
        """Measure prefill and decode speed of the loaded model."""

    async def stats(self) -> dict[str, Any]:
        """What the runner knows about itself (loaded model, recent generations)."""

    async def cancel(self) -> None:
        """Stop the running generation at its next token (it ends with finish_reason `cancelled`)."""

    async def unload(self) -> None:
        """Free the model, keep the runner."""

    async def close(self) -> None:
        """Stop the runner and free everything (a later request starts it again)."""

    async def stop_now(self) -> None:
        """End the runner at once, its requests failing (the memory watchdog's last resort)."""


# Makes the backend for a spec; the callback is called when the backend dies on its own.
BackendFactory = Callable[[ModelSpec, Callable[[], None] | None], Backend]
