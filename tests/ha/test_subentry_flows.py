"""Conversation-agent and AI-Task subentry flows on real HA: add, reconfigure, guard."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import DOMAIN

from .conftest import make_entry

AGENT = {"model": "fast", "max_tokens": 100, "temperature": 0.3}


def of_type(entry: MockConfigEntry, kind: str) -> list[ConfigSubentry]:
    return [s for s in entry.subentries.values() if s.subentry_type == kind]


@pytest.mark.parametrize(
    ("kind", "user_input", "stored"),
    [
        (
            "conversation",
            {"name": "Cocina", CONF_LLM_HASS_API: [], "prompt": "Sé breve.", **AGENT},
            {"prompt": "Sé breve.", **AGENT},
        ),
        ("ai_task_data", {"name": "Vision task", **AGENT}, AGENT),
    ],
)
async def test_add_subentry_creates_an_entity(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, kind: str, user_input: dict[str, Any], stored: dict[str, Any]
) -> None:
    result = await hass.config_entries.subentries.async_init((loaded_entry.entry_id, kind), context={"source": "user"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "set_options"
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()  # the update listener reloads the entry with the new subentry
    added = next(s for s in of_type(loaded_entry, kind) if s.title == user_input["name"])
    assert dict(added.data) == stored  # an empty tools choice is stored as no key
    entities = er.async_entries_for_config_entry(er.async_get(hass), loaded_entry.entry_id)
    assert any(e.config_subentry_id == added.subentry_id for e in entities)


async def test_reconfigure_agent_keeps_what_was_not_changed(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    agent = of_type(loaded_entry, "conversation")[0]
    result = await loaded_entry.start_subentry_reconfigure_flow(hass, agent.subentry_id)
    assert result["step_id"] == "set_options"
    new = {**agent.data, "max_tokens": 42}
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], new)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert loaded_entry.subentries[agent.subentry_id].data["max_tokens"] == 42
    assert loaded_entry.subentries[agent.subentry_id].data["prompt"] == agent.data["prompt"]


async def test_subentry_flow_needs_a_loaded_entry(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    entry = make_entry(hass, entry_data)  # added, never set up
    for kind in ("conversation", "ai_task_data"):
        result = await hass.config_entries.subentries.async_init((entry.entry_id, kind), context={"source": "user"})
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "entry_not_loaded"
    assert entry.domain == DOMAIN
