"""Base entity for LLM entities: device info, ChatLog ↔ engine, the tool-call loop, streaming."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from datetime import datetime
import logging
from pathlib import Path
import re
from typing import Any

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.helpers import device_registry as dr, llm
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.json import json_dumps
from homeassistant.util import dt as dt_util
import probatio

from .const import (
    AUTO,
    BACKEND_LLAMA_CPP,
    BACKEND_REMOTE,
    BACKEND_TRANSFORMERS,
    CONF_MAX_TOKENS,
    CONF_MODEL_PREFERENCE,
    CONF_TEMPERATURE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DOMAIN,
)
from .engine import (
    JSON_SCHEMA,
    BadToolCall,
    ChatRequest,
    ChatStream,
    Message,
    RouteDecision,
    TextPart,
    ToolCall,
    ToolCallParser,
    tool_call_schema,
)
from .history import about_the_past
from .models import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)
MAX_TOOL_ITERATIONS = 10
CLOCK = re.compile(r"Current time is \d\d:\d\d:\d\d\. Today's date is \d{4}-\d\d-\d\d\.\n?")
INVALID_TOOL = "invalid_tool_call"
ToolDef = dict[str, Any]
Delta = conversation.AssistantContentDeltaDict | conversation.ToolResultContentDeltaDict


def to_message(content: conversation.Content) -> Message:
    """One chat-log item as a chat message for the model's template (the only converter)."""
    if isinstance(content, conversation.ToolResultContent):
        result = content.result  # a failed call says so, as core's integrations tell their models
        return {
            "role": "tool",
            "tool_call_id": content.tool_call_id,
            "name": content.tool_name,
            "content": json_dumps({"data": result.data, "error": True} if result.error else result.data),
        }
    if isinstance(content, conversation.AssistantContent):
        msg: Message = {"role": "assistant", "content": content.content or ""}
        if content.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.tool_name, "arguments": c.tool_args}}
                for c in content.tool_calls
            ]
        return msg
    if isinstance(content, conversation.UserContent) and (media := media_attachments(content)):
        return {
            "role": "user",
            "content": [{"type": "text", "text": content.content}]
            + [{"type": kind, "path": str(path)} for kind, path in media],
        }
    return {"role": content.role, "content": content.content}  # system or user


def media_attachments(content: conversation.UserContent) -> list[tuple[str, Path]]:
    """A user message's local image and audio attachments (camera snapshots, uploads, media files)."""
    kinds = {"image/": "image", "audio/": "audio"}
    return [
        (kind, a.path)
        for a in content.attachments or []
        for prefix, kind in kinds.items()
        if a.mime_type.startswith(prefix)
    ]


def last_user_modalities(chat_log: conversation.ChatLog) -> frozenset[str]:
    for content in reversed(chat_log.content):
        if isinstance(content, conversation.UserContent):
            return frozenset(kind for kind, _ in media_attachments(content))
    return frozenset()


def chat_messages(chat_log: conversation.ChatLog) -> list[Message]:
    """The chat log as messages, with a KV-cache-friendly clock.

    HA ends the system prompt with the current time to the second, so every turn's prompt would
    differ from the first line after it, and the whole history would be evaluated again each turn.
    Instead the clock line leaves the system prompt and each user message carries the time it was
    asked (from its `created` stamp) as `context`, which the prompt format places: accurate, and
    identical on every later turn.
    """
    messages = [to_message(c) for c in chat_log.content]
    if not messages or messages[0]["role"] != "system" or not CLOCK.search(messages[0]["content"]):
        return messages
    messages[0] = {**messages[0], "content": CLOCK.sub("", messages[0]["content"]).rstrip("\n")}
    for msg, content in zip(messages, chat_log.content, strict=True):
        if isinstance(content, conversation.UserContent):
            msg["context"] = clock_line(content.created)
            if isinstance(msg["content"], list):  # with images: the clock goes into the text part
                msg["content"][0] = {"type": "text", "text": f"{msg.pop('context')}\n{msg['content'][0]['text']}"}
    return messages


