"""The remote backend against real OpenAI-compatible servers on 127.0.0.1: llama.cpp's llama-server
(built by scripts/setup from the pinned sources) and llama-cpp-python's llama_cpp.server; the tests
on `served` run on both. What only llama-server does is in test_llama_server.py.

A fake server (aiohttp on 127.0.0.1) is used only for what the real one cannot be made to do: an
HTTP 500, a stream that stops without its end, a first byte that never comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import json
from pathlib import Path
from typing import Any

from aiohttp import web
import pytest

from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig
from custom_components.sarai_omni.engine.backends.remote import (
    RemoteBackend,
    as_tool_call_text,
    list_models,
    openai_messages,
)
from custom_components.sarai_omni.engine.backends.remote.openai import StreamState
from custom_components.sarai_omni.engine.capabilities import SEE
from custom_components.sarai_omni.engine.errors import (
    InvalidInput,
    RemoteAuthFailed,
    RemoteError,
    RemoteModelMissing,
    RemoteStreamBroken,
    RemoteUnreachable,
    RequestTimeout,
)
from custom_components.sarai_omni.engine.spec import RemoteModel
from custom_components.sarai_omni.engine.toolcalls import ToolCall, ToolCallParser
from tests.conftest import Served, server_models
from tests.openai_server import OpenAIServer, free_port
from tests.specs import remote_spec

pytestmark = pytest.mark.usefixtures("socket_enabled")
HELLO = 'root ::= "Hello from the server."'
ENDLESS = "root ::= [a-z ]+"
# llama-server's schema grammars allow up to 22 characters of whitespace between JSON tokens, and a
# random-weight model takes them: room for the longest answer the schema allows.
SCHEMA_ROOM = 400
SCHEMA = {"type": "object", "properties": {"light": {"enum": ["on", "off"]}}, "required": ["light"]}
USER = [{"role": "user", "content": "hi"}]


def remote_engine(
    url: str, *, fast: str = "tiny", quality: str | None = None, quality_url: str | None = None,
    api_key: str | None = None,
) -> Engine:  # fmt: skip
    specs = [remote_spec("fast", pinned=True, model=RemoteModel(url, fast, api_key=api_key))]
    if quality:
        vision = RemoteModel(quality_url or url, quality, api_key=api_key, vision=True)
        specs.append(remote_spec("quality", model=vision))
    return Engine(EngineConfig(models=tuple(specs), ram_budget_mb=64, request_timeout_s=120))


@pytest.fixture
async def engine(served: Served) -> AsyncIterator[Engine]:
    eng = remote_engine(served.url(), quality="tiny-vision", quality_url=served.url("tiny-vision"))
    yield eng
    await eng.close()


async def test_streamed_answer_with_figures(engine: Engine) -> None:
    stream = engine.chat(ChatRequest(USER, grammar=HELLO, max_tokens=40))
    deltas = [d async for d in stream]
    assert len(deltas) > 1  # streamed, not one block
    result = stream.result
    assert result is not None
    assert result.text == "Hello from the server."
    assert (result.model, result.finish_reason) == ("tiny", "stop")
    assert result.ttft_ms > 0
    assert result.completion_tokens - len(deltas) in (0, 1)  # llama-server counts the end-of-text token too
    status = engine.status("fast")
    assert (status.state, status.remote, status.rss_mb, status.estimate_mb) == ("remote", True, 0, 0)
    assert engine.snapshot().used_mb == 0  # a remote role costs no local RAM


async def test_tool_call_text_reaches_the_parser(engine: Engine) -> None:
    call = '<tool_call>\\n{\\"name\\": \\"HassTurnOn\\", \\"arguments\\": {\\"name\\": \\"Kitchen\\"}}\\n</tool_call>'
    tools = [{"type": "function", "function": {"name": "HassTurnOn", "parameters": {"type": "object"}}}]
    result = await engine.complete(ChatRequest(USER, tools=tools, grammar=f'root ::= "{call}"', max_tokens=200))
    events = [*ToolCallParser().feed(result.text), *ToolCallParser().flush()]
    assert any(
        isinstance(e, ToolCall) and e.name == "HassTurnOn" and e.arguments == {"name": "Kitchen"} for e in events
    )


async def test_tool_call_repair_is_constrained_on_the_server(engine: Engine) -> None:
    """The retry after a malformed call: the server's answer is held to a valid call, tags around it."""
    from custom_components.sarai_omni.engine.toolcalls import tool_call_schema

    parameters = {"type": "object", "properties": {"name": {"enum": ["Kitchen"]}}, "required": ["name"]}
    tools = [{"type": "function", "function": {"name": "HassTurnOn", "parameters": parameters}}]
    request = ChatRequest(
        USER, tools=tools, json_schema=tool_call_schema(tools), schema_as_tool_call=True, max_tokens=SCHEMA_ROOM
    )
    result = await engine.complete(request)
    events = [*ToolCallParser().feed(result.text)]
    assert events == [ToolCall("HassTurnOn", {"name": "Kitchen"})]


