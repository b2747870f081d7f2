"""A second, minimal implementation of the backend seam (backends/base.py), in process, for tests only.

It proves the seam: the pool, router, services and entities run on it unchanged. It has no model:
a literal grammar (`root ::= "text"`) is answered with that text, an endless one (`root ::= [a-z]
root`) runs until max_tokens or cancel, anything else echoes the last user message. `die()` is what
a crash is for it. It always sits beside the real llama.cpp backend in the tests, never instead.
Beyond the core protocol it `Warms` and constrains output to a grammar (`ConstrainsOutput`, grammar
only: it cannot enforce a JSON schema, so such a request is refused by the engine, as for any backend).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
import re
import time
from typing import Any

from custom_components.sarai_omni.engine.backends.base import ChatRequest, Generated, LoadResult, Warmed
from custom_components.sarai_omni.engine.capabilities import GRAMMAR
from custom_components.sarai_omni.engine.errors import InvalidInput, RequestTimeout, WorkerCrashed
from custom_components.sarai_omni.engine.prompts import Message, has_media
from custom_components.sarai_omni.engine.spec import ModelSpec

MB = 2**20
_LITERAL = re.compile(r'^root ::= "(.*)"\s*$')
_ENDLESS = "root ::= [a-z] root"


class EchoBackend:
    """backend.Backend without a model; resident while loaded: a fixed 8 MB."""

    available = True
    failures = 0
    constraints = frozenset({GRAMMAR})

    def __init__(self, spec: ModelSpec, on_crash: Callable[[], None] | None = None) -> None:
        self.name = spec.role
        self._on_crash = on_crash
        self._crashes: list[float] = []
        self._last_exit: int | None = None
        self._spec: ModelSpec | None = None
        self._cancel = asyncio.Event()
        self._finished: deque[dict[str, Any]] = deque(maxlen=8)
        self._lock = asyncio.Lock()  # one request at a time, like a worker

    @property
    def crashes(self) -> int:
        return len(self._crashes)

    @property
    def last_exit(self) -> int | None:
        return self._last_exit

    @property
    def running(self) -> bool:
        return self._spec is not None

    def resident_bytes(self) -> int:
        return 8 * MB if self._spec else 0

    def crashes_within(self, seconds: float) -> int:
        now = time.monotonic()
        return sum(1 for t in self._crashes if now - t <= seconds)

    def serving(self, spec: ModelSpec) -> bool:
        """Still the load that a generation started on (a crash or reload replaces it)."""
        return self._spec is spec

    def die(self, exit_code: int = -9) -> None:
        """A crash: every request in flight fails, the model is gone, the owner is told."""
        self._spec, self._last_exit = None, exit_code
        self._crashes.append(time.monotonic())
        if self._on_crash is not None:
            self._on_crash()

    async def load(self, spec: ModelSpec) -> LoadResult:
        await asyncio.sleep(0)
        self._spec = spec
        return LoadResult(load_ms=0.1, n_ctx=spec.runtime.n_ctx, chat_template=True)

    async def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        async with self._lock:
            spec = self._require()
            if has_media(request.messages) and spec.mmproj is None:
                raise InvalidInput("this model has no vision projector (mmproj) configured")
            self._cancel.clear()
            reason, n_out, started = "length", 0, time.perf_counter()
            try:
                async for piece in _tokens(request, spec, self, deadline):
                    if piece is None:
                        reason = "stop"
                        break
                    n_out += 1
                    yield piece
                    if self._cancel.is_set():
                        reason = "cancelled"
                        break
                    if n_out >= request.max_tokens:
                        break
            except GeneratorExit, asyncio.CancelledError:  # the consumer gave up: a worker told to cancel
                reason = "cancelled"
                raise
            finally:
                self._finished.append({"finish_reason": reason, "completion_tokens": n_out})
            prompt = sum(len(str(m.get("content", ""))) for m in request.messages)
            yield Generated(
                finish_reason=reason,
                completion_tokens=n_out,
                ttft_ms=1.0,
                tokens_per_second=n_out / max(time.perf_counter() - started, 1e-6),
                prompt_tokens=prompt,
                evaluated_prompt_tokens=prompt,
            )

    async def warm(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> Warmed:
        self._require()
        return Warmed("evaluated", prompt_tokens=len(messages), evaluated_prompt_tokens=len(messages))

    async def stats(self) -> dict[str, Any]:
        return {"loaded": self.running, "finished": list(self._finished)}

    async def cancel(self) -> None:
        self._cancel.set()

    async def unload(self) -> None:
        self._spec = None

    async def close(self) -> None:
        self._spec = None

    async def stop_now(self) -> None:
        self._spec = None
        self._cancel.set()

    def _require(self) -> ModelSpec:
        if self._spec is None:
            raise InvalidInput("no model loaded")
        return self._spec


async def _tokens(
    request: ChatRequest, spec: ModelSpec, backend: EchoBackend, deadline: float | None
) -> AsyncIterator[str | None]:
    """The pieces, one per token time; a crash or the deadline ends them with its error."""
    for piece in _pieces(request):
        await asyncio.sleep(0.001)  # a token's time: other tasks (cancel, kill) run in between
        if not backend.serving(spec):
            raise WorkerCrashed(f"worker '{backend.name}' died (SIGKILL: killed (out of memory?))", -9)
        if deadline is not None and asyncio.get_running_loop().time() > deadline:
            raise RequestTimeout("the model did not answer in time")
        yield piece


def _pieces(request: ChatRequest) -> list[str | None] | _Endless:
    """The reply in token-sized pieces, ending with None (end of turn); endless for [a-z] root."""
    grammar = (request.grammar or "").strip()
    if grammar == _ENDLESS:
        return _Endless()
    if match := _LITERAL.match(grammar):
        text = match.group(1)
    else:
        text = next((str(m.get("content")) for m in reversed(request.messages) if m.get("role") == "user"), "")
    return [*re.findall(r"\S+\s*|\s+", text), None]


class _Endless:
    def __iter__(self) -> _Endless:
        return self

    def __next__(self) -> str:
        return "a"


def echo_factory(spec: ModelSpec, on_crash: Callable[[], None] | None) -> EchoBackend:
    """backend.BackendFactory of the echo backend."""
    return EchoBackend(spec, on_crash)
