"""LLM tools platform (HA's `llm` integration): the home's cameras as a tool any agent can call.

HA gathers the tools of every integration's `llm.py` into its Assist API, so an agent with Assist
enabled (this integration's or another's) can look through a camera in any phrasing. The words of a
turn already bring a named camera's snapshot to this integration's agents (cameras.py); this tool is
for a model that decides to look. Only cameras exposed to Assist can be looked at, and only while
this integration's entry is loaded (a model that sees answers).
"""

from __future__ import annotations

from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.components.llm import LLMTools
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import llm
from homeassistant.util.json import JsonValueType
import probatio

from .cameras import SNAPSHOT_WIDTH, camera_by_name
from .const import DOMAIN
from .services import describe, loaded_entry
from .vision import camera_frame

LOOK_AT_CAMERA = f"{DOMAIN}__look_at_camera"
# Stored agents that chose the old "Sarai Omni cameras" API (before 1.3) get Assist instead.
LEGACY_CAMERA_API_ID = f"{DOMAIN}_cameras"
DEFAULT_QUESTION = "Describe what you see, briefly."


def exposed_cameras(hass: HomeAssistant) -> list[str]:
    return [e for e in sorted(hass.states.async_entity_ids("camera")) if async_should_expose(hass, "conversation", e)]


class LookAtCamera(llm.Tool):
    """Take a camera's current picture and have a model that sees answer a question about it."""

    name = LOOK_AT_CAMERA
    title = "Look at a camera"
    description = (
        "Look through one of the home's cameras now: takes its current picture and answers the "
        "question about it. Use it when the user asks what a camera shows or what is happening somewhere."
    )
    parameters = probatio.Schema(
        {
            probatio.Required("camera", description="the camera's name, area or entity id"): str,
            probatio.Optional("question", description="what to find out from the picture"): str,
        }
    )
    annotations = llm.ToolAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)
    integration = DOMAIN

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> llm.ToolResult:
        allowed = exposed_cameras(hass)
        entity_id = camera_by_name(hass, str(tool_input.tool_args["camera"]), allowed)
        if entity_id is None:
            names: list[JsonValueType] = [s.name for e in allowed if (s := hass.states.get(e))]
            return llm.ToolResult(data={"error": "unknown_camera", "cameras": names}, error=True)
        frame = await camera_frame(hass, entity_id, SNAPSHOT_WIDTH)
        question = str(tool_input.tool_args.get("question") or DEFAULT_QUESTION)
        decision, result = await describe(hass, loaded_entry(hass), [frame], prompt=question, cameras=(entity_id,))
        return llm.ToolResult(data={"camera": entity_id, "answer": result.text.strip(), "model": decision.role})


@callback
def async_get_tools(hass: HomeAssistant, llm_context: llm.LLMContext, api_id: str) -> LLMTools | None:
    """The cameras tool for the Assist API, while a model can answer and a camera is exposed."""
    if api_id != llm.LLM_API_ASSIST:
        return None
    if not any(e.state is ConfigEntryState.LOADED for e in hass.config_entries.async_entries(DOMAIN)):
        return None
    names = ", ".join(f"{s.name} ({s.entity_id})" for e in exposed_cameras(hass) if (s := hass.states.get(e)))
    if not names:
        return None
    return LLMTools(
        tools=[LookAtCamera()], prompt=f"You can look through these cameras with {LOOK_AT_CAMERA}: {names}."
    )