def test_native_tool_calls_become_qwen_text() -> None:
    """Servers with a tool parser (vLLM, llama-server --jinja) stream `tool_calls` deltas."""
    state = StreamState(0.0)
    chunks: list[dict[str, Any]] = [
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "HassTurnOn"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"name": '}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Kitchen"}'}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}], "usage": {"completion_tokens": 9}},
    ]
    for chunk in chunks:
        assert state.text_of(chunk) == ""
    events = [*ToolCallParser().feed(as_tool_call_text(state.calls))]
    assert events == [ToolCall("HassTurnOn", {"name": "Kitchen"})]
    assert state.result().finish_reason == "tool_calls"
    assert state.result().completion_tokens == 9


async def test_structured_output_switches_to_the_servers_form(engine: Engine) -> None:
    """llama-server takes `json_schema` response formats; llama_cpp.server refuses them: the backend
    then sends json_object + schema."""
    for _ in range(2):  # the second request goes straight to the form that worked
        result = await engine.complete(ChatRequest(USER, json_schema=SCHEMA, max_tokens=SCHEMA_ROOM))
        assert json.loads(result.text)["light"] in ("on", "off")


async def test_image_goes_to_the_vision_model_as_a_data_url(engine: Engine, jpeg: Path) -> None:
    image = [{"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "image", "path": str(jpeg)}]}]
    result = await engine.complete(ChatRequest(image, role="quality", grammar=HELLO, max_tokens=40))
    assert (result.model, result.text) == ("tiny-vision", "Hello from the server.")
    assert engine.has("quality", SEE)
    assert not engine.has("fast", SEE)
    with pytest.raises(InvalidInput, match="not configured to take images"):
        await engine.complete(ChatRequest(image, role="fast", max_tokens=4))


def test_messages_in_the_openai_format(tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    wav.write_bytes(b"RIFF....WAVE")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "context": "Current time is 10:00:00."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "X", "arguments": {"a": 1}}}],
        },
        {"role": "tool", "tool_call_id": "1", "name": "X", "content": '{"ok": true}'},
        {"role": "user", "content": [{"type": "text", "text": "listen"}, {"type": "audio", "path": str(wav)}]},
    ]
    out = openai_messages(messages, RemoteModel("http://x/v1", "m", audio=True))
    assert out[1]["content"] == "Current time is 10:00:00.\nhi"
    assert out[2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'  # OpenAI sends arguments as text
    assert out[3] == {"role": "tool", "content": '{"ok": true}', "tool_call_id": "1"}
    assert out[4]["content"][1] == {"type": "input_audio", "input_audio": {"data": "UklGRi4uLi5XQVZF", "format": "wav"}}
    with pytest.raises(InvalidInput, match="audio"):
        openai_messages(messages, RemoteModel("http://x/v1", "m"))


async def test_api_key_checked(tmp_path: Path, model_dir: Path) -> None:
    server = OpenAIServer(tmp_path, server_models(model_dir), api_key="s3cret")
    await asyncio.to_thread(server.start)
    try:
        wrong, right = remote_engine(server.url, api_key="nope"), remote_engine(server.url, api_key="s3cret")
        with pytest.raises(RemoteAuthFailed):
            await wrong.load("fast")
        assert wrong.status("fast").failures == 0  # the server answered: it is up
        assert (await right.complete(ChatRequest(USER, grammar=HELLO, max_tokens=40))).text == "Hello from the server."
        await wrong.close()
        await right.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_model_not_served(openai_server: OpenAIServer) -> None:
    eng = remote_engine(openai_server.url, fast="no-such-model")
    with pytest.raises(RemoteModelMissing, match="it lists: tiny, tiny-vision"):
        await eng.load("fast")
    await eng.close()


async def test_unreachable_server_is_routed_around(served: Served) -> None:
    """A quality server that does not answer: a clear error, and vision falls back meanwhile."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    specs = (
        remote_spec("fast", pinned=True, model=RemoteModel(served.url("tiny-vision"), "tiny-vision", vision=True)),
        remote_spec("quality", model=RemoteModel(dead, "omni", vision=True)),
    )
    eng = Engine(EngineConfig(models=specs, ram_budget_mb=64))
    assert eng.route("", frozenset({"image"})).role == "quality"
    with pytest.raises(RemoteUnreachable, match="did not answer"):
        await eng.load("quality")
    assert eng.status("quality").failures == 1
    decision = eng.route("", frozenset({"image"}))
    assert decision.role == "fast"
    assert "did not answer" in decision.reason
    await eng.close()


async def test_server_killed_mid_stream_then_back(tmp_path: Path, model_dir: Path) -> None:
    server = OpenAIServer(tmp_path, server_models(model_dir))
    await asyncio.to_thread(server.start)
    eng = remote_engine(server.url)
    try:
        with pytest.raises(RemoteStreamBroken, match="stopped in the middle"):
            await _kill_after_three_deltas(eng, server)
        assert eng.status("fast").failures == 1
        await asyncio.to_thread(server.start)
        result = await eng.complete(ChatRequest(USER, grammar=HELLO, max_tokens=40))
        assert result.text == "Hello from the server."
        assert eng.status("fast").failures == 0
    finally:
        await eng.close()
        await asyncio.to_thread(server.stop)


async def _kill_after_three_deltas(eng: Engine, server: OpenAIServer) -> None:
    got = 0
    async for _ in eng.chat(ChatRequest(USER, grammar=ENDLESS, max_tokens=1500)):
        got += 1
        if got == 3:
            await asyncio.to_thread(server.kill)


async def test_cancel_ends_the_answer(engine: Engine) -> None:
    stream = engine.chat(ChatRequest(USER, grammar=ENDLESS, max_tokens=1500))
    async for _ in stream:
        await engine.cancel("fast")
    assert stream.result is not None
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.completion_tokens < 1500


# -- faults the real server cannot be made to produce ------------------------------------------------
@contextlib.asynccontextmanager
async def served(routes: dict[tuple[str, str], Any]) -> AsyncIterator[str]:
    """An aiohttp app on 127.0.0.1 with these (method, path) handlers; yields its /v1 base URL."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def _models(_: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": "m"}]})


