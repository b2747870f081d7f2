"""Base entity for LLM entities (conversation, later AI Task): device info and the chat-log turn."""

from __future__ import annotations

from collections.abc import AsyncGenerator
import logging
from typing import Any

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.json import json_dumps

from .const import (
    CONF_MAX_TOKENS,
    CONF_MODEL_PREFERENCE,
    CONF_TEMPERATURE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DOMAIN,
)
from .engine import ChatRequest, ChatStream, RouteDecision
from .engine.prompts import Message
from .integration import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)


def to_message(content: conversation.Content) -> Message:
    """One chat-log item as a chat message for the model's template (the only converter)."""
    if isinstance(content, conversation.ToolResultContent):
        return {
            "role": "tool",
            "tool_call_id": content.tool_call_id,
            "name": content.tool_name,
            "content": json_dumps(content.tool_result),
        }
    if isinstance(content, conversation.AssistantContent):
        msg: Message = {"role": "assistant", "content": content.content or ""}
        if content.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.tool_name, "arguments": c.tool_args}}
                for c in content.tool_calls
            ]
        return msg
    return {"role": content.role, "content": content.content}  # system or user


def chat_messages(chat_log: conversation.ChatLog) -> list[Message]:
    return [to_message(c) for c in chat_log.content]


def last_user_text(chat_log: conversation.ChatLog) -> str:
    for content in reversed(chat_log.content):
        if isinstance(content, conversation.UserContent):
            return content.content
    return ""


async def _deltas(stream: ChatStream) -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
    yield {"role": "assistant"}
    async for text in stream:
        yield {"content": text}


class SaraiEntity(Entity):
    """An entity backed by the engine, configured by one subentry."""

    _attr_has_entity_name = True
    _attr_name = None

    def __init__(self, entry: SaraiConfigEntry, subentry: ConfigSubentry) -> None:
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer="Sarai Omni",
            model="llama.cpp (local)",
            entry_type=dr.DeviceEntryType.SERVICE,
        )
        self.last_route: RouteDecision | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.subentry.data)

    def _route(self, chat_log: conversation.ChatLog) -> RouteDecision:
        preference = self.options.get(CONF_MODEL_PREFERENCE, "auto")
        decision = self.entry.runtime_data.engine.route(
            last_user_text(chat_log), requested=None if preference == "auto" else preference
        )
        _LOGGER.debug("route -> %s model: %s", decision.role, decision.reason)
        self.last_route = decision
        return decision

    async def _async_handle_chat_log(self, chat_log: conversation.ChatLog) -> None:
        """Generate the assistant's reply into the chat log, streaming deltas as they arrive."""
        decision = self._route(chat_log)
        request = ChatRequest(
            messages=chat_messages(chat_log),
            role=decision.role,
            max_tokens=int(self.options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS)),
            temperature=float(self.options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
            route_reason=decision.reason,
        )
        stream = self.entry.runtime_data.engine.chat(request)
        async for _ in chat_log.async_add_delta_content_stream(self.entity_id, _deltas(stream)):
            pass
        if stream.result is not None:
            chat_log.async_trace({"stats": stream.result.as_dict(), "route": list(decision.reasons)})
