"""LLM tools platform (HA's `llm` integration): the home's cameras, and the timeline of what they saw,
as tools any agent can call.

HA gathers the tools of every integration's `llm.py` into its Assist API, so an agent with Assist
enabled (this integration's or another's) can look through a camera in any phrasing. The words of a
turn already bring a named camera's snapshot to this integration's agents (cameras.py); this tool is
for a model that decides to look. Only cameras exposed to Assist can be looked at, and only while
this integration's entry is loaded (a model that sees answers). The timeline tool answers from stored
events, no model loaded: its time words are resolved here (timeline/words.py), never by the model.
"""

from __future__ import annotations

from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.components.llm import LLMTools
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import llm
from homeassistant.util import dt as dt_util
from homeassistant.util.json import JsonValueType
import probatio

from .cameras import camera_by_name, snapshot_size
from .const import DOMAIN
from .history import async_events, place_of
from .services import describe, loaded_entry
from .timeline import LABELS, Event, Query, window
from .vision import camera_frame

LOOK_AT_CAMERA = f"{DOMAIN}__look_at_camera"
SEARCH_TIMELINE = f"{DOMAIN}__search_timeline"
FOUND = 10  # events one answer carries at most (newest first)
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
        entry = loaded_entry(hass)
        frame = await camera_frame(hass, entity_id, snapshot_size(entry))
        question = str(tool_input.tool_args.get("question") or DEFAULT_QUESTION)
        decision, result = await describe(hass, entry, [frame], prompt=question, cameras=(entity_id,))
        return llm.ToolResult(data={"camera": entity_id, "answer": result.text.strip(), "model": decision.role})


class SearchTimeline(llm.Tool):
    """What the cameras saw before: remembered analyses, by time, camera, label and words."""

    name = SEARCH_TIMELINE
    title = "Search the camera timeline"
    description = (
        "Search what the home's cameras saw earlier (remembered analyses, newest first). Use it when the "
        "user asks who came, what happened or what was seen at some time or on some camera."
    )
    parameters = probatio.Schema(
        {
            probatio.Optional("when", description='time words as the user said them: "today", "this morning", '
                              '"since 8", "ayer por la tarde"'): str,
            probatio.Optional("camera", description="the camera's name, area or entity id"): str,
            probatio.Optional("label", description=f"one of: {', '.join(LABELS)}"): probatio.In(LABELS),
            probatio.Optional("words", description="words the event's description holds"): str,
        }
    )  # fmt: skip
    annotations = llm.ToolAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)
    integration = DOMAIN

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> llm.ToolResult:
        args = tool_input.tool_args
        camera = None
        if name := args.get("camera"):
            camera = camera_by_name(hass, str(name), sorted(hass.states.async_entity_ids("camera")))
            if camera is None:
                return llm.ToolResult(data={"error": "unknown_camera"}, error=True)
        span = window(str(args.get("when") or ""), dt_util.now())
        start, end = span if span else (None, None)
        labels = (str(args["label"]),) if args.get("label") else ()
        query = Query(start, end, camera, labels, str(args.get("words") or ""), FOUND)
        events = await async_events(hass, loaded_entry(hass), query)
        data: dict[str, JsonValueType] = {"events": [_found(hass, e) for e in events]}
        if span:
            data["from"], data["to"] = (f"{dt_util.as_local(t):%Y-%m-%d %H:%M}" for t in span)
        return llm.ToolResult(data=data)


def _found(hass: HomeAssistant, event: Event) -> JsonValueType:
    return {
        "time": f"{dt_util.as_local(event.start):%Y-%m-%d %H:%M}",
        "camera": place_of(hass, event),
        "what": event.summary,
        "labels": list(event.labels),
    }


@callback
def async_get_tools(hass: HomeAssistant, llm_context: llm.LLMContext, api_id: str) -> LLMTools | None:
    """For the Assist API while the entry is loaded: the cameras tool when a camera is exposed, the
    timeline's once it holds an event."""
    if api_id != llm.LLM_API_ASSIST:
        return None
    if not any(e.state is ConfigEntryState.LOADED for e in hass.config_entries.async_entries(DOMAIN)):
        return None
    tools: list[llm.Tool] = []
    prompts: list[str] = []
    names = ", ".join(f"{s.name} ({s.entity_id})" for e in exposed_cameras(hass) if (s := hass.states.get(e)))
    if names:
        tools.append(LookAtCamera())
        prompts.append(f"You can look through these cameras with {LOOK_AT_CAMERA}: {names}.")
    if loaded_entry(hass).runtime_data.timeline.size:  # offered once there is something to find
        tools.append(SearchTimeline())
        prompts.append(f"What the cameras saw before is in {SEARCH_TIMELINE}.")
    return LLMTools(tools=tools, prompt=" ".join(prompts)) if tools else None
