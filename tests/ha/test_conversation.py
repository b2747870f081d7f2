"""Assist turns through HA's conversation API on real models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import intent
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import CONF_FAST_MODEL, CONF_N_CTX, FAST
from custom_components.sarai_omni.engine import GGUFModel

from .conftest import agent_id, make_entry, wait_loaded


async def test_assist_turn_returns_speech(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent_id(hass, loaded_entry))
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    speech = result.response.speech["plain"]["speech"]
    assert speech.strip()
    status = loaded_entry.runtime_data.engine.snapshot().models[FAST]
    assert status.last.route_reason.startswith("short conversational turn")


async def test_agent_is_listed(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    agent = agent_id(hass, loaded_entry)
    info = conversation.async_get_agent_info(hass, agent)
    assert info is not None
    assert info.id == agent
    assert info.supports_streaming
    state = hass.states.get(agent)
    assert state is not None
    assert state.name == "Sarai Omni"


async def test_gemma_answers_with_real_words(hass: HomeAssistant, entry_data: dict[str, Any], gemma: Path) -> None:
    """The real gemma 270m base model (no chat template) answers through the completion fallback."""
    entry = make_entry(hass, {**entry_data, CONF_FAST_MODEL: str(gemma), CONF_N_CTX: 1024}, temperature=0.0)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    result = await conversation.async_converse(
        hass, "What is the capital of France?", None, Context(), agent_id=agent_id(hass, entry)
    )
    speech = result.response.speech["plain"]["speech"]
    assert "Paris" in speech
    assert "User:" not in speech  # the transcript's stop string never leaks
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_engine_error_is_a_translated_spoken_error(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    engine = loaded_entry.runtime_data.engine
    await engine.close()  # the worker is gone ...
    slot = engine.pool.slot(FAST)
    slot.spec = replace(slot.spec, source=GGUFModel("/nonexistent.gguf"))  # ... and so is the file
    for language, words in (("en", "A model file is missing"), ("es", "Falta un archivo de modelo")):
        result = await conversation.async_converse(
            hass, "hello", None, Context(), language=language, agent_id=agent_id(hass, loaded_entry)
        )
        assert result.response.response_type is intent.IntentResponseType.ERROR
        assert words in result.response.speech["plain"]["speech"]
