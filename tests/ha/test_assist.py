"""The Assist agent on real HA + real llama.cpp: tools, streaming, prompt cache, routing, pipelines.

The tiny models have random weights, so where a test needs exact output it forces it with a GBNF
grammar (through the entity's `_grammar` hook); everything else is the real path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import config_validation as cv, entity_registry as er, llm
from homeassistant.setup import async_setup_component
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.sarai_omni.const import CONF_N_CTX, CONF_QUALITY_MODEL, FAST, QUALITY
from custom_components.sarai_omni.engine import ChatRequest, ChatStream, Engine
from custom_components.sarai_omni.entity import tool_definitions

from .conftest import agent_id, engine_reaches, make_entry, turn, wait_loaded

TOOL_CALL = (
    '<tool_call>\\n{\\"name\\": \\"intent__HassTurnOn\\", '
    '\\"arguments\\": {\\"name\\": \\"Kitchen light\\"}}\\n</tool_call>'
)
DONE = 'root ::= "The kitchen light is on."'
HELLO = 'root ::= "Hello there, friend."'


def state_attrs(hass: HomeAssistant, entry: MockConfigEntry, role: str) -> dict[str, Any]:
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id("sensor", "sarai_omni", f"{entry.entry_id}_{role}_state")
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None
    return dict(state.attributes)


def force(grammar: Callable[[ChatRequest], str | None]) -> Any:
    """Force the tiny model's output with a GBNF grammar chosen from each request the engine gets."""
    real = Engine.chat

    def chat(self: Engine, request: ChatRequest) -> ChatStream:
        return real(self, replace(request, grammar=grammar(request)))

    return patch.object(Engine, "chat", chat)


def answering(request: ChatRequest) -> bool:
    """Whether the request carries tool results the model has yet to answer."""
    return bool(request.messages) and request.messages[-1]["role"] == "tool"


def spy_requests(entry: MockConfigEntry) -> tuple[list[ChatRequest], Any]:
    """Record every request the entity sends to the (real) engine."""
    engine, seen = entry.runtime_data.engine, []

    def chat(request: ChatRequest) -> ChatStream:
        seen.append(request)
        stream: ChatStream = type(engine).chat(engine, request)  # through force(), where it is on
        return stream

    return seen, patch.object(engine, "chat", chat)


@pytest.fixture
async def tool_entry(hass: HomeAssistant, entry_data: dict[str, Any], kitchen_light: str) -> MockConfigEntry:
    """An agent allowed to control HA (Assist API), with room for the tool definitions."""
    entry = make_entry(hass, {**entry_data, CONF_N_CTX: 16384}, llm_hass_api=[llm.LLM_API_ASSIST])
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    return entry


async def test_tool_call_turns_on_a_real_light(
    hass: HomeAssistant, tool_entry: MockConfigEntry, kitchen_light: str
) -> None:
    seen, spy = spy_requests(tool_entry)
    with spy, force(lambda log: DONE if answering(log) else f'root ::= "{TOOL_CALL}"'):
        result = await conversation.async_converse(
            hass, "turn on the kitchen light", None, Context(), agent_id=agent_id(hass, tool_entry)
        )
    await hass.async_block_till_done()
    assert hass.states.get(kitchen_light).state == "on"  # type: ignore[union-attr]
    speech = result.response.speech["plain"]["speech"]
    assert speech == "The kitchen light is on."
    assert "<tool_call>" not in speech
    assert len(seen) == 2
    assert any(t["function"]["name"] == "intent__HassTurnOn" for t in seen[0].tools or [])
    tool_msg = seen[1].messages[-1]
    assert tool_msg["role"] == "tool"
    assert tool_msg["name"] == "intent__HassTurnOn"
    assert json.loads(tool_msg["content"])["data"]["success"][0]["name"] == "Kitchen light"


async def test_malformed_tool_call_goes_back_to_the_model(hass: HomeAssistant, tool_entry: MockConfigEntry) -> None:
    seen, spy = spy_requests(tool_entry)
    broken = 'root ::= "<tool_call>{\\"name\\": \\"intent__HassTurnOn\\", \\"arguments\\": {\\"name\\": }</tool_call>"'
    with spy, force(lambda log: DONE if answering(log) else broken):
        result = await conversation.async_converse(
            hass, "turn it on", None, Context(), agent_id=agent_id(hass, tool_entry)
        )
    assert result.response.speech["plain"]["speech"] == "The kitchen light is on."
    answer = json.loads(seen[1].messages[-1]["content"])
    assert answer["error"] is True  # a failed call, as core's integrations tell their models
    error = answer["data"]
    assert error["error"] == "invalid_tool_call"
    assert seen[0].json_schema is None  # free turns are not constrained ...
    assert seen[1].json_schema is not None  # ... the retry is, to a valid call of a real tool
    assert {v["properties"]["name"]["const"] for v in seen[1].json_schema["oneOf"]} >= {"intent__HassTurnOn"}
    assert "not valid JSON" in error["error_text"]


