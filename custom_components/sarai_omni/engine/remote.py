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
- Connect errors are retried with backoff before any byte of an answer; a stream that breaks
  halfway is an error, never retried (the text would be said twice). After a failed request the
  role counts as unavailable for `RETRY_AFTER_S`, so the router falls back instead of waiting.

Imported only where a remote role is configured (aiohttp stays out of worker processes).
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
import json
import logging
import mimetypes
from pathlib import Path
import time
from typing import Any, TypeVar

import aiohttp

from .backend import BenchResult, ChatRequest, Generated, LoadResult, ModelSpec, RemoteModel, Speech, server_label
from .errors import (
    InvalidInput,
    RemoteAuthFailed,
    RemoteError,
    RemoteModelMissing,
    RemoteStreamBroken,
    RemoteUnreachable,
    RequestTimeout,
)
from .prompts import Message, text_of

T = TypeVar("T")  # no PEP 695 generics in engine/: ruff holds it to Python 3.11 (the torch worker)
_LOGGER = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # the longest silence between two chunks of a stream (a prompt's prefill)
LIST_TIMEOUT_S = 10.0
RETRIES = 3  # connection attempts per request
BACKOFF_S = 0.5  # first pause between attempts; doubles each time
RETRY_AFTER_S = 30.0  # how long a role that did not answer is routed around
MAX_STOPS = 4  # OpenAI's limit on stop strings
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ServerTimeoutError)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def list_models(session: aiohttp.ClientSession, base_url: str, api_key: str | None = None) -> list[str]:
    """The model ids a server lists at /v1/models; raises RemoteUnreachable / RemoteAuthFailed / RemoteError."""
    url = f"{base_url.rstrip('/')}/models"
    try:
        async with session.get(
            url, headers=_headers(api_key), timeout=aiohttp.ClientTimeout(total=LIST_TIMEOUT_S)
        ) as resp:
            await _raise_for_status(resp, server_label(base_url))
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise RemoteUnreachable(f"{server_label(base_url)} did not answer /models: {_reason(err)}") from err
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise RemoteUnreachable(f"{server_label(base_url)} does not answer like an OpenAI-compatible server")
    return [str(m["id"]) for m in models if isinstance(m, dict) and "id" in m]


async def probe_modalities(
    session: aiohttp.ClientSession, base_url: str, api_key: str | None = None
) -> dict[str, bool]:
    """What llama-server says the loaded model takes (`/props` modalities); {} where not told."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        async with session.get(
            f"{root}/props", headers=_headers(api_key), timeout=aiohttp.ClientTimeout(total=LIST_TIMEOUT_S)
        ) as resp:
            data = await resp.json(content_type=None) if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    modalities = data.get("modalities") if isinstance(data, dict) else None
    return (
        {k: bool(v) for k, v in modalities.items() if k in ("vision", "audio")} if isinstance(modalities, dict) else {}
    )


async def _raise_for_status(resp: aiohttp.ClientResponse, server: str) -> None:
    if resp.status < 400:
        return
    body = (await resp.text())[:300]
    if resp.status in (401, 403):
        raise RemoteAuthFailed(f"{server} refused the API key (HTTP {resp.status})")
    raise RemoteError(f"{server} answered HTTP {resp.status}: {body}")


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__


def openai_messages(messages: list[Message], remote: RemoteModel) -> list[dict[str, Any]]:
    """The engine's messages in the OpenAI format (blocking: reads attached media files)."""
    return [_openai_message(m, remote) for m in messages]


def _openai_message(msg: Message, remote: RemoteModel) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg["role"]}
    content = msg.get("content")
    if isinstance(content, list):
        out["content"] = [_part(p, remote) for p in content]
        if msg.get("context"):
            out["content"].insert(0, {"type": "text", "text": f"{msg['context']}\n"})
    else:
        text = text_of(content)
        out["content"] = f"{msg['context']}\n{text}" if msg.get("context") else text
    if msg.get("tool_calls"):
        out["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": _arguments_text(call["function"]["arguments"])}}
            for call in msg["tool_calls"]
        ]
    if msg["role"] == "tool":
        out["tool_call_id"] = msg.get("tool_call_id", "")
    return out


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _part(part: dict[str, Any], remote: RemoteModel) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "image":
        if not remote.vision:
            raise InvalidInput(f"the server's model {remote.model} is not configured to take images")
        path = Path(str(part["path"]))
        mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{_b64(path)}"}}
    if kind == "audio":
        if not remote.audio:
            raise InvalidInput(f"the server's model {remote.model} is not configured to take audio")
        path = Path(str(part["path"]))
        return {"type": "input_audio", "input_audio": {"data": _b64(path), "format": path.suffix.lstrip(".") or "wav"}}
    return {"type": "text", "text": str(part.get("text", ""))}