def clock_line(when: datetime) -> str:
    """HA's date/time prompt line (llm.DATE_TIME_PROMPT) for a given moment."""
    local = dt_util.as_local(when)
    return f"Current time is {local:%H:%M:%S}. Today's date is {local:%Y-%m-%d}."


def last_user_text(chat_log: conversation.ChatLog) -> str:
    for content in reversed(chat_log.content):
        if isinstance(content, conversation.UserContent):
            return content.content
    return ""


def tool_definitions(chat_log: conversation.ChatLog) -> list[ToolDef] | None:
    """The LLM API's tools in the OpenAI function format that Qwen's chat template lists.

    In one canonical form (tools by name, enums sorted): HA builds some enums from sets, whose order
    changes with each process's hash seed, and a prompt that differs after a restart would miss its
    KV snapshot on disk.
    """
    api = chat_log.llm_api
    if api is None or not api.tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": _canonical(openapi(tool.parameters, api.custom_serializer)),
            },
        }
        for tool in sorted(api.tools, key=lambda t: t.name)
    ]


def openapi(schema: probatio.Schema, serializer: Callable[[Any], Any] | None) -> dict[str, Any]:
    """A tool's or a task's schema as JSON schema, through HA's own converter (as core's llama_cpp)."""
    return probatio.to_openapi(schema, custom_serializer=serializer, openapi_version="3.1.0")


def _canonical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: sorted(v, key=str) if k == "enum" and isinstance(v, list) else _canonical(v) for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_canonical(v) for v in schema]
    return schema


async def transform_stream(stream: ChatStream, tools_enabled: bool) -> AsyncGenerator[Delta]:
    """Engine text deltas → chat-log deltas: text streams on, tool calls are cut out and parsed.

    Well-formed calls go to HA to run. Malformed ones get an error result right here (as an
    `external` call, since HA must not run it), so the model sees what was wrong and can retry.
    """
    yield {"role": "assistant"}
    open_message = True
    async for event in _parsed(stream):
        for delta in _event_deltas(event, tools_enabled, open_message):
            open_message = delta.get("role") != "tool_result"
            yield delta


async def _parsed(stream: ChatStream) -> AsyncGenerator[TextPart | ToolCall | BadToolCall]:
    parser = ToolCallParser()
    async for text in stream:
        for event in parser.feed(text):
            yield event
    for event in parser.flush():
        yield event


def _event_deltas(event: TextPart | ToolCall | BadToolCall, tools_enabled: bool, open_message: bool) -> Iterator[Delta]:
    if not open_message:
        yield {"role": "assistant"}
    if isinstance(event, TextPart):
        yield {"content": event.text}
    elif not tools_enabled:
        _LOGGER.warning("The model called a tool but no LLM API is enabled for this agent; ignored")
    elif isinstance(event, ToolCall):
        yield {"tool_calls": [llm.ToolInput(tool_name=event.name, tool_args=event.arguments)]}
    else:
        call = llm.ToolInput(tool_name=event.name or INVALID_TOOL, tool_args={}, external=True)
        _LOGGER.debug("Malformed tool call from the model: %s (%s)", event.raw, event.reason)
        yield {"tool_calls": [call]}
        yield {
            "role": "tool_result",
            "tool_call_id": call.id,
            "tool_name": call.tool_name,
            "result": llm.ToolResult(data={"error": INVALID_TOOL, "error_text": event.reason}, error=True),
        }


def repair_schema(chat_log: conversation.ChatLog, tools: list[ToolDef] | None) -> dict[str, Any] | None:
    """After a malformed tool call, constrain the retry to a valid call of a real tool."""
    last = chat_log.content[-1] if chat_log.content else None
    if tools and isinstance(last, conversation.ToolResultContent) and last.result.data.get("error") == INVALID_TOOL:
        return tool_call_schema(tools)
    return None


