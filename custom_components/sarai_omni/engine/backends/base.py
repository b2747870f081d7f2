"""The backend seam: a small core protocol every backend implements in full, optional capability
protocols the pool detects, and the typed values that cross it.

Every runner (a llama.cpp worker process, a transformers worker in the torch venv's interpreter, an
OpenAI-compatible server) is a `Backend`: load a role's model, stream a reply, stop, free. What only
some can do is a protocol of its own, found with `isinstance`: `Speaks`, `Warms` (a standing prompt
kept in a cache), `ConstrainsOutput` (grammar / JSON schema), `Calibrates` (measured load variants),
`Prespawns` (a spare process), `LoadsMediaLater` (a projector read in the background), `Inspects`
(logits and stats, for tests and benchmarks). A request that needs one the backend lacks is refused
with a clear error (errors.CapabilityMissing), never silently degraded.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
import io
from typing import Any, Protocol, runtime_checkable
import wave

from .. import defaults
from ..capabilities import GRAMMAR, JSON_SCHEMA
from ..prompts import Message
from ..spec import ModelSpec

SPARE_BYTES = 128 * 2**20  # what an idle llama.cpp worker holds (Python with llama.cpp imported, no model)


@dataclass(slots=True)
class ChatRequest:
    """One generation request."""

    messages: list[Message]
    role: str = ""  # empty: the engine's default role (the first pinned one that chats)
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
    listening: str = ""  # a listening session (Listens): its transcript, after `pcm`, its last piece
    pcm: bytes = field(default=b"", repr=False)

    @property
    def constraints(self) -> frozenset[str]:
        """What the backend must enforce on the output (capabilities.CONSTRAINTS)."""
        return frozenset(k for k, on in ((GRAMMAR, self.grammar), (JSON_SCHEMA, self.json_schema is not None)) if on)

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
        } | ({"listening": self.listening, "pcm": base64.b64encode(self.pcm).decode()} if self.listening else {})


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


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of dataclass `cls` in a worker's message (a newer worker may send more)."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


@dataclass(frozen=True, slots=True)
class Warmed:
    """A standing prompt put in a model's cache: from its context, from disk, or evaluated now."""

    source: str  # context | disk | evaluated | not_cached (a backend without a prefix cache)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    evaluated_prompt_tokens: int = 0
    ms: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Warmed:
        return cls(**_known(cls, data))


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
    audio_tokens: int = 0  # what those clips took of the prompt
    stages: dict[str, float] = field(default_factory=dict)  # the worker's time to first token, per stage (ms)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Generated:
        return cls(**_known(cls, data))


@dataclass(frozen=True, slots=True)
class Heard:
    """What a listening session holds so far."""

    audio_tokens: int = 0
    audio_seconds: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Heard:
        return cls(**_known(cls, data))


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
    """One role's runner. `generate` yields text deltas (str), then exactly one `Generated`."""

    name: str

    @property
    def running(self) -> bool:
        """Whether a model process/connection is up (a loaded model needs it)."""

    @property
    def available(self) -> bool:
        """Whether requests should be sent now (False for a while after a server did not answer)."""

    @property
    def failures(self) -> int:
        """Requests in a row that could not reach the runner (0 once one gets through)."""

    @property
    def crashes(self) -> int:
        """Deaths we did not ask for (busy or idle)."""

    @property
    def last_exit(self) -> int | None:
        """How the last death ended (negative: the signal), or None."""

    def crashes_within(self, seconds: float) -> int:
        """Crashes in the last `seconds` (crash-loop detection)."""

    def resident_bytes(self) -> int:
        """Local memory this backend holds now (0 for a remote server)."""

    async def load(self, spec: ModelSpec) -> LoadResult:
        """Load the model `spec` describes, replacing any loaded one."""

    def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        """Stream a reply; abandoning the iterator stops the work. `deadline` is event-loop time."""

    async def cancel(self) -> None:
        """Stop the running generation at its next token (it ends with finish_reason `cancelled`)."""

    async def unload(self) -> None:
        """Free the model, keep the runner."""

    async def close(self) -> None:
        """Stop the runner and free everything (a later request starts it again)."""

    async def stop_now(self) -> None:
        """End the runner at once, its requests failing (the memory watchdog's last resort)."""


@runtime_checkable
class Speaks(Protocol):
    def speak(
        self, text: str, voice: str, language: str | None = None, deadline: float | None = None
    ) -> AsyncIterator[Speech]:
        """Say `text` in `voice` (a model with a talker): its PCM in pieces, in order, as it is made."""


@runtime_checkable
class Warms(Protocol):
    async def warm(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> Warmed:
        """Put a standing prompt (with the tools a turn lists) in the cache (from disk when saved before)."""


@runtime_checkable
class ConstrainsOutput(Protocol):
    constraints: frozenset[str]  # the capabilities.CONSTRAINTS it enforces while decoding


@runtime_checkable
class Calibrates(Protocol):
    """Load variants (llama.cpp's weight repacking, flash attention) are measured on this machine."""

    async def bench(self) -> BenchResult:
        """Prefill and decode speed of the loaded model."""


@runtime_checkable
class Prespawns(Protocol):
    spare_bytes: int  # what an idle runner process holds (the pool reserves that much for a spare)

    async def prespawn(self) -> None:
        """Start the runner process before a load needs it (it imports its native library while idle)."""


@runtime_checkable
class LoadsMediaLater(Protocol):
    async def media_ready(self) -> str | None:
        """Wait until the projector (read in the background) is in; its error, if it failed."""


@runtime_checkable
class Parallel(Protocol):
    """A runner that takes several requests at once (a server's slots)."""

    @property
    def slots(self) -> int:
        """How many requests it takes at once (1 until it knows)."""


@runtime_checkable
class Listens(Protocol):
    """A runner that takes speech while it is spoken: each piece (16 kHz 16-bit mono PCM, whole 2 s
    windows) is encoded and prefilled at once; a ChatRequest naming the session (`listening`, with
    the last piece as `pcm`) writes the answer. Another request on the runner ends the session."""

    async def listen(self, session: str, messages: list[Message], pcm: bytes) -> Heard:
        """Take `pcm` into `session` (started by its first piece; `messages` carry one audio part)."""

    async def forget(self, session: str) -> None:
        """End `session` and free what it holds (a cancelled or abandoned stream)."""


@runtime_checkable
class Hears(Protocol):
    """A runner that knows how its library encodes audio (llama.cpp: patched or not)."""

    @property
    def hearing(self) -> str | None:
        """ "faithful" (as transformers: 25 tokens/s), "padded_30s" (750 tokens a clip), None: unknown."""


@runtime_checkable
class Serves(Protocol):
    """A runner that is a server elsewhere (of several, the one that answered last)."""

    @property
    def server(self) -> str:
        """That server's URL, without credentials."""


@runtime_checkable
class Inspects(Protocol):
    """What a runner shows of itself (tests and benchmarks)."""

    async def logits(self, messages: list[Message], top: int) -> dict[str, Any]:
        """Next-token logits after `messages`."""

    async def stats(self) -> dict[str, Any]:
        """What the runner knows about itself (loaded model, recent generations)."""


# Makes the backend for a spec; the callback is called when the backend dies on its own.
BackendFactory = Callable[[ModelSpec, Callable[[], None] | None], Backend]
