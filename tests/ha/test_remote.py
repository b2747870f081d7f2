"""Roles on real OpenAI-compatible servers (llama-server and llama_cpp.server on 127.0.0.1), in a real HA.

The flow with each of its errors, a streamed Assist turn, a tool call that turns on a real light,
an image analysis on a remote quality model beside a local fast one, AI Task structured output, a
server killed mid-answer (translated error, no hang, the next turn works once it is back), the repair
when it stays down, and the API key never in diagnostics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
import json
from pathlib import Path
from typing import Any

from homeassistant import config_entries
from homeassistant.components import ai_task, conversation
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er, issue_registry as ir, llm
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import get_diagnostics_for_config_entry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.sarai_omni.const import (
    CONF_N_CTX,
    CONF_N_THREADS,
    CONF_RAM_BUDGET_MB,
    CONF_SERVER,
    DOMAIN,
    FAST,
    ISSUE_REMOTE_DOWN,
    QUALITY,
    REMOTE_DOWN_AFTER,
)
from tests.conftest import Served, server_models
from tests.openai_server import LlamaServer, OpenAIServer, free_port

from .conftest import agent_id, make_entry, role_data, shown_errors, turn, wait_loaded
from .test_ai_task import STRUCTURE, task_entity
from .test_assist import DONE, HELLO, TOOL_CALL, answering, force, state_attrs
from .test_services import call

pytestmark = pytest.mark.usefixtures("socket_enabled")
SETUP = {CONF_RAM_BUDGET_MB: 1024, CONF_N_THREADS: 2, CONF_N_CTX: 2048}
SECRET = "sk-do-not-leak-42"


def remote(url: str, model: str = "tiny", **extra: Any) -> dict[str, Any]:
    return {"url": url, "api_key": "", "model": model, "vision": False, "audio": False, **extra}


async def setup(
    hass: HomeAssistant, form: dict[str, Any] | None = None, *, servers: dict[str, Any], **agent: Any
) -> MockConfigEntry:
    entry = make_entry(hass, {**SETUP, **(form or {})}, servers=servers, **agent)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)  # the preload too
    assert entry.state is ConfigEntryState.LOADED
    return entry


@pytest.fixture
async def remote_entry(hass: HomeAssistant, served: Served) -> AsyncGenerator[MockConfigEntry]:
    """Everything on the server: the fast role is `tiny` there."""
    entry = await setup(hass, servers={FAST: remote(served.url())})
    await wait_loaded(entry)
    yield entry
    assert await hass.config_entries.async_unload(entry.entry_id)


# -- config flow ---------------------------------------------------------------------------------
async def _to_remote_step(hass: HomeAssistant, **form: Any) -> Any:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    return await hass.config_entries.flow.async_configure(result["flow_id"], {**SETUP, **form})


async def test_flow_sends_the_fast_role_to_a_server(hass: HomeAssistant, served: Served) -> None:
    result = await _to_remote_step(hass, remote_roles=[FAST])
    assert (result["step_id"], result["description_placeholders"]["role"]) == ("remote", FAST)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"url": f"{served.url()}/"})
    assert result["step_id"] == "remote_model"
    listed = [model for model, server in served.servers.items() if server.url == served.url()]
    assert dict(result["description_placeholders"] or {})["models"] == ", ".join(listed)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"model": "tiny", "vision": False, "audio": False}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert role_data(entry, FAST)[CONF_SERVER] == remote(served.url())  # trailing slash trimmed
    await hass.async_block_till_done()
    await wait_loaded(entry)
    assert entry.runtime_data.engine.status(FAST).server == served.url()
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_flow_errors(hass: HomeAssistant, openai_server: OpenAIServer, tmp_path: Path, model_dir: Path) -> None:
    result = await _to_remote_step(hass, remote_roles=[FAST])
    flow = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(flow, {"url": "ftp://example"})
    assert result["errors"] == {"url": "invalid_url"}
    result = await hass.config_entries.flow.async_configure(flow, {"url": f"http://127.0.0.1:{free_port()}/v1"})
    assert shown_errors(result) == {"base": "cannot_connect"}
    guarded = OpenAIServer(tmp_path, server_models(model_dir), api_key=SECRET)
    await asyncio.to_thread(guarded.start)
    try:
        result = await hass.config_entries.flow.async_configure(flow, {"url": guarded.url, "api_key": "wrong"})
        assert result["errors"] == {"base": "invalid_auth"}
        result = await hass.config_entries.flow.async_configure(flow, {"url": guarded.url, "api_key": SECRET})
        assert result["step_id"] == "remote_model"
    finally:
        await asyncio.to_thread(guarded.stop)
    result = await hass.config_entries.flow.async_configure(flow, {"model": "gpt-9", "vision": False, "audio": False})
    assert result["errors"] == {"model": "model_not_found"}
    hass.config_entries.flow.async_abort(flow)


@pytest.mark.parametrize("served", ["llama_cpp.server"], indirect=True)  # both models at one URL
async def test_reconfigure_keeps_the_server_and_can_go_local(
    hass: HomeAssistant, remote_entry: MockConfigEntry, served: Served, tiny_qwen2: Path
) -> None:
    result = await remote_entry.start_reconfigure_flow(hass)
    # The form shows the role as remote; the server step comes back filled in.
    schema_roles = {str(k): k.description for k in result["data_schema"].schema}
    assert schema_roles["remote_roles"] == {"suggested_value": [FAST]}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**SETUP, "remote_roles": [FAST]})
    schema = result["data_schema"]
    assert schema is not None
    suggested = {str(k): (k.description or {}).get("suggested_value") for k in schema.schema}
    assert suggested["url"] == served.url()
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"url": served.url()})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"model": "tiny-vision", "vision": True, "audio": False}
    )
    assert result["reason"] == "reconfigure_successful"
    assert role_data(remote_entry, FAST)[CONF_SERVER]["model"] == "tiny-vision"
    await hass.async_block_till_done()
    # Back to a local file: the server settings go.
    result = await remote_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**SETUP, "fast_model": str(tiny_qwen2)})
    assert result["reason"] == "reconfigure_successful"
    assert CONF_SERVER not in role_data(remote_entry, FAST)
    await hass.async_block_till_done()


# -- the main job on a server ----------------------------------------------------------------------
async def test_streamed_assist_turn(hass: HomeAssistant, remote_entry: MockConfigEntry) -> None:
    deltas: list[dict[str, Any]] = []
    with force(lambda _: HELLO):
        result = await turn(hass, remote_entry, "hello", deltas.append)
    texts = [d["content"] for d in deltas if d.get("content")]
    assert len(texts) > 1  # token by token from the server's SSE stream
    assert "".join(texts) == result.response.speech["plain"]["speech"] == "Hello there, friend."
    sensor = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{remote_entry.entry_id}_fast_state")
    state = hass.states.get(sensor or "")
    assert state is not None
    assert state.state == "remote"  # the model state sensor says where the role runs
    attrs = state_attrs(hass, remote_entry, FAST)
    assert (attrs["remote"], attrs["model"], attrs["server"]) == (
        True,
        "tiny",
        role_data(remote_entry, FAST)[CONF_SERVER]["url"],
    )
    assert attrs["ttft_ms"] > 0


async def test_tool_call_on_the_server_turns_on_a_real_light(
    hass: HomeAssistant, served: Served, kitchen_light: str
) -> None:
    """The call as Qwen text (forced by a grammar; llama-server then parses no tool calls itself)."""
    entry = await setup(hass, servers={FAST: remote(served.url())}, llm_hass_api=[llm.LLM_API_ASSIST])
    with force(lambda log: DONE if answering(log) else f'root ::= "{TOOL_CALL}"'):
        result = await conversation.async_converse(
            hass, "turn on the kitchen light", None, Context(), agent_id=agent_id(hass, entry)
        )
    await hass.async_block_till_done()
    assert hass.states.get(kitchen_light).state == "on"  # type: ignore[union-attr]
    assert result.response.speech["plain"]["speech"] == "The kitchen light is on."
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_image_goes_to_the_remote_quality_model(
    hass: HomeAssistant, served: Served, tiny_qwen2: Path, jpeg: Path
) -> None:
    """Mixed: the fast model local (a llama.cpp worker), the quality model on the server (its mtmd)."""
    hass.config.allowlist_external_dirs |= {str(jpeg.parent)}
    entry = await setup(
        hass,
        {"fast_model": str(tiny_qwen2)},
        servers={QUALITY: remote(served.url("tiny-vision"), "tiny-vision", vision=True)},
    )
    response = await call(hass, "analyze_image", image_path=[str(jpeg)], prompt="What do you see?", max_tokens=8)
    assert response["model"] == "quality"
    assert "image attached" in response["route_reason"]
    assert response["text"]  # the server's tiny vision model saw the image and answered
    engine = entry.runtime_data.engine
    assert engine.status(QUALITY).model == "tiny-vision"
    assert engine.status(FAST).remote is False
    unloaded = await call(hass, "unload_model", model="quality")
    assert unloaded["state"] == "unloaded"
    assert (await call(hass, "load_model", model="quality"))["state"] == "remote"
    assert engine.status(QUALITY).estimate_mb == 0
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_ai_task_structured_output_on_the_server(hass: HomeAssistant, remote_entry: MockConfigEntry) -> None:
    result = await ai_task.async_generate_data(
        hass,
        task_name="count",
        entity_id=task_entity(hass, remote_entry),
        instructions="How many people are in the garden?",
        structure=STRUCTURE,
    )
    assert STRUCTURE(result.data) == result.data


@pytest.mark.parametrize("kind", ["llama-server", "llama_cpp.server"])
async def test_server_killed_mid_answer(hass: HomeAssistant, tmp_path: Path, gemma: Path, kind: str) -> None:
    """The server is killed at the third streamed piece of a 256-token answer. It serves the real
    gemma 270M on one thread (tens of tokens a second): the answer cannot be complete by then, where
    a tiny fixture model could have written all of it into the socket before the kill."""
    if kind == "llama-server":
        server: OpenAIServer = LlamaServer(tmp_path, gemma, "slow", n_ctx=2048)
    else:
        slow = {"model": str(gemma), "model_alias": "slow", "n_ctx": 2048, "n_threads": 1, "verbose": False}
        server = OpenAIServer(tmp_path, [slow])
    await asyncio.to_thread(server.start)
    try:
        entry = await setup(hass, servers={FAST: remote(server.url, model="slow")})
        await wait_loaded(entry)
        texts: list[str] = []

        def kill_on_third_delta(delta: dict[str, Any]) -> None:
            if delta.get("content"):
                texts.append(delta["content"])
                if len(texts) == 3:
                    server.kill()  # SIGKILL by its PID, mid-answer

        with force(lambda _: "root ::= [a-z ]{300}"):  # longer than the 256 tokens it may write
            result = await turn(hass, entry, "tell me a long story", kill_on_third_delta)
        assert len(texts) >= 3
        assert result.response.error_code is not None
        speech = result.response.speech["plain"]["speech"]
        assert speech.startswith("The model server stopped in the middle of the answer")  # translated
        await asyncio.to_thread(server.start)
        with force(lambda _: HELLO):
            again = await turn(hass, entry, "hello", lambda _: None)
        assert again.response.speech["plain"]["speech"] == "Hello there, friend."
        assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await asyncio.to_thread(server.stop)


async def test_repair_when_the_server_stays_down(hass: HomeAssistant, tmp_path: Path, model_dir: Path) -> None:
    server = OpenAIServer(tmp_path, server_models(model_dir))
    entry = await setup(hass, servers={FAST: remote(server.url)})  # not started yet
    agent = agent_id(hass, entry)
    for _ in range(REMOTE_DOWN_AFTER - 1):  # the preload was the first failure
        result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent)
        assert "cannot be reached" in result.response.speech["plain"]["speech"]
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_REMOTE_DOWN)
    assert issue is not None
    assert issue.translation_placeholders == {"role": FAST, "server": server.url, "count": str(REMOTE_DOWN_AFTER)}
    await asyncio.to_thread(server.start)
    try:
        with force(lambda _: HELLO):
            result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent)
        assert result.response.speech["plain"]["speech"] == "Hello there, friend."
        assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_REMOTE_DOWN) is None
        assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await asyncio.to_thread(server.stop)


async def test_api_key_never_in_diagnostics(
    hass: HomeAssistant, tmp_path: Path, model_dir: Path, hass_client: ClientSessionGenerator
) -> None:
    server = OpenAIServer(tmp_path, server_models(model_dir), api_key=SECRET)
    await asyncio.to_thread(server.start)
    try:
        entry = await setup(hass, servers={FAST: remote(server.url, api_key=SECRET)})
        await wait_loaded(entry)
        assert await async_setup_component(hass, "diagnostics", {})
        diag = await get_diagnostics_for_config_entry(hass, hass_client, entry)
        assert SECRET not in json.dumps(diag)
        subentries = diag["entry"]["subentries"].values()
        roles = {sub["data"]["role"]: sub["data"] for sub in subentries if "role" in sub["data"]}
        assert roles[FAST][CONF_SERVER]["api_key"] == "**REDACTED**"
        assert diag["engine"]["models"][FAST]["server"] == server.url
        assert await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await asyncio.to_thread(server.stop)
