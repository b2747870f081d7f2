"""AI Task on real HA: structured data by schema-constrained decoding, and camera attachments."""

from __future__ import annotations

from typing import Any

from homeassistant.components import ai_task
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .conftest import GardenCamera

# Shapes the grammar pins down completely (random weights fill them): an enum and a boolean.
STRUCTURE = probatio.Schema(
    {probatio.Required("where"): probatio.In(["garden", "door", "street"]), probatio.Required("person"): bool}
)


def task_entity(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    return next(e.entity_id for e in entities if e.domain == "ai_task")


async def test_structured_data_validates(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await ai_task.async_generate_data(
        hass,
        task_name="count",
        entity_id=task_entity(hass, loaded_entry),
        instructions="How many people are in the garden?",
        structure=STRUCTURE,
    )
    data: dict[str, Any] = result.data
    assert STRUCTURE(data) == data  # random weights, but the grammar made it valid JSON of this shape
    assert set(data) == {"where", "person"}


async def test_plain_text_task(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await ai_task.async_generate_data(
        hass, task_name="say", entity_id=task_entity(hass, loaded_entry), instructions="Say hello"
    )
    assert isinstance(result.data, str)


async def test_camera_attachment_reaches_the_vision_model(
    hass: HomeAssistant,
    vision_entry: MockConfigEntry,
    garden_camera: GardenCamera,
) -> None:
    assert await async_setup_component(hass, "media_source", {})
    result = await ai_task.async_generate_data(
        hass,
        task_name="look",
        entity_id=task_entity(hass, vision_entry),
        instructions="Describe it.",
        structure=STRUCTURE,
        attachments=[{"media_content_id": "media-source://camera/camera.garden", "media_content_type": "image/jpeg"}],
    )
    assert set(result.data) == {"where", "person"}
    status = vision_entry.runtime_data.engine.snapshot().models["fast"]
    assert "image attached" in status.last.route_reason


async def test_answer_outside_the_structure_is_a_clear_error() -> None:
    from custom_components.sarai_omni.ai_task import _structured

    with pytest.raises(HomeAssistantError) as err:
        _structured(STRUCTURE, "{not json")
    assert err.value.translation_key == "invalid_json"
    with pytest.raises(HomeAssistantError) as err:
        _structured(STRUCTURE, '{"where": "moon", "person": true}')
    assert err.value.translation_key == "structure_mismatch"
