"""Camera-aware Assist (issue 13, item 3) on real HA + real llama.cpp: a turn that asks about a camera
by its name, alias or area gets that camera's snapshot and goes to a model that sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import area_registry as ar, entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, setup_test_component_platform

from custom_components.sarai_omni.cameras import mentioned_cameras
from custom_components.sarai_omni.const import CONF_CAMERA_IMAGE_SIZE, CONF_FAST_MMPROJ, CONF_N_CTX
from custom_components.sarai_omni.engine import ChatRequest, defaults
from custom_components.sarai_omni.llm import LOOK_AT_CAMERA

from .conftest import EN, GardenCamera, agent_id, make_entry, wait_loaded
from .test_assist import answering, force, spy_requests, state_attrs

SEEN = 'root ::= "I see a red square."'


class FrontDoorCamera(GardenCamera):
    _attr_name = "Front door"
    _attr_unique_id = "front_door_cam"


@pytest.fixture
async def cameras(hass: HomeAssistant, jpeg: Path) -> dict[str, GardenCamera]:
    """camera.garden (alias "Jardín") and camera.front_door (in the area "Entrada"), serving a JPEG."""
    data = await hass.async_add_executor_job(jpeg.read_bytes)
    garden, door = GardenCamera(data), FrontDoorCamera(data)
    setup_test_component_platform(hass, "camera", [garden, door])
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    registry.async_update_entity("camera.garden", aliases=["Jardín"])
    area = ar.async_get(hass).async_create("Entrada")
    registry.async_update_entity("camera.front_door", area_id=area.id)
    return {"camera.garden": garden, "camera.front_door": door}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what do you see on the garden camera?", ["camera.garden"]),
        ("¿qué ves en la cámara del jardín?", ["camera.garden"]),
        ("QUÉ HAY EN LA CAMARA DEL JARDIN", ["camera.garden"]),  # case and accents do not matter
        ("is anyone at the front door camera?", ["camera.front_door"]),
        ("¿hay alguien en la cámara de la entrada?", ["camera.front_door"]),  # by its area
        ("show me the garden and the front door cameras", ["camera.front_door", "camera.garden"]),
        ("what is happening in the garden?", []),  # no camera word: not a camera question
        ("¿qué ves en la cámara?", []),  # a camera word, but no camera named
        ("turn on the kitchen light", []),
        ("the gardener's camera bag", []),  # whole words only
    ],
)
async def test_words_to_cameras(
    hass: HomeAssistant, cameras: dict[str, GardenCamera], text: str, expected: list[str]
) -> None:
    assert mentioned_cameras(hass, text) == expected


async def _ask(hass: HomeAssistant, entry: MockConfigEntry, text: str, language: str) -> tuple[Any, list[ChatRequest]]:
    seen, spy = spy_requests(entry)
    with spy, force(lambda log: SEEN):
        result = await conversation.async_converse(
            hass, text, None, Context(), language=language, agent_id=agent_id(hass, entry)
        )
    return result, seen


def _images(request: ChatRequest) -> list[Path]:
    content = request.messages[-1]["content"]
    return [Path(p["path"]) for p in content if p.get("type") == "image"] if isinstance(content, list) else []


@pytest.mark.parametrize(
    ("text", "language"),
    [("what do you see on the garden camera?", "en"), ("¿qué ves en la cámara del jardín?", "es")],
)
async def test_a_camera_question_reaches_the_quality_model_with_the_snapshot(
    hass: HomeAssistant, seed_entry: MockConfigEntry, cameras: dict[str, GardenCamera], text: str, language: str
) -> None:
    """On the seeds' layouts: the fast Qwen3-VL and the quality Qwen2.5-Omni, both tiny."""
    entry = seed_entry
    result, seen = await _ask(hass, entry, text, language)
    assert result.response.speech["plain"]["speech"] == "I see a red square."
    (request,) = seen
    assert request.role == "quality"
    assert request.cameras == ("camera.garden",)
    (image,) = _images(request)
    assert not await hass.async_add_executor_job(image.exists)  # the snapshot went with the turn
    attrs = state_attrs(hass, entry, "quality")
    assert attrs["images"] == 1
    assert attrs["cameras"] == ["camera.garden"]
    assert attrs["prompt_tokens"] > 0
    # The quality model's standing prompt was warmed while the snapshot was taken: only the question
    # and the image were evaluated, at the size Assist questions take.
    assert 0 < attrs["cached_tokens"] == attrs["prompt_tokens"] - attrs["evaluated_prompt_tokens"]
    assert entry.runtime_data.engine.status("quality").standing_prompt is not None
    assert cameras["camera.garden"].widths == [defaults.CAMERA_IMAGE_SIZE]
    assert "image attached" in attrs["route_reason"]
    # The next turn does not send the old snapshot again (its file is gone).
    _, seen = await _ask(hass, entry, "thanks!", language)
    assert all(not _images(r) for r in seen)


