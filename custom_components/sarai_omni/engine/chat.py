"""One streamed answer: the role's turn in the pool, the backend's text deltas (reasoning filtered out),
and what it cost, kept as the role's last request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .backends.base import ChatRequest, ConstrainsOutput, Generated
from .errors import CapabilityMissing, ContextTooSmall
from .prompts import ThinkFilter, count_parts

if TYPE_CHECKING:
    from .pool import ModelPool
    from .pool.slot import ModelSlot


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The finished answer and what it cost."""

    text: str
    role: str
    model: str
    load_ms: float
    ttft_ms: float
    tokens_per_second: float
    prompt_tokens: int
    cached_tokens: int
    evaluated_prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    dropped_messages: int = 0  # oldest turns left out because the history outgrew n_ctx
    audio_seconds: float = 0.0  # of the clips the prompt carried
    audio_tokens: int = 0  # what those clips took of the prompt
    stages: dict[str, float] = field(default_factory=dict)  # the worker's time to first token, per stage (ms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChatStream:
    """Async iterator over text deltas; `result` is set once the stream is exhausted."""

    def __init__(self, pool: ModelPool, request: ChatRequest, timeout_s: float) -> None:
        self._pool, self._request, self._timeout_s = pool, request, timeout_s
        self.result: ChatResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncIterator[str]:
        req, pool = self._request, self._pool
        deadline = asyncio.get_running_loop().time() + (req.timeout_s or self._timeout_s)
        parts: list[str] = []
        done = Generated()
        thoughts = ThinkFilter()  # reasoning is not the answer: never spoken, never in a result
        _check_constraints(pool.slot(req.role), req)  # before anything is loaded for it
        clock = asyncio.get_running_loop().time
        asked = clock()
        with _named(req.role):
            async with pool.use(req.role, deadline) as (slot, load_ms):
                acquired, first = clock(), 0.0
                async for item in slot.backend.generate(req, deadline):
                    if isinstance(item, str):
                        first = first or clock()
                        if text := thoughts.feed(item):
                            parts.append(text)
                            yield text
                    else:
                        done = item
                if tail := thoughts.flush():
                    parts.append(tail)
                    yield tail
                # the host's share: waiting for the model (queue, load) and the pipe both ways
                sent = done.ttft_ms + done.stages.get("held_ms", 0.0)  # the worker sent its first text then
                host = {"wait_ms": (acquired - asked) * 1000, "pipe_ms": ((first or clock()) - acquired) * 1000 - sent}
                stages = {k: round(v, 1) for k, v in host.items()} | done.stages
                self.result = _result(req, slot.name, load_ms, "".join(parts), done, stages=stages)
                slot.last = replace(  # the last request's figures, beside what the pool keeps of the load
                    slot.last,
                    ttft_ms=round(done.ttft_ms, 1),
                    tokens_per_second=round(done.tokens_per_second, 2),
                    prompt_tokens=done.prompt_tokens,
                    evaluated_prompt_tokens=done.evaluated_prompt_tokens,
                    cached_tokens=done.cached_tokens,
                    route_reason=req.route_reason,
                    images=count_parts(req.messages, "image"),
                    audio_seconds=self.result.audio_seconds,
                    audio_tokens=done.audio_tokens,
                    cameras=tuple(req.cameras),
                )


@contextlib.contextmanager
def _named(role: str) -> Iterator[None]:
    """A prompt too long for a context says whose context it is."""
    try:
        yield
    except ContextTooSmall as err:
        err.role = role
        raise


def _check_constraints(slot: ModelSlot, request: ChatRequest) -> None:
    """A constraint the backend cannot enforce is refused, never dropped."""
    needed = request.constraints
    held = slot.backend.constraints if isinstance(slot.backend, ConstrainsOutput) else frozenset()
    if missing := needed - held:
        raise CapabilityMissing(
            f"the {slot.role} model ({slot.spec.backend}) cannot constrain its output to a "
            f"{' or '.join(sorted(missing))}"
        )


def _result(
    req: ChatRequest, model: str, load_ms: float, text: str, done: Generated, *, stages: dict[str, float]
) -> ChatResult:
    return ChatResult(
        text=text,
        role=req.role,
        model=model,
        load_ms=load_ms,
        ttft_ms=done.ttft_ms,
        tokens_per_second=done.tokens_per_second,
        prompt_tokens=done.prompt_tokens,
        cached_tokens=done.cached_tokens,
        evaluated_prompt_tokens=done.evaluated_prompt_tokens,
        completion_tokens=done.completion_tokens,
        finish_reason=done.finish_reason,
        dropped_messages=done.dropped_messages,
        audio_seconds=round(done.audio_seconds, 2),
        audio_tokens=done.audio_tokens,
        stages=stages,
    )
