"""The remote backend: a model role served by an OpenAI-compatible server over HTTP.

llama.cpp's `llama-server`, `python -m llama_cpp.server`, vLLM and Ollama all speak
`/v1/chat/completions` with SSE streaming. This module turns the engine's requests into that
protocol and the stream back into the engine's text deltas and `Generated`:

- Tool calls: `tools` are sent; native `tool_calls` deltas are gathered and handed on as Qwen
  `<tool_call>` text, so the one tool-call parser (toolcalls.py) serves every backend. Servers that
  answer with `<tool_call>` text (Qwen templates without a tool parser) pass through unchanged.
- Images become `image_url` data URLs, audio `input_audio` (wav), where the role takes them.
- Structured output: `response_format` json_schema (OpenAI, vLLM, llama-server); a server that
  refuses that form gets llama.cpp's `json_object` + `schema` (llama-cpp-python's server), remembered.
  A GBNF `grammar` is passed through (a llama.cpp extension; other servers ignore it).
- Several servers of the same model (`RemoteModel.also`): a request goes to the one that answered
  last; one that does not answer, or answers 503 (llama-server loading its model), is skipped and
  asked again later (failover.py). The sensors name the server that answered.
- Connect errors and 503s are retried with backoff before any byte of an answer; a stream that breaks
  halfway is an error, never retried (the text would be said twice). While no server answers, the
  role counts as unavailable (`failover.DOWN_FOR_S`), so the router falls back instead of waiting.

Imported only where a remote role is configured (aiohttp stays out of worker processes).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
import json
import logging
import time
from typing import Any, TypeVar

import aiohttp

from ...capabilities import GRAMMAR, JSON_SCHEMA
from ...deadlines import within
from ...errors import (
    RemoteError,
    RemoteLoading,
    RemoteModelMissing,
    RemoteStreamBroken,
    RemoteUnreachable,
    RequestTimeout,
)
from ...spec import ModelSpec, RemoteModel, server_label
from ..base import ChatRequest, Generated, LoadResult
from .failover import Failover
from .openai import StreamState, as_tool_call_text, openai_messages
from .server import headers, list_models, not_ready, probe_modalities, props, raise_for_status, reason

__all__ = ["RemoteBackend", "as_tool_call_text", "list_models", "openai_messages", "probe_modalities"]

T = TypeVar("T")  # no PEP 695 generics in engine/: ruff holds it to Python 3.11 (the torch worker)
_LOGGER = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # the longest silence between two chunks of a stream (a prompt's prefill)
RETRIES = 3  # connection attempts per request
BACKOFF_S = 0.5  # first pause between attempts; doubles each time
LOADING_WAIT_S = 120.0  # how long a server that says it is loading its model is waited for (within a deadline)
LOADING_POLL_S = 0.5
MAX_STOPS = 4  # OpenAI's limit on stop strings
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ServerTimeoutError)


class RemoteBackend:
    """Implements backend.Backend on an OpenAI-compatible server (HA's shared aiohttp session)."""

    crashes = 0  # a server is not ours: its failures are counted apart (`failures`)
    last_exit = None
    # response_format json_schema (every server here); a GBNF grammar is llama.cpp's extension,
    # passed as `grammar` (llama-server and llama-cpp-python's server decode with it)
    constraints = frozenset({GRAMMAR, JSON_SCHEMA})

    def __init__(self, spec: ModelSpec, session: aiohttp.ClientSession | None = None) -> None:
        assert isinstance(spec.source, RemoteModel)
        self.name = spec.role
        self.remote = spec.source
        self._servers = Failover(spec.source.urls)
        self._session, self._own_session = session, session is None
        self._connected = False
        self._failures = 0
        self.loading_waits = 0  # times a server said it was still loading its model (503)
        self._slots = 1
        self.last_timings: dict[str, Any] = {}  # llama-server's own figures for the last answer
        self._cancel = asyncio.Event()
        self._schema_style = "json_schema"  # switched to "json_object" when the server refuses it
        self._recent: deque[dict[str, Any]] = deque(maxlen=8)  # the last answers, for stats()

    # -- what the pool reads --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._connected

    @property
    def available(self) -> bool:
        return self._servers.any_up

    @property
    def slots(self) -> int:
        """Requests the current server takes at once (llama-server's `--parallel`, from /props)."""
        return self._slots

    @property
    def server(self) -> str:
        """The server that answered last (the first one listed, before any answer)."""
        return self._servers.label

    @property
    def failures(self) -> int:
        return self._failures

    def resident_bytes(self) -> int:
        return 0

    def crashes_within(self, seconds: float) -> int:
        return 0

    # -- connection -----------------------------------------------------------------------------
    def _too_slow(self) -> RequestTimeout:
        return RequestTimeout(f"{self.server} did not finish the answer in time")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session, self._own_session = aiohttp.ClientSession(), True
        return self._session

    def _failed(self, err: RemoteError) -> RemoteError:
        if not isinstance(err, RemoteStreamBroken | RemoteUnreachable):
            return err  # the server answered: it is up, the request was wrong
        if isinstance(err, RemoteStreamBroken):
            self._servers.failed(self._servers.current)
        self._failures += 1
        self._connected = False
        _LOGGER.debug("%s: %s (%d in a row)", self.server, err, self._failures)
        return err

    def _answered(self) -> None:
        self._failures = 0

    async def load(self, spec: ModelSpec) -> LoadResult:
        """Find a server that answers and lists the model (nothing is loaded here)."""
        started = time.perf_counter()
        try:
            await self._with_retries(lambda: self._first_that_answers(self._lists_model))
        except RemoteError as err:
            raise self._failed(err) from err
        told = (await props(self._http(), self._servers.current, self.remote.api_key)).get("total_slots")
        self._slots = max(1, told) if isinstance(told, int) else 1
        self._answered()
        self._connected = True
        return LoadResult(load_ms=(time.perf_counter() - started) * 1000, chat_template=True)

    async def _first_that_answers(self, attempt: Callable[[str], Awaitable[T]]) -> T:
        """`attempt` on each server in failover order: the first that succeeds becomes the current one;
        one that does not answer (or answers 503) or lacks the model is asked last for a while."""
        missing: RemoteModelMissing | None = None
        unreachable: RemoteUnreachable | None = None
        for url in self._servers.order():
            try:
                result = await attempt(url)
            except RemoteModelMissing as err:
                missing = err
            except RemoteUnreachable as err:
                unreachable = _worth_waiting(unreachable, err)
            else:
                self._servers.answered(url)
                return result
            self._servers.failed(url)
        raise missing or unreachable or RemoteUnreachable("no server")

    async def _lists_model(self, url: str) -> None:
        models = await list_models(self._http(), url, self.remote.api_key)
        if self.remote.model not in models:
            raise RemoteModelMissing(
                f"{server_label(url)} does not serve '{self.remote.model}' (it lists: {', '.join(models) or 'nothing'})"
            )

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (a coroutine factory), retrying connection failures with backoff; a server
        that is loading its model (and no other one answers) is waited for, up to LOADING_WAIT_S."""
        pause, tries, loading_since = BACKOFF_S, 1, time.monotonic()
        while True:
            try:
                return await attempt()
            except RemoteLoading:
                if time.monotonic() - loading_since >= LOADING_WAIT_S:
                    raise
                self.loading_waits += 1
                await asyncio.sleep(LOADING_POLL_S)
            except RemoteUnreachable:
                if tries >= RETRIES:
                    raise
                tries += 1
                await asyncio.sleep(pause)
                pause *= 2

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        self._cancel.clear()
        body = await asyncio.to_thread(self._body, request)  # media files are read here
        state = StreamState(time.perf_counter())
        wrap = request.schema_as_tool_call  # the repair schema is the call object: the tags go around it
        try:
            resp = await within(self._open(body), deadline, self._too_slow)
            async with resp:
                if wrap:
                    yield "<tool_call>\n"
                async for text in self._deltas(resp, state, deadline):
                    if text:
                        yield text
                    if self._cancel.is_set():
                        state.finish_reason = "cancelled"
                        break
        except RemoteError as err:
            raise self._failed(err) from err
        self._answered()
        if wrap:
            yield "\n</tool_call>"
        if state.calls:
            yield as_tool_call_text(state.calls)
        done = state.result()
        self.last_timings = state.timings
        self._recent.append({"finish_reason": done.finish_reason, "completion_tokens": done.completion_tokens})
        yield done

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.remote.model,
            "messages": openai_messages(request.messages, self.remote),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.tools:
            body["tools"] = request.tools
            if request.grammar:  # it decides the whole answer (llama-server refuses a grammar beside tool parsing)
                body["tool_choice"] = "none"
        if request.stop:
            body["stop"] = request.stop[:MAX_STOPS]
        if request.grammar:
            body["grammar"] = request.grammar
        if request.ignore_eos:
            body["ignore_eos"] = True
        if request.json_schema is not None:
            body["response_format"] = self._response_format(request.json_schema)
            body["_schema"] = request.json_schema  # kept to switch the form if the server refuses this one
        return body

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._schema_style == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}

    async def _open(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST the request (connection failures retried); a refused json_schema switches form once."""
        schema = body.pop("_schema", None)
        resp: aiohttp.ClientResponse = await self._with_retries(self._posting(body))
        if resp.status in (400, 422, 500) and schema is not None and self._schema_style == "json_schema":
            text = await resp.text()
            resp.release()
            if "response_format" not in text and "json_schema" not in text:
                raise RemoteError(f"{self.server} answered HTTP {resp.status}: {text[:300]}")
            _LOGGER.debug("%s refuses json_schema response formats: using json_object + schema", self.server)
            self._schema_style = "json_object"
            body["response_format"] = self._response_format(schema)
            resp = await self._with_retries(self._posting(body))
        if resp.status >= 400:
            async with resp:
                await raise_for_status(resp, self.server)
        return resp

    def _posting(self, body: dict[str, Any]) -> Callable[[], Awaitable[aiohttp.ClientResponse]]:
        """One attempt: POST `body` to the servers in failover order, the first that answers wins."""
        return lambda: self._first_that_answers(lambda url: self._post(url, body))

    async def _post(self, base_url: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{base_url.rstrip('/')}/chat/completions"
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
        try:
            resp = await self._http().post(url, json=body, headers=headers(self.remote.api_key), timeout=timeout)
        except _CONNECT_ERRORS as err:
            raise RemoteUnreachable(f"{server_label(base_url)} did not answer: {reason(err)}") from err
        except aiohttp.ClientError as err:
            raise RemoteError(f"{server_label(base_url)}: {reason(err)}") from err
        if resp.status == 503:  # llama-server loading its model, or a server shedding load: the next one
            async with resp:
                raise await not_ready(resp, server_label(base_url))
        return resp

    async def _deltas(
        self, resp: aiohttp.ClientResponse, state: StreamState, deadline: float | None
    ) -> AsyncIterator[str]:
        """Text deltas of an SSE stream (a plain JSON answer from a server that does not stream, too)."""
        if "text/event-stream" not in resp.headers.get("Content-Type", ""):
            data = await within(self._read_json(resp), deadline, self._too_slow)
            message = ((data.get("choices") or [{}])[0]).get("message") or {}
            yield state.text_of(
                {
                    "choices": [{"delta": message, "finish_reason": data["choices"][0].get("finish_reason")}],
                    "usage": data.get("usage"),
                }
            )
            return
        try:
            while raw := await within(resp.content.readline(), deadline, self._too_slow):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                chunk = json.loads(payload)
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise RemoteError(f"{self.server}: {chunk['error'].get('message', chunk['error'])}")
                yield state.text_of(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ValueError) as err:
            raise RemoteStreamBroken(f"{self.server} stopped in the middle of the answer: {reason(err)}") from err
        if not state.finish_reason:  # the connection closed without the server saying it was done
            raise RemoteStreamBroken(f"{self.server} stopped in the middle of the answer")

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            data = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as err:
            raise RemoteStreamBroken(f"{self.server} sent an unreadable answer: {reason(err)}") from err
        if not isinstance(data, dict) or not data.get("choices"):
            raise RemoteError(f"{self.server} sent an answer without choices")
        return data

    # -- the rest of the seam -------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "model": self.remote.model,
            "finished": list(self._recent),
            "loading_waits": self.loading_waits,
        }

    async def cancel(self) -> None:
        self._cancel.set()

    async def unload(self) -> None:
        self._connected = False

    async def stop_now(self) -> None:
        self._cancel.set()  # nothing of ours holds memory: the answer just stops

    async def close(self) -> None:
        self._connected = False
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None


def _worth_waiting(before: RemoteUnreachable | None, now: RemoteUnreachable) -> RemoteUnreachable:
    """Of two servers that did not answer, a loading one (worth waiting for) is the one to report."""
    return before if isinstance(before, RemoteLoading) and not isinstance(now, RemoteLoading) else now
