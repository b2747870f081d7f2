"""The Assist conversation agent: one entity per conversation subentry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import logging
from typing import Literal

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, MATCH_ALL
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import chat_session, intent, llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.start import async_at_started
from homeassistant.helpers.translation import async_get_translations

from .cameras import mentioned_cameras, snapshot_size, snapshots_attached
from .const import CONF_MODEL_PREFERENCE, CONF_PROMPT, DOMAIN, ISSUE_CONTEXT, SUBENTRY_CONVERSATION
from .engine import ContextTooSmall, EngineError, Message
from .entity import MAX_TOOL_ITERATIONS, SaraiEntity, ToolDef, chat_messages, tool_definitions
from .history import about_the_past
from .issues import clear, raise_issue
from .models import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0

# HA's default instructions, in Spanish: used when the agent keeps the default prompt.
DEFAULT_PROMPT_ES = (
    "Eres un asistente de voz para Home Assistant.\n"
    "Responde con la verdad a las preguntas sobre el mundo.\n"
    "Responde en texto plano. Sé sencillo y ve al grano."
)
LANGUAGE_LINES = {"en": "Always answer in English.", "es": "Responde siempre en español."}


def localized_prompt(prompt: str | None, language: str) -> str:
    """The agent's instructions, in Spanish when it uses the default ones and the user speaks it."""
    prompt = prompt or llm.DEFAULT_INSTRUCTIONS_PROMPT
    if prompt == llm.DEFAULT_INSTRUCTIONS_PROMPT and language.split("-", maxsplit=1)[0] == "es":
        return DEFAULT_PROMPT_ES
    return prompt


def language_line(language: str) -> str:
    """Tell the model which language to answer in (small models drift to English otherwise)."""
    return LANGUAGE_LINES.get(language.split("-", maxsplit=1)[0], f"Always answer in the user's language ({language}).")