async def test_tool_loop_stops_with_a_clear_message(hass: HomeAssistant, tool_entry: MockConfigEntry) -> None:
    with force(lambda log: f'root ::= "{TOOL_CALL}"'):
        result = await conversation.async_converse(
            hass, "turn on the kitchen light", None, Context(), language="es", agent_id=agent_id(hass, tool_entry)
        )
    assert "Me he detenido tras 10 llamadas" in result.response.speech["plain"]["speech"]


async def test_chat_log_receives_streamed_deltas(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    deltas: list[dict[str, Any]] = []
    with force(lambda log: HELLO):
        result = await turn(hass, loaded_entry, "hello", deltas.append)
    texts = [d["content"] for d in deltas if d.get("content")]
    assert len(texts) > 1  # the answer arrived token by token, not at once
    assert "".join(texts) == "Hello there, friend."
    assert result.response.speech["plain"]["speech"] == "Hello there, friend."


async def test_second_turn_evaluates_only_new_tokens(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    agent = agent_id(hass, loaded_entry)
    with force(lambda log: HELLO):
        first = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent)
        turn1 = loaded_entry.runtime_data.engine.snapshot().models[FAST]
        await conversation.async_converse(hass, "and again", first.conversation_id, Context(), agent_id=agent)
    turn2 = loaded_entry.runtime_data.engine.snapshot().models[FAST]
    turn1_prompt = turn1.last.evaluated_prompt_tokens + turn1.last.cached_tokens
    turn2_prompt = turn2.last.evaluated_prompt_tokens + turn2.last.cached_tokens
    assert turn2.last.cached_tokens >= turn1_prompt  # all of turn 1 (system, clock, question) was reused
    assert turn2.last.evaluated_prompt_tokens <= turn2_prompt - turn1_prompt  # only the new tokens ran


async def test_prepare_prewarms_the_standing_prompt(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    agent = agent_id(hass, loaded_entry)
    engine = loaded_entry.runtime_data.engine
    await conversation.async_prepare_agent(hass, agent, "en")
    entity = hass.data[conversation.DOMAIN].get_entity(agent)
    system, tools = await entity._standing_prompt("en")
    standing = await engine.warm(FAST, [system], tools)
    assert standing.source == "context"  # async_prepare already evaluated it
    with force(lambda log: HELLO):
        await conversation.async_converse(hass, "hello", None, Context(), language="en", agent_id=agent)
    status = engine.snapshot().models[FAST]
    header = 12  # "<|im_start|>assistant\n" closes the warmed prompt; the turn has the user's message there
    assert status.last.cached_tokens >= standing.prompt_tokens - header
    assert status.last.evaluated_prompt_tokens < 100  # the clock line and "hello", in a byte-level tokenizer


async def test_spanish_and_english_turns_reach_the_expected_model(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_qwen3: Path
) -> None:
    entry = make_entry(hass, {**entry_data, CONF_QUALITY_MODEL: str(tiny_qwen3)})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    agent = agent_id(hass, entry)
    with force(lambda log: HELLO):
        await conversation.async_converse(hass, "hola, ¿qué tal?", None, Context(), language="es", agent_id=agent)
        await hass.async_block_till_done()
        assert state_attrs(hass, entry, FAST)["route_reason"].startswith("short conversational turn")
        await conversation.async_converse(
            hass, "¿Qué ves en la cámara del jardín?", None, Context(), language="es", agent_id=agent
        )
        await hass.async_block_till_done()
        assert "camara" in state_attrs(hass, entry, QUALITY)["route_reason"]
        await conversation.async_converse(
            hass, "What is on the garden camera?", None, Context(), language="en", agent_id=agent
        )
        await hass.async_block_till_done()
        assert "camera" in state_attrs(hass, entry, QUALITY)["route_reason"]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_spanish_turn_gets_spanish_instructions(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    seen, spy = spy_requests(loaded_entry)
    with spy, force(lambda log: HELLO):
        await conversation.async_converse(
            hass, "hola", None, Context(), language="es", agent_id=agent_id(hass, loaded_entry)
        )
    system = seen[0].messages[0]["content"]
    assert system.startswith("Eres un asistente de voz para Home Assistant.")
    assert system.endswith("Responde siempre en español.")


async def test_text_pipeline_runs_on_the_agent(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    assert await async_setup_component(hass, "assist_pipeline", {})
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "assist_pipeline/pipeline/create",
            "name": "Local",
            "language": "en",
            "conversation_engine": agent_id(hass, loaded_entry),
            "conversation_language": "en",
            "stt_engine": None,
            "stt_language": None,
            "tts_engine": None,
            "tts_language": None,
            "tts_voice": None,
            "wake_word_entity": None,
            "wake_word_id": None,
        }
    )
    pipeline = await client.receive_json()
    assert pipeline["success"], pipeline
    with force(lambda log: HELLO):
        await client.send_json_auto_id(
            {
                "type": "assist_pipeline/run",
                "start_stage": "intent",
                "end_stage": "intent",
                "input": {"text": "hello"},
                "pipeline": pipeline["result"]["id"],
            }
        )
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "run-end":
            msg = await client.receive_json()
            if msg["type"] == "event":
                events.append(msg["event"])
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run-start"
    assert kinds.count("intent-progress") > 1  # streamed into the pipeline
    end = next(e for e in events if e["type"] == "intent-end")
    assert end["data"]["intent_output"]["response"]["speech"]["plain"]["speech"] == "Hello there, friend."


async def test_the_standing_prompt_is_warmed_at_start_and_restored_after_a_restart(
    hass: HomeAssistant, entry_data: dict[str, Any]
) -> None:
    """No turn and no async_prepare: the agent warms its prompt once HA runs; the KV state saved then
    comes back from disk when the entry starts again (an HA restart), and the first turn after it
    evaluates only its own words."""
    entry = make_entry(hass, entry_data)
    assert await hass.config_entries.async_setup(entry.entry_id)
    engine = entry.runtime_data.engine
    await engine_reaches(engine, lambda: engine.status(FAST).standing_prompt is not None)
    first = engine.status(FAST).standing_prompt
    assert first.source == "evaluated"
    assert first.tokens > 100
    state = hass.states.get(next(e for e in hass.states.async_entity_ids("sensor") if e.endswith("fast_state")))
    assert state is not None
    assert first is not None
    assert state.attributes["standing_prompt"] == asdict(first)

    assert await hass.config_entries.async_reload(entry.entry_id)  # new workers, as after a restart
    engine = entry.runtime_data.engine
    await engine_reaches(engine, lambda: engine.status(FAST).standing_prompt is not None)
    again = engine.status(FAST).standing_prompt
    assert again.source == "disk"
    assert again.tokens == first.tokens
    with force(lambda log: HELLO):
        await conversation.async_converse(hass, "hello", None, Context(), language="en", agent_id=agent_id(hass, entry))
    status = engine.status(FAST)
    assert status.last.cached_tokens >= first.tokens - 12  # the assistant header closes the warmed prompt
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_the_warmed_prefix_holds_the_tools(hass: HomeAssistant, tool_entry: MockConfigEntry) -> None:
    """Qwen's template lists the tools inside the system block: a standing prompt warmed without them
    would leave ~1k tokens of tool definitions to every first turn."""
    engine = tool_entry.runtime_data.engine
    await engine_reaches(engine, lambda: engine.status(FAST).standing_prompt is not None)
    standing = engine.status(FAST).standing_prompt
    with force(lambda log: HELLO):
        await conversation.async_converse(
            hass, "hello", None, Context(), language="en", agent_id=agent_id(hass, tool_entry)
        )
    status = engine.status(FAST)
    assert status.last.prompt_tokens > standing.tokens > 1000  # tools and entities in both
    assert status.last.cached_tokens >= standing.tokens - 12
    assert status.last.evaluated_prompt_tokens < 100  # the clock line and "hello" only


def test_tool_definitions_do_not_depend_on_set_order() -> None:
    """HA builds some enums from sets (their order follows the process's hash seed): the tools a
    standing prompt lists must be the same text in every process, or its KV snapshot is never hit."""

    def chat_log(domains: list[str], names: list[str]) -> Any:
        schema = probatio.Schema({probatio.Optional("domain"): probatio.All(cv.ensure_list, [probatio.In(domains)])})
        tools = [SimpleNamespace(name=n, description=f"{n} tool", parameters=schema) for n in names]
        return SimpleNamespace(llm_api=SimpleNamespace(tools=tools, custom_serializer=llm.selector_serializer))

    one = tool_definitions(chat_log(["light", "switch", "fan"], ["HassTurnOn", "HassTurnOff"]))
    other = tool_definitions(chat_log(["fan", "switch", "light"], ["HassTurnOff", "HassTurnOn"]))
    assert json.dumps(one) == json.dumps(other)
    assert one is not None
    assert [t["function"]["name"] for t in one] == ["HassTurnOff", "HassTurnOn"]