def _b64(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError as err:
        raise InvalidInput(f"cannot read {path.name}: {err.strerror}") from err


def as_tool_call_text(calls: dict[int, dict[str, str]]) -> str:
    """Native tool_calls deltas (gathered by index) as the Qwen text the tool-call parser reads."""
    out = []
    for _, call in sorted(calls.items()):
        try:
            arguments: Any = json.loads(call["arguments"] or "{}")
        except ValueError:
            arguments = call["arguments"]  # the parser reports it as malformed: the model retries
        out.append(f"<tool_call>\n{json.dumps({'name': call['name'], 'arguments': arguments})}\n</tool_call>")
    return "".join(out)


class _StreamState:
    """What one streamed answer has said so far."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_at = 0.0
        self.last_at = 0.0
        self.chunks = 0
        self.finish_reason = ""
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}

    def text_of(self, chunk: dict[str, Any]) -> str:
        """Record one SSE chunk; return its text delta."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            self._add_call(call)
        text = delta.get("content") or ""
        if text or delta.get("tool_calls"):
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.chunks += 1
        return str(text)

    def _add_call(self, call: dict[str, Any]) -> None:
        slot = self.calls.setdefault(int(call.get("index", len(self.calls))), {"name": "", "arguments": ""})
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def result(self) -> Generated:
        completion = int(self.usage.get("completion_tokens") or self.timings.get("predicted_n") or self.chunks)
        decode_s = self.last_at - self.first_at
        tps = float(self.timings.get("predicted_per_second") or 0.0)
        if not tps and completion > 1 and decode_s > 0:
            tps = (completion - 1) / decode_s
        prompt = int(self.usage.get("prompt_tokens") or self.timings.get("prompt_n") or 0)
        cached = int(
            self.timings.get("cache_n") or (self.usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        )
        return Generated(
            finish_reason="tool_calls" if self.calls else (self.finish_reason or "stop"),
            completion_tokens=completion,
            ttft_ms=((self.first_at or time.perf_counter()) - self.started) * 1000,
            tokens_per_second=tps,
            prompt_tokens=prompt + cached if "cache_n" in self.timings else prompt,
            cached_tokens=cached,
            evaluated_prompt_tokens=prompt,
        )


class RemoteBackend:
    """Implements backend.Backend on an OpenAI-compatible server (HA's shared aiohttp session)."""

    calibrates = False
    spare_bytes = 0  # no process of its own  # nothing of this machine's CPU is involved
    crashes = 0  # a server is not ours: its failures are counted apart (`failures`)
    last_exit = None

    def __init__(self, spec: ModelSpec, session: aiohttp.ClientSession | None = None) -> None:
        assert spec.remote is not None
        self.name = spec.role
        self.remote = spec.remote
        self.server = server_label(spec.remote.base_url)
        self._session, self._own_session = session, session is None
        self._connected = False
        self._failures = 0
        self._failed_at: float | None = None
        self._cancel = asyncio.Event()
        self._schema_style = "json_schema"  # switched to "json_object" when the server refuses it
        self._recent: deque[dict[str, Any]] = deque(maxlen=8)  # the last answers, for stats()

    # -- what the pool reads --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._connected

    @property
    def available(self) -> bool:
        return self._failed_at is None or time.monotonic() - self._failed_at >= RETRY_AFTER_S

    @property
    def failures(self) -> int:
        return self._failures

    def resident_bytes(self) -> int:
        return 0

    def crashes_within(self, seconds: float) -> int:
        return 0

    # -- connection -----------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session, self._own_session = aiohttp.ClientSession(), True
        return self._session

    def _failed(self, err: RemoteError) -> RemoteError:
        if not isinstance(err, RemoteStreamBroken | RemoteUnreachable):
            return err  # the server answered: it is up, the request was wrong
        self._failures += 1
        self._failed_at = time.monotonic()
        self._connected = False
        _LOGGER.debug("%s: %s (%d in a row)", self.server, err, self._failures)
        return err

    def _answered(self) -> None:
        self._failures, self._failed_at = 0, None

    async def load(self, spec: ModelSpec) -> LoadResult:
        """Check that the server answers and lists the model (nothing is loaded here)."""
        started = time.perf_counter()
        try:
            models: list[str] = await self._with_retries(
                lambda: list_models(self._http(), self.remote.base_url, self.remote.api_key)
            )
        except RemoteError as err:
            raise self._failed(err) from err
        self._answered()
        if self.remote.model not in models:
            raise RemoteModelMissing(
                f"{self.server} does not serve '{self.remote.model}' (it lists: {', '.join(models) or 'nothing'})"
            )
        self._connected = True
        return LoadResult(load_ms=(time.perf_counter() - started) * 1000, chat_template=True)

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (a coroutine factory), retrying connection failures with backoff."""
        pause = BACKOFF_S
        for _ in range(RETRIES - 1):
            try:
                return await attempt()
            except RemoteUnreachable:
                await asyncio.sleep(pause)
                pause *= 2
        return await attempt()

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        self._cancel.clear()
        body = await asyncio.to_thread(self._body, request)  # media files are read here
        state = _StreamState(time.perf_counter())
        wrap = request.schema_as_tool_call  # the repair schema is the call object: the tags go around it
        try:
            resp = await _before(deadline, self._open(body), self.server)
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
        resp: aiohttp.ClientResponse = await self._with_retries(lambda: self._post(body))
        if resp.status in (400, 422, 500) and schema is not None and self._schema_style == "json_schema":
            text = await resp.text()
            resp.release()
            if "response_format" not in text and "json_schema" not in text:
                raise RemoteError(f"{self.server} answered HTTP {resp.status}: {text[:300]}")
            _LOGGER.debug("%s refuses json_schema response formats: using json_object + schema", self.server)
            self._schema_style = "json_object"
            body["response_format"] = self._response_format(schema)
            resp = await self._with_retries(lambda: self._post(body))
        if resp.status >= 400:
            async with resp:
                await _raise_for_status(resp, self.server)
        return resp

    async def _post(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{self.remote.base_url.rstrip('/')}/chat/completions"
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
        try:
            return await self._http().post(url, json=body, headers=_headers(self.remote.api_key), timeout=timeout)
        except _CONNECT_ERRORS as err:
            raise RemoteUnreachable(f"{self.server} did not answer: {_reason(err)}") from err
        except aiohttp.ClientError as err:
            raise RemoteError(f"{self.server}: {_reason(err)}") from err

    async def _deltas(
        self, resp: aiohttp.ClientResponse, state: _StreamState, deadline: float | None
    ) -> AsyncIterator[str]:
        """Text deltas of an SSE stream (a plain JSON answer from a server that does not stream, too)."""
        if "text/event-stream" not in resp.headers.get("Content-Type", ""):
            data = await _before(deadline, self._read_json(resp), self.server)
            message = ((data.get("choices") or [{}])[0]).get("message") or {}
            yield state.text_of(
                {
                    "choices": [{"delta": message, "finish_reason": data["choices"][0].get("finish_reason")}],
                    "usage": data.get("usage"),
                }
            )
            return
        try:
            while raw := await _before(deadline, resp.content.readline(), self.server):
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
            raise RemoteStreamBroken(f"{self.server} stopped in the middle of the answer: {_reason(err)}") from err
        if not state.finish_reason:  # the connection closed without the server saying it was done
            raise RemoteStreamBroken(f"{self.server} stopped in the middle of the answer")

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            data = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as err:
            raise RemoteStreamBroken(f"{self.server} sent an unreadable answer: {_reason(err)}") from err
        if not isinstance(data, dict) or not data.get("choices"):
            raise RemoteError(f"{self.server} sent an answer without choices")
        return data

    # -- the rest of the seam -------------------------------------------------------------------
    async def media_ready(self) -> str | None:
        return None

    async def prespawn(self) -> None:
        return  # nothing to start: the server is there or not

    async def speak(self, text: str, voice: str) -> Speech:
        raise InvalidInput(f"{self.name}: this model does not speak")

    async def warm(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"source": "server", "remote": True}  # the server keeps its own prompt cache

    async def logits(self, messages: list[Message], top: int) -> dict[str, Any]:
        raise InvalidInput("next-token logits are not available from a remote server")

    async def bench(self) -> BenchResult:
        raise InvalidInput("a remote server is not benchmarked from here")

    async def stats(self) -> dict[str, Any]:
        return {"server": self.server, "model": self.remote.model, "finished": list(self._recent)}

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


async def _before(deadline: float | None, awaitable: Awaitable[T], server: str) -> T:
    """Await within the request's deadline (event-loop time)."""
    if deadline is None:
        return await awaitable
    remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
    try:
        return await asyncio.wait_for(awaitable, remaining)
    except TimeoutError as err:
        raise RequestTimeout(f"{server} did not finish the answer in time") from err