_BACKEND_NAMES = {
    BACKEND_LLAMA_CPP: "llama.cpp (local)",
    BACKEND_TRANSFORMERS: "transformers (torch venv)",
    BACKEND_REMOTE: "server",
}


def backend_label(entry: SaraiConfigEntry) -> str:
    """What runs the entry's models, for the device card: one kind, or each kind with its roles."""
    engine = entry.runtime_data.engine
    kinds: dict[str, list[str]] = {}
    for role in engine.roles:
        kinds.setdefault(engine.status(role).backend, []).append(role)
    if len(kinds) == 1:
        (kind,) = kinds
        return "OpenAI-compatible server" if kind == BACKEND_REMOTE else _BACKEND_NAMES[kind]
    return " + ".join(f"{_BACKEND_NAMES[k]} ({', '.join(roles)})" for k, roles in kinds.items())


class SaraiEntity(Entity):
    """An entity backed by the engine, configured by one subentry."""

    _attr_has_entity_name = True
    _attr_name = None
    # Where the subentry does not say (AI Task entities override these).
    default_max_tokens = DEFAULT_MAX_TOKENS
    default_temperature = DEFAULT_TEMPERATURE

    def __init__(self, entry: SaraiConfigEntry, subentry: ConfigSubentry) -> None:
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer="Sarai Omni",
            model=backend_label(entry),
            entry_type=dr.DeviceEntryType.SERVICE,
        )

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.subentry.data)

    def _route(self, chat_log: conversation.ChatLog, constraints: frozenset[str] = frozenset()) -> RouteDecision:
        preference = self.options.get(CONF_MODEL_PREFERENCE, AUTO)
        engine = self.entry.runtime_data.engine
        text = last_user_text(chat_log)
        decision = engine.route(
            text,
            last_user_modalities(chat_log),
            requested=preference if preference in engine.roles else None,  # a role since removed: auto
            constraints=constraints,
            past=about_the_past(self.entry, text),
        )
        _LOGGER.debug("route -> %s model: %s", decision.role, decision.reason)
        return decision

    async def _async_handle_chat_log(
        self, chat_log: conversation.ChatLog, structure: dict[str, Any] | None = None, cameras: tuple[str, ...] = ()
    ) -> bool:
        """Generate into the chat log until no tool result awaits an answer.

        `structure` (a JSON schema) constrains the answer to JSON of that shape (AI Task data).
        Returns False when the tool loop hit MAX_TOOL_ITERATIONS (the caller says so to the user).
        """
        decision = self._route(chat_log, frozenset({JSON_SCHEMA}) if structure is not None else frozenset())
        tools = tool_definitions(chat_log)
        engine = self.entry.runtime_data.engine
        # A malformed tool call is retried constrained to a valid call where the role's backend can
        # enforce a schema; elsewhere the model retries from the error it was told, unconstrained.
        repairs = JSON_SCHEMA in engine.constraints(decision.role)
        for _ in range(MAX_TOOL_ITERATIONS):
            repair = repair_schema(chat_log, tools) if repairs else None
            request = ChatRequest(
                messages=chat_messages(chat_log),
                role=decision.role,
                tools=tools,
                max_tokens=int(self.options.get(CONF_MAX_TOKENS, self.default_max_tokens)),
                temperature=float(self.options.get(CONF_TEMPERATURE, self.default_temperature)),
                route_reason=decision.reason,
                json_schema=repair or structure,
                schema_as_tool_call=repair is not None,
                cameras=cameras,
            )
            stream = engine.chat(request)
            async for _ in chat_log.async_add_delta_content_stream(
                self.entity_id, transform_stream(stream, tools is not None)
            ):
                pass
            if stream.result is not None:
                chat_log.async_trace({"stats": stream.result.as_dict(), "route": list(decision.reasons)})
            if not chat_log.unresponded_tool_results:
                return True
        return False
