"""An LLM API of this integration: the home's cameras as a tool a model can call to look.

Selectable in a conversation agent's options beside Home Assistant's Assist API. The words of a
turn already bring a named camera's snapshot (cameras.py); this tool lets a model that decides to
look do so in any phrasing. Only cameras exposed to Assist can be looked at.
"""

from __future__ import annotations

from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm
from homeassistant.util.json import JsonObjectType
import voluptuous as vol

from .cameras import SNAPSHOT_WIDTH, camera_by_name
from .const import DOMAIN
from .services import describe, loaded_entry
from .vision import camera_frame

CAMERA_API_ID = f"{DOMAIN}_cameras"
DEFAULT_QUESTION = "Describe what you see, briefly."


def exposed_cameras(hass: HomeAssistant) -> list[str]:
    return [e for e in sorted(hass.states.async_entity_ids("camera")) if async_should_expose(hass, "conversation", e)]


class LookAtCamera(llm.Tool):
    """Take a camera's current picture and have a model that sees answer a question about it."""

    name = "LookAtCamera"
    description = (
        "Look through one of the home's cameras now: takes its current picture and answers the "
        "question about it. Use it when the user asks what a camera shows or what is happening somewhere."
    )
    parameters = vol.Schema(
        {
            vol.Required("camera", description="the camera's name, area or entity id"): str,
            vol.Optional("question", description="what to find out from the picture"): str,
        }
    )

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> JsonObjectType:
        allowed = exposed_cameras(hass)
        entity_id = camera_by_name(hass, str(tool_input.tool_args["camera"]), allowed)
        if entity_id is None:
            return {"error": "unknown_camera", "cameras": [s.name for e in allowed if (s := hass.states.get(e))]}
        frame = await camera_frame(hass, entity_id, SNAPSHOT_WIDTH)
        question = str(tool_input.tool_args.get("question") or DEFAULT_QUESTION)
        decision, result = await describe(hass, loaded_entry(hass), [frame], prompt=question, cameras=(entity_id,))
        return {"camera": entity_id, "answer": result.text.strip(), "model": decision.role}


class CameraAPI(llm.API):
    """The cameras tool, with a prompt that names the cameras the model may look at."""

    def __init__(self, hass: HomeAssistant) -> None:
        super().__init__(hass=hass, id=CAMERA_API_ID, name="Sarai Omni cameras")

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        names = ", ".join(
            f"{state.name} ({state.entity_id})"
            for e in exposed_cameras(self.hass)
            if (state := self.hass.states.get(e))
        )
        prompt = f"You can look through these cameras with LookAtCamera: {names}." if names else "No camera is exposed."
        return llm.APIInstance(api=self, api_prompt=prompt, llm_context=llm_context, tools=[LookAtCamera()])
