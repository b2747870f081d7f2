"""What only llama.cpp's own server does, against the real one (built by scripts/setup from the pinned
sources, on 127.0.0.1): native `tool_calls` (parallel ones too) parsed by the server from its chat
template, audio through its mtmd, `timings` and its prompt cache, `--parallel` slots shared by more
requests than slots, a 503 while it loads its model, and two servers for one role, one of them killed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
import time
import urllib.error
import urllib.request

import pytest

from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig
from custom_components.sarai_omni.engine.backends.remote import RemoteBackend
from custom_components.sarai_omni.engine.capabilities import HEAR
from custom_components.sarai_omni.engine.errors import InvalidInput, RemoteUnreachable
from custom_components.sarai_omni.engine.spec import RemoteModel
from custom_components.sarai_omni.engine.toolcalls import ToolCall, ToolCallParser
from tests.conftest import GEMMA, Served, llama_server
from tests.openai_server import LlamaServer
from tests.specs import remote_spec

pytestmark = pytest.mark.usefixtures("socket_enabled")
USER = [{"role": "user", "content": "turn on the kitchen and hall lights"}]
HELLO = 'root ::= "Hello from the server."'
LONG = "root ::= [a-z]{300}"  # no end-of-text before 300 letters
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "intent__HassTurnOn",
            "description": "Turns on a device",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
]


def engine_on(*models: tuple[str, RemoteModel]) -> Engine:
    specs = tuple(remote_spec(role, pinned=i == 0, model=m) for i, (role, m) in enumerate(models))
    return Engine(EngineConfig(models=specs, ram_budget_mb=64, request_timeout_s=120))


async def test_native_parallel_tool_calls(parrot: LlamaServer) -> None:
    """The server parses the calls itself (`--jinja`, the model's template) and streams `tool_calls`
    deltas; they reach the one tool-call parser as the calls they are, in order."""
    engine = engine_on(("fast", RemoteModel(parrot.url, "parrot")))
    try:
        stream = engine.chat(ChatRequest(USER, tools=TOOLS, max_tokens=32))
        text = "".join([d async for d in stream])
        assert stream.result is not None
        assert stream.result.finish_reason == "tool_calls"  # native: the server said so
        events = [*ToolCallParser().feed(text), *ToolCallParser().flush()]
        assert events == [
            ToolCall("intent__HassTurnOn", {"name": "Kitchen light"}),
            ToolCall("intent__HassTurnOn", {"name": "Hall light"}),
        ]
        # Without tools the same model's words are plain text: the server parsed only where asked to.
        plain = await engine.complete(ChatRequest(USER, max_tokens=32))
        assert plain.finish_reason == "stop"
        assert plain.text.startswith("<tool_call>")
    finally:
        await engine.close()


@pytest.mark.parametrize("served", ["llama-server"], indirect=True)
async def test_timings_and_the_servers_prompt_cache(served: Served) -> None:
    """llama-server's `timings` give the speed and what its prompt cache held: the same question asked
    twice is evaluated the second time from the cache."""
    engine = engine_on(("fast", RemoteModel(served.url(), "tiny")))
    try:
        first = await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=40))
        again = await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=40))
        assert first.tokens_per_second > 0
        assert again.cached_tokens > 0
        assert again.evaluated_prompt_tokens < first.evaluated_prompt_tokens
        assert again.prompt_tokens == first.prompt_tokens
    finally:
        await engine.close()


async def test_audio_through_the_servers_mtmd(tmp_path: Path, omni_thinker: Path, omni_mmproj: Path, wav: Path) -> None:
    """The Omni fixture with its projector on llama-server: a WAV as `input_audio`, heard."""
    server = await asyncio.to_thread(llama_server, tmp_path, omni_thinker, "tiny-omni", mmproj=omni_mmproj)
    engine = engine_on(("fast", RemoteModel(server.url, "tiny-omni", vision=True, audio=True)))
    try:
        assert engine.has("fast", HEAR)
        clip = [{"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "audio", "path": str(wav)}]}]
        heard = await engine.complete(ChatRequest(clip, grammar=HELLO, max_tokens=40))
        words = await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=40))
        assert heard.text == "Hello from the server."
        # the 1.5 s clip's 37 audio tokens (the server is built from the patched llama.cpp: 25 per second,
        # not a 750-token 30 s window) and <|audio_bos|>/<|audio_eos|>, spelled out by the tiny tokenizer
        assert 37 <= heard.prompt_tokens - words.prompt_tokens <= 37 + 2 * len("<|audio_bos|>")
    finally:
        await engine.close()
        await asyncio.to_thread(server.stop)


async def test_more_requests_than_slots(tmp_path: Path, tiny_qwen2: Path) -> None:
    """Three roles on one server with two slots (`--parallel 2`), six requests at once: the server
    queues what its slots cannot take, and every request gets its whole answer."""
    server = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny", parallel=2)
    model = RemoteModel(server.url, "tiny")
    engine = engine_on(("fast", model), ("quality", model), ("helper", model))
    try:
        requests = [ChatRequest(USER, role=r, grammar=HELLO, max_tokens=40) for r in ("fast", "quality", "helper") * 2]
        results = await asyncio.gather(*(engine.complete(r) for r in requests))
        assert [r.text for r in results] == ["Hello from the server."] * 6
    finally:
        await engine.close()
        await asyncio.to_thread(server.stop)


def _first_answer(url: str) -> int:
    """The HTTP status of the first answer of a server that is starting."""
    guard = time.monotonic() + 60
    while time.monotonic() < guard:
        try:
            with urllib.request.urlopen(f"{url.removesuffix('/v1')}/health", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code
        except urllib.error.URLError, ConnectionError, TimeoutError:
            time.sleep(0.005)
    raise AssertionError("the server never answered")


async def test_a_server_loading_its_model_is_waited_for(tmp_path: Path) -> None:
    """llama-server answers 503 "Loading model" until its model is in (the real gemma 270M takes a
    second or two here): a request made meanwhile waits for it instead of failing."""
    server = LlamaServer(tmp_path, GEMMA, "gemma").start(wait=False)
    try:
        assert await asyncio.to_thread(_first_answer, server.url) == 503  # it is loading
        backend = RemoteBackend(remote_spec("fast", model=RemoteModel(server.url, "gemma")))
        await backend.load(remote_spec("fast", model=backend.remote))
        stats = await backend.stats()
        assert stats["loading_waits"] >= 1
        assert backend.failures == 0
        await backend.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_two_servers_for_one_role(tmp_path: Path, tiny_qwen2: Path) -> None:
    """One role, two servers of the same model: the first answers; killed, the next request goes to
    the other one (the status names it); with both down the request fails, and the role is back
    when one of them is."""
    first = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny")
    second = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny")
    engine = engine_on(("fast", RemoteModel(first.url, "tiny", also=(second.url,))))
    ask = ChatRequest(USER, grammar=HELLO, max_tokens=40)
    try:
        assert (await engine.complete(ask)).text == "Hello from the server."
        assert engine.status("fast").server == first.url
        assert engine.status("fast").servers == (first.url, second.url)
        await asyncio.to_thread(first.kill)
        for _ in range(3):
            assert (await engine.complete(ask)).text == "Hello from the server."
            assert engine.status("fast").server == second.url
        assert engine.status("fast").failures == 0
        await asyncio.to_thread(second.kill)
        with pytest.raises(RemoteUnreachable):
            await engine.complete(ask)
        assert engine.status("fast").failures == 1
        await asyncio.to_thread(first.start)
        assert (await engine.complete(ask)).text == "Hello from the server."
        assert (engine.status("fast").server, engine.status("fast").failures) == (first.url, 0)
    finally:
        await engine.close()
        for server in (first, second):
            await asyncio.to_thread(server.stop)


async def test_a_prompt_longer_than_the_servers_context(tmp_path: Path, tiny_qwen2: Path) -> None:
    """llama-server's `exceed_context_size_error` is a clear error that says what to change."""
    server = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny", n_ctx=128)
    engine = engine_on(("fast", RemoteModel(server.url, "tiny")))
    try:
        long = [{"role": "user", "content": "lights " * 200}]
        with pytest.raises(InvalidInput, match=r"longer than the context .* --ctx-size"):
            await engine.complete(ChatRequest(long, max_tokens=8))
        assert engine.status("fast").failures == 0  # the server answered: it is up
    finally:
        await engine.close()
        await asyncio.to_thread(server.stop)


async def _order_of_ends(engine: Engine) -> list[str]:
    """A long answer, and a short one asked once the long one streams: the order they end in."""
    ended: list[str] = []
    streaming = asyncio.Event()

    async def long() -> None:
        async for _ in engine.chat(ChatRequest(USER, grammar=LONG, max_tokens=400)):
            streaming.set()
        ended.append("long")

    async def short() -> None:
        await streaming.wait()
        assert (await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=40))).text
        ended.append("short")

    await asyncio.gather(long(), short())
    return ended


@pytest.mark.parametrize(("parallel", "order"), [(2, ["short", "long"]), (1, ["long", "short"])])
async def test_a_role_takes_as_many_requests_as_the_server_has_slots(
    tmp_path: Path, parallel: int, order: list[str]
) -> None:
    """With two slots (`--parallel 2`, read from /props) a short answer asked while a long one streams
    ends first; with one slot it waits for the long one. The order the answers end in, not times: the
    real gemma 270M on one thread takes seconds over the long one (a tiny model could have written all
    of it into the socket before the short one is asked)."""
    server = await asyncio.to_thread(llama_server, tmp_path, GEMMA, "gemma", parallel=parallel, n_ctx=1024)
    engine = engine_on(("fast", RemoteModel(server.url, "gemma")))
    try:
        await engine.load("fast")
        backend = engine.pool.slot("fast").backend
        assert isinstance(backend, RemoteBackend)
        assert backend.slots == parallel
        assert await _order_of_ends(engine) == order
    finally:
        await engine.close()
        await asyncio.to_thread(server.stop)
