"""Roles on llama.cpp's own server in a real HA (llama-server, built by scripts/setup from the pinned
sources, on 127.0.0.1): native parallel tool calls that turn real lights on, what its /props says
filling the flow, hearing through its mtmd, and one role on two servers, one of them killed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import json
from pathlib import Path

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import chat_session, issue_registry as ir, llm
import pytest

from custom_components.sarai_omni.const import DOMAIN, FAST, ISSUE_REMOTE_DOWN, QUALITY, REMOTE_DOWN_AFTER
from tests.conftest import llama_server
from tests.openai_server import LlamaServer, sockets_open

from .conftest import agent_id, role_data, template_lights, wait_loaded
from .test_assist import DONE, HELLO, answering, force, spy_requests, state_attrs
from .test_remote import _to_remote_step, remote, setup

pytestmark = pytest.mark.usefixtures("socket_enabled")


@pytest.fixture(scope="module")
def omni(tmp_path_factory: pytest.TempPathFactory, omni_thinker: Path, omni_mmproj: Path) -> Iterator[LlamaServer]:
    """llama-server on the Omni fixture with its projector (Qwen2.5-VL vision, Whisper-style audio)."""
    with sockets_open():
        server = llama_server(tmp_path_factory.mktemp("omni"), omni_thinker, "tiny-omni", mmproj=omni_mmproj)
    yield server
    server.stop()


async def test_native_parallel_tool_calls_turn_on_two_lights(hass: HomeAssistant, parrot: LlamaServer) -> None:
    """The server parses its model's two calls (`--jinja`) and streams them as `tool_calls`; HA runs
    both intents, both results go back in the chat log, and the answer follows."""
    assert await template_lights(hass, "kitchen", "hall") == ["light.kitchen_light", "light.hall_light"]
    entry = await setup(hass, servers={FAST: remote(parrot.url, "parrot")}, llm_hass_api=[llm.LLM_API_ASSIST])
    seen, spy = spy_requests(entry)
    # Only the answer after the tool results is forced (a grammar); the calls are the server's own.
    with spy, force(lambda request: DONE if answering(request) else None):
        result = await conversation.async_converse(
            hass, "turn on the kitchen and hall lights", None, Context(), agent_id=agent_id(hass, entry)
        )
    await hass.async_block_till_done()
    assert hass.states.get("light.kitchen_light").state == "on"  # type: ignore[union-attr]
    assert hass.states.get("light.hall_light").state == "on"  # type: ignore[union-attr]
    assert result.response.speech["plain"]["speech"] == "The kitchen light is on."
    assert seen[0].grammar is None  # nothing forced the calls
    results = [m for m in seen[1].messages if m["role"] == "tool"]
    assert [json.loads(m["content"])["data"]["success"][0]["name"] for m in results] == ["Kitchen light", "Hall light"]
    with (
        chat_session.async_get_chat_session(hass, result.conversation_id) as session,
        conversation.async_get_chat_log(hass, session) as log,
    ):
        tool_results = [c for c in log.content if isinstance(c, conversation.ToolResultContent)]
    assert [r.tool_name for r in tool_results] == ["intent__HassTurnOn"] * 2  # both results in HA's chat log
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_props_fill_in_what_the_servers_model_takes(
    hass: HomeAssistant, tiny_qwen2: Path, omni: LlamaServer
) -> None:
    """The flow asks llama-server's /props: the Omni fixture with its projector sees and hears."""
    result = await _to_remote_step(hass, remote_roles=[QUALITY], fast_model=str(tiny_qwen2))
    assert (result["step_id"], result["description_placeholders"]["role"]) == ("remote", QUALITY)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"url": omni.url})
    assert result["step_id"] == "remote_model"
    schema = result["data_schema"]
    assert schema is not None
    suggested = {str(k): (k.description or {}).get("suggested_value") for k in schema.schema}
    assert (suggested["model"], suggested["vision"], suggested["audio"]) == ("tiny-omni", True, True)
    hass.config_entries.flow.async_abort(result["flow_id"])


