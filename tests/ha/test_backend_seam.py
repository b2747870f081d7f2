"""The HA layer's contract, on the real llama.cpp backend and on a second, in-process one.

Assist, the analysis and model services, the router's choices and the sensors must not know which
backend runs a role: the same assertions hold on both (the echo backend never replaces the real one).
The optional capabilities (Warms, ConstrainsOutput, Speaks) are honoured where a backend has them
and refused with the capability error where it has not.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from homeassistant.components import ai_task, conversation
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er, intent
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni import settings
from custom_components.sarai_omni.const import DOMAIN
from custom_components.sarai_omni.engine import (
    GRAMMAR,
    JSON_SCHEMA,
    SPEAK,
    CapabilityMissing,
    EngineConfig,
)
from custom_components.sarai_omni.engine.backends.base import Generated, Warms
from tests.echo_backend import echo_factory

from .conftest import GardenCamera, agent_id, engine_reaches
from .test_ai_task import STRUCTURE


@pytest.fixture(params=["llama_cpp", "echo"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Entries set up in this test run their roles on this backend."""
    if request.param == "echo":
        build = settings.engine_config

        def with_echo(hass: HomeAssistant, entry: ConfigEntry) -> EngineConfig:
            return replace(build(hass, entry), backend_factory=echo_factory)

        monkeypatch.setattr(settings, "engine_config", with_echo)
    return str(request.param)


@pytest.fixture
def entry(backend: str, vision_entry: MockConfigEntry) -> MockConfigEntry:
    """The vision entry (tiny VL model + projector), set up after `backend` chose the backend."""
    return vision_entry


async def call(hass: HomeAssistant, service: str, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True)
    assert isinstance(response, dict)
    return response


async def test_assist_turn_is_answered(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent_id(hass, entry))
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert result.response.speech["plain"]["speech"].strip()
    assert entry.runtime_data.engine.status("fast").last.route_reason.startswith("short conversational turn")
    # The per-request figures are on the state sensor too (their own sensors are disabled by default;
    # scripts/demo reads them here).
    await hass.async_block_till_done()
    entity_id = next(
        e.entity_id
        for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        if e.unique_id == f"{entry.entry_id}_fast_state"
    )
    state = hass.states.get(entity_id)
    assert state is not None
    assert state.attributes["tokens_per_second"] > 0
    assert state.attributes["ttft_ms"] > 0


async def test_camera_analysis_is_routed_and_answered(
    hass: HomeAssistant, entry: MockConfigEntry, garden_camera: GardenCamera
) -> None:
    response = await call(hass, "analyze_image", camera_entity_id="camera.garden", prompt="What do you see?")
    assert response["model"] == "fast"
    assert "the fast model sees" in response["route_reason"]
    assert response["text"]
    assert response["prompt_tokens"] > 0


async def test_model_services_and_sensors(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    loaded = await call(hass, "load_model", model="fast")
    assert loaded["state"] == "loaded"
    assert loaded["rss_mb"] > 0
    registry = er.async_get(hass)
    ids = {e.unique_id: e.entity_id for e in er.async_entries_for_config_entry(registry, entry.entry_id)}
    await hass.async_block_till_done()
    state = hass.states.get(ids[f"{entry.entry_id}_fast_state"])
    assert state is not None
    assert state.state == "loaded"
    unloaded = await call(hass, "unload_model", model="fast")
    assert unloaded["state"] == "unloaded"
    with pytest.raises(HomeAssistantError):
        await call(hass, "load_model", model="quality")  # not configured, on either backend
    with pytest.raises(ServiceValidationError):
        await call(hass, "analyze_image", model="quality", image_path=[])


async def test_the_standing_prompt_is_warmed_where_the_backend_warms(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """`Warms` (both backends here): the pinned role's standing prompt is in its cache once HA runs,
    and its state sensor says where it came from."""
    engine = entry.runtime_data.engine
    assert isinstance(engine.pool.slot("fast").backend, Warms)
    await engine_reaches(engine, lambda: engine.status("fast").standing_prompt is not None)
    standing = engine.status("fast").standing_prompt
    assert standing is not None
    assert standing.source == "evaluated"
    assert standing.tokens > 0
    await hass.async_block_till_done()
    state = hass.states.get(_state_sensor(hass, entry))
    assert state is not None
    assert state.attributes["standing_prompt"]["source"] == "evaluated"


async def test_a_json_schema_is_honoured_or_refused_never_dropped(
    hass: HomeAssistant, backend: str, entry: MockConfigEntry
) -> None:
    """`ConstrainsOutput`: llama.cpp enforces a JSON schema, the echo backend only a grammar. AI Task
    data with a structure is valid JSON of it on the first and a translated refusal on the second."""
    engine = entry.runtime_data.engine
    held = engine.constraints("fast")
    assert held == ({GRAMMAR, JSON_SCHEMA} if backend == "llama_cpp" else {GRAMMAR})
    assert engine.status("fast").as_attributes()["capabilities"] == sorted(engine.capabilities("fast"))
    task = next(e.entity_id for e in _entities(hass, entry) if e.domain == "ai_task")
    generate = ai_task.async_generate_data(
        hass, task_name="count", entity_id=task, instructions="Who is there?", structure=STRUCTURE
    )
    if JSON_SCHEMA in held:
        result = await generate
        assert STRUCTURE(result.data) == result.data
        return
    with pytest.raises(HomeAssistantError) as refused:
        await generate
    assert refused.value.translation_key == "capability_missing"
    assert "json_schema" in str(refused.value)


async def test_speech_is_refused_where_no_backend_speaks(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """A text model does not speak, whichever backend runs it (llama.cpp's is `Speaks` for a Qwen3-TTS
    voice, echo never): no TTS entity, and the engine refuses speech with the capability error
    instead of trying."""
    engine = entry.runtime_data.engine
    assert not engine.has("fast", SPEAK)
    assert engine.best_for(SPEAK) is None
    assert not [e for e in _entities(hass, entry) if e.domain == "tts"]
    with pytest.raises(CapabilityMissing):
        await engine.speak("fast", "Hello.", "")


def _entities(hass: HomeAssistant, entry: MockConfigEntry) -> list[er.RegistryEntry]:
    return er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)


def _state_sensor(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    return next(e.entity_id for e in _entities(hass, entry) if e.unique_id == f"{entry.entry_id}_fast_state")


def test_generation_results_are_typed_whichever_backend() -> None:
    assert Generated.from_dict({"finish_reason": "stop", "completion_tokens": 3, "unknown": 1}) == Generated(
        finish_reason="stop", completion_tokens=3
    )