async def async_setup_entry(
    hass: HomeAssistant, entry: SaraiConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """One conversation entity per conversation subentry."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == SUBENTRY_CONVERSATION:
            async_add_entities([SaraiConversationEntity(entry, subentry)], config_subentry_id=subentry.subentry_id)


class SaraiConversationEntity(conversation.ConversationEntity, SaraiEntity):
    """Answers Assist turns with the local models."""

    _attr_supports_streaming = True

    def __init__(self, entry: SaraiConfigEntry, subentry: ConfigSubentry) -> None:
        super().__init__(entry, subentry)
        if subentry.data.get(CONF_LLM_HASS_API):
            self._attr_supported_features = conversation.ConversationEntityFeature.CONTROL

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Warm the standing prompt once Home Assistant runs (the exposed entities are known then):
        after a restart the KV state comes back from disk, so even the first turn evaluates only the
        user's words, not ~1.5k tokens of instructions, tools and entities."""
        await super().async_added_to_hass()
        self.async_on_remove(async_at_started(self.hass, self._warm_at_start))

    def _standing_role(self) -> str:
        """Where this agent's turns usually go: its preferred role, else the engine's default one."""
        engine, preference = self.entry.runtime_data.engine, self.options.get(CONF_MODEL_PREFERENCE)
        return preference if preference in engine.roles else engine.default_role

    @callback
    def _warm_at_start(self, _hass: HomeAssistant) -> None:
        if not self.entry.runtime_data.engine.warms(self._standing_role()):  # a server keeps its own cache
            return
        self.entry.async_create_background_task(
            self.hass, self.async_prepare(), f"{DOMAIN} warm {self.entity_id}", eager_start=False
        )

    async def async_prepare(self, language: str | None = None) -> None:
        """Before the user finishes speaking: load the agent's model and evaluate the standing prompt,
        so the user's words are the only new tokens of the turn."""
        language = language or self.hass.config.language
        try:
            system, tools = await self._standing_prompt(language)
            await self.entry.runtime_data.engine.warm(self._standing_role(), [system], tools)
        except EngineError as err:
            _LOGGER.debug("Pre-warming the %s model failed: %s", self._standing_role(), err)

    async def _standing_prompt(self, language: str) -> tuple[Message, list[ToolDef] | None]:
        """The system prompt a turn in `language` would start with (exposed entities included), and
        the tools it lists: Qwen's template puts them in the system block, ~1k tokens of the prefix."""
        context = llm.LLMContext(
            platform=DOMAIN, context=Context(), language=language, assistant=conversation.DOMAIN, device_id=None
        )
        with (
            chat_session.async_get_chat_session(self.hass) as session,
            conversation.async_get_chat_log(self.hass, session) as chat_log,
        ):
            await chat_log.async_provide_llm_data(
                context,
                self.options.get(CONF_LLM_HASS_API),
                localized_prompt(self.options.get(CONF_PROMPT), language),
                language_line(language),
            )
            # the same conversions as a real turn, clock moved out
            return chat_messages(chat_log)[0], tool_definitions(chat_log)

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        options = self.options
        language = user_input.language or self.hass.config.language
        extra = "\n".join(filter(None, [user_input.extra_system_prompt, language_line(language)]))
        try:
            await chat_log.async_provide_llm_data(
                user_input.as_llm_context(DOMAIN),
                options.get(CONF_LLM_HASS_API),
                localized_prompt(options.get(CONF_PROMPT), language),
                extra,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        # the turn asks about these cameras now: it sees them (about earlier, the timeline answers)
        cameras = [] if about_the_past(self.entry, user_input.text) else mentioned_cameras(self.hass, user_input.text)
        try:
            async with self._looking(chat_log, cameras, user_input.text):
                finished = await self._async_handle_chat_log(chat_log, cameras=tuple(cameras))
        except ContextTooSmall as err:
            return self._error_result(language, chat_log, await self._too_small(language, err))
        except EngineError as err:
            _LOGGER.error("Sarai Omni could not answer: %s", err)
            return self._error_result(language, chat_log, await self._message(language, err.key, str(err)))
        except HomeAssistantError as err:  # a camera named in the turn gave no snapshot
            return self._error_result(language, chat_log, str(err))
        clear(self.hass, ISSUE_CONTEXT)  # the prompt fits (again)
        if not finished:
            text = await self._message(language, "tool_loop_limit", str(MAX_TOOL_ITERATIONS))
            chat_log.async_add_assistant_content_without_tools(
                conversation.AssistantContent(agent_id=self.entity_id, content=text)
            )
        return conversation.async_get_result_from_chat_log(user_input, chat_log)

    @contextlib.asynccontextmanager
    async def _looking(self, chat_log: conversation.ChatLog, cameras: list[str], text: str) -> AsyncIterator[None]:
        """The cameras' snapshots attached to the turn; meanwhile the model that will look at them
        is loaded and its standing prompt warmed (from its context or disk), so only the image and
        the question are evaluated."""
        engine, warming = self.entry.runtime_data.engine, None
        role = engine.route(text, frozenset({"image"})).role if cameras else None
        if role is not None and role != self._standing_role() and engine.warms(role):
            system, tools = chat_messages(chat_log)[0], tool_definitions(chat_log)
            warming = asyncio.create_task(engine.warm(role, [system], tools), name=f"{DOMAIN} warm {role}")
        try:
            async with snapshots_attached(self.hass, chat_log, cameras, snapshot_size(self.entry)):
                if warming is not None:
                    with contextlib.suppress(EngineError):  # the turn itself says what went wrong
                        await warming
                yield
        finally:
            if warming is not None and not warming.done():
                warming.cancel()

    async def _message(self, language: str, key: str, detail: str, **placeholders: str) -> str:
        """This integration's translated exception message for `key`, in `language`."""
        strings = await async_get_translations(self.hass, language, "exceptions", [DOMAIN])
        template = strings.get(f"component.{DOMAIN}.exceptions.{key}.message") or detail
        for name, value in {"error": detail, "max": detail, **placeholders}.items():
            template = template.replace(f"{{{name}}}", value)
        return template

    async def _too_small(self, language: str, err: ContextTooSmall) -> str:
        """Say why the turn cannot be answered and what to change, here and as a repair."""
        figures = err.placeholders() | {"role": err.role or self._standing_role()}
        _LOGGER.warning("Sarai Omni could not answer: %s", err)
        raise_issue(self.hass, ISSUE_CONTEXT, None, **figures)
        return await self._message(language, err.key, str(err), **figures)

    def _error_result(
        self, language: str, chat_log: conversation.ChatLog, message: str
    ) -> conversation.ConversationResult:
        response = intent.IntentResponse(language=language)
        response.async_set_error(intent.IntentResponseErrorCode.UNKNOWN, message)
        return conversation.ConversationResult(response=response, conversation_id=chat_log.conversation_id)