async def test_hearing_through_the_servers_mtmd(
    hass: HomeAssistant, tiny_qwen2: Path, omni: LlamaServer, wav: Path
) -> None:
    """`analyze_audio` with the quality role on llama-server (the Omni fixture and its projector)."""
    hass.config.allowlist_external_dirs |= {str(wav.parent)}
    entry = await setup(
        hass,
        {"fast_model": str(tiny_qwen2)},
        servers={QUALITY: remote(omni.url, "tiny-omni", vision=True, audio=True)},
    )
    with force(lambda _: HELLO):
        response = await hass.services.async_call(
            DOMAIN, "analyze_audio", {"audio_path": [str(wav)]}, blocking=True, return_response=True
        )
    assert response is not None
    assert (response["model"], response["text"]) == ("quality", "Hello there, friend.")
    attrs = state_attrs(hass, entry, QUALITY)
    assert 37 < attrs["prompt_tokens"] < 200  # the 1.5 s clip's 37 tokens: the server's llama.cpp is patched too
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_one_role_on_two_servers(hass: HomeAssistant, tmp_path: Path, tiny_qwen2: Path) -> None:
    """Every request is answered while one server is killed, the sensor names the one that answered,
    and the repair appears only when both are down (and goes when one is back)."""
    first = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny")
    second = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny")
    try:
        entry = await setup(hass, servers={FAST: remote(first.url, more_urls=[second.url])})
        await wait_loaded(entry)
        agent = agent_id(hass, entry)

        async def ask() -> str:
            with force(lambda _: HELLO):
                result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent)
            return str(result.response.speech["plain"]["speech"])

        assert await ask() == "Hello there, friend."
        assert state_attrs(hass, entry, FAST)["server"] == first.url
        assert list(state_attrs(hass, entry, FAST)["servers"]) == [first.url, second.url]
        await asyncio.to_thread(first.kill)
        for _ in range(REMOTE_DOWN_AFTER + 1):
            assert await ask() == "Hello there, friend."
        assert state_attrs(hass, entry, FAST)["server"] == second.url
        assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_REMOTE_DOWN) is None
        await asyncio.to_thread(second.kill)
        for _ in range(REMOTE_DOWN_AFTER):
            assert "cannot be reached" in await ask()
        issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_REMOTE_DOWN)
        assert issue is not None
        assert (issue.translation_placeholders or {})["server"] == f"{first.url}, {second.url}"
        await asyncio.to_thread(second.start)
        assert await ask() == "Hello there, friend."
        assert state_attrs(hass, entry, FAST)["server"] == second.url
        assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_REMOTE_DOWN) is None
        assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        for server in (first, second):
            await asyncio.to_thread(server.stop)


async def test_the_flow_takes_more_servers(
    hass: HomeAssistant, tmp_path: Path, tiny_qwen2: Path, parrot: LlamaServer
) -> None:
    first = await asyncio.to_thread(llama_server, tmp_path, tiny_qwen2, "tiny")
    try:
        result = await _to_remote_step(hass, remote_roles=[FAST])
        flow = result["flow_id"]
        result = await hass.config_entries.flow.async_configure(flow, {"url": first.url, "more_urls": ["nope"]})
        assert result["errors"] == {"more_urls": "invalid_url"}
        result = await hass.config_entries.flow.async_configure(
            flow, {"url": first.url, "more_urls": [f"{parrot.url}/"]}
        )
        result = await hass.config_entries.flow.async_configure(
            flow, {"model": "tiny", "vision": False, "audio": False}
        )
        assert result["errors"] == {"model": "model_not_on_every_server"}  # the parrot serves another model
        assert (result["description_placeholders"] or {})["lacking"] == parrot.url
        hass.config_entries.flow.async_abort(flow)
        result = await _to_remote_step(hass, remote_roles=[FAST])
        flow = result["flow_id"]
        result = await hass.config_entries.flow.async_configure(
            flow,
            {"url": first.url, "more_urls": ["http://127.0.0.1:9/v1"]},  # off now: kept
        )
        result = await hass.config_entries.flow.async_configure(
            flow, {"model": "tiny", "vision": False, "audio": False}
        )
        entry = hass.config_entries.async_entries(DOMAIN)[0]
        assert role_data(entry, FAST)["server"]["more_urls"] == ["http://127.0.0.1:9/v1"]
        await hass.async_block_till_done()
        assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await asyncio.to_thread(first.stop)