def fake_server(handler: Any) -> contextlib.AbstractAsyncContextManager[str]:
    """A server listing model `m` whose chat completions `handler` answers."""
    return served({("GET", "/v1/models"): _models, ("POST", "/v1/chat/completions"): handler})


async def test_http_500_is_an_error_not_a_retry() -> None:
    calls = 0

    async def fail(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=500, text="out of memory")

    async with fake_server(fail) as url:
        eng = remote_engine(url, fast="m")
        with pytest.raises(RemoteError, match="HTTP 500: out of memory"):
            await eng.complete(ChatRequest(USER))
        assert calls == 1
        await eng.close()


async def test_stream_cut_without_its_end() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"delta": {"content": "Hal"}}]}\n\n')
        return resp  # closed without a finish_reason or [DONE]

    async with fake_server(cut) as url:
        eng = remote_engine(url, fast="m")
        with pytest.raises(RemoteStreamBroken):
            await eng.complete(ChatRequest(USER))
        await eng.close()


async def test_first_byte_that_never_comes_times_out() -> None:
    never = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    async with fake_server(slow) as url:
        eng = remote_engine(url, fast="m")
        with pytest.raises(RequestTimeout):
            await eng.complete(ChatRequest(USER, timeout_s=0.5))
        never.set()
        await eng.close()


async def test_connect_failures_are_retried_with_backoff() -> None:
    backend = RemoteBackend(remote_spec("fast", model=RemoteModel(f"http://127.0.0.1:{free_port()}/v1", "m")))
    with pytest.raises(RemoteUnreachable):
        await backend.load(backend_spec := remote_spec("fast", model=backend.remote))
    assert backend_spec.name == "m"
    assert (backend.failures, backend.available) == (1, False)
    await backend.close()


async def test_list_models_of_something_else() -> None:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html>router login</html>")

    import aiohttp

    async with served({("GET", "/v1/models"): page}) as url, aiohttp.ClientSession() as session:
        with pytest.raises(RemoteUnreachable):
            await list_models(session, url)


async def test_llama_server_timings_and_a_server_that_does_not_stream() -> None:
    """llama-server ends its stream with `timings`; some proxies answer one JSON body instead."""

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["max_tokens"] == 1:  # "does not stream"
            choice = {"message": {"content": "whole"}, "finish_reason": "stop"}
            return web.json_response({"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        timings = {"prompt_n": 3, "cache_n": 40, "predicted_n": 2, "predicted_per_second": 12.5}
        for chunk in (
            {"choices": [{"delta": {"content": "Hi"}}]},
            {"choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}], "timings": timings},
        ):
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async with fake_server(answer) as url:
        eng = remote_engine(url, fast="m")
        streamed = await eng.complete(ChatRequest(USER))
        assert (streamed.text, streamed.tokens_per_second, streamed.completion_tokens) == ("Hi!", 12.5, 2)
        assert (streamed.cached_tokens, streamed.evaluated_prompt_tokens, streamed.prompt_tokens) == (40, 3, 43)
        whole = await eng.complete(ChatRequest(USER, max_tokens=1))
        assert (whole.text, whole.prompt_tokens, whole.finish_reason) == ("whole", 5, "stop")
        await eng.close()


async def test_modalities_probed_from_llama_server_props() -> None:
    import aiohttp

    from custom_components.sarai_omni.engine.backends.remote import probe_modalities

    async def props(_: web.Request) -> web.Response:
        return web.json_response({"modalities": {"vision": True, "audio": False}})

    async with served({("GET", "/props"): props}) as url, aiohttp.ClientSession() as session:
        assert await probe_modalities(session, url) == {"vision": True, "audio": False}
        assert await probe_modalities(session, f"http://127.0.0.1:{free_port()}/v1") == {}


def test_arguments_that_are_not_json_reach_the_parser_as_malformed() -> None:
    from custom_components.sarai_omni.engine.toolcalls import BadToolCall

    text = as_tool_call_text({0: {"name": "HassTurnOn", "arguments": '{"name": '}})
    events = [*ToolCallParser().feed(text), *ToolCallParser().flush()]
    assert any(isinstance(e, BadToolCall) for e in events)