async def test_the_snapshot_size_is_an_option(
    hass: HomeAssistant, vision_entry: MockConfigEntry, cameras: dict[str, GardenCamera]
) -> None:
    hass.config_entries.async_update_entry(vision_entry, options={**vision_entry.options, CONF_CAMERA_IMAGE_SIZE: 224})
    await hass.async_block_till_done()
    await wait_loaded(vision_entry)
    await _ask(hass, vision_entry, "what do you see on the garden camera?", "en")
    assert cameras["camera.garden"].widths == [224]


async def test_two_cameras_named_both_attached_none_named_nothing(
    hass: HomeAssistant, vision_entry: MockConfigEntry, cameras: dict[str, GardenCamera]
) -> None:
    _, seen = await _ask(hass, vision_entry, "what do you see on the garden and front door cameras?", "en")
    assert seen[0].cameras == ("camera.front_door", "camera.garden")
    assert len(_images(seen[0])) == 2
    assert state_attrs(hass, vision_entry, "fast")["images"] == 2
    _, seen = await _ask(hass, vision_entry, "what do you see on the camera?", "en")
    assert seen[0].cameras == ()
    assert not _images(seen[0])
    assert state_attrs(hass, vision_entry, "fast")["images"] == 0


async def test_a_camera_without_a_picture_is_said_clearly(
    hass: HomeAssistant, vision_entry: MockConfigEntry, cameras: dict[str, GardenCamera]
) -> None:
    cameras["camera.garden"].working = False
    result, seen = await _ask(hass, vision_entry, "what do you see on the garden camera?", "en")
    assert seen == []  # no model was asked to describe a picture it did not get
    assert result.response.response_type.value == "error"
    speech = result.response.speech["plain"]["speech"]
    expected = EN["exceptions"]["camera_unavailable"]["message"].split("{")[0]
    assert speech.startswith(expected), speech
    assert "camera.garden" in speech


def _look(camera: str) -> str:
    call = {"name": LOOK_AT_CAMERA, "arguments": {"camera": camera}}
    return "<tool_call>\\n" + json.dumps(call).replace('"', '\\"') + "\\n</tool_call>"


@pytest.mark.parametrize(("camera", "looked"), [("Jardín", "camera.garden"), ("Front door", None)])
async def test_a_model_that_decides_to_look_uses_the_cameras_tool(
    hass: HomeAssistant,
    *,
    entry_data: dict[str, Any],
    tiny_mmproj: Path,
    cameras: dict[str, GardenCamera],
    camera: str,
    looked: str | None,
) -> None:
    """The cameras tool this integration adds to HA's Assist API (its `llm` platform): a tool call in
    any phrasing takes the picture of an exposed camera (by alias here); a camera not exposed to
    Assist is not looked at."""
    async_expose_entity(hass, conversation.DOMAIN, "camera.garden", True)
    data = {**entry_data, CONF_FAST_MMPROJ: str(tiny_mmproj), CONF_N_CTX: 16384}
    entry = make_entry(hass, data, llm_hass_api=["assist"])
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    seen, spy = spy_requests(entry)
    answer = 'root ::= "Sunny."'
    with spy, force(lambda log: answer if answering(log) else f'root ::= "{_look(camera)}"'):
        result = await conversation.async_converse(
            hass, "is it sunny out there?", None, Context(), language="en", agent_id=agent_id(hass, entry)
        )
    assert result.response.speech["plain"]["speech"] == "Sunny."
    assert LOOK_AT_CAMERA in {t["function"]["name"] for t in seen[0].tools or []}
    assert "Garden (camera.garden)" in seen[0].messages[0]["content"]  # the API's prompt names it
    tool_result = json.loads(seen[-1].messages[-1]["content"])
    looks = [r for r in seen if r.cameras]
    if looked is None:  # a failed call, as core's integrations tell their models
        assert tool_result["error"] is True
        assert tool_result["data"]["error"] == "unknown_camera"
        assert tool_result["data"]["cameras"] == ["Garden"]
        assert not looks
        return
    assert tool_result["camera"] == looked
    assert isinstance(tool_result["answer"], str)
    (look,) = looks
    assert look.cameras == (looked,)
    assert len(_images(look)) == 1
