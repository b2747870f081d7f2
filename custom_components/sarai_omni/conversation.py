"""The Assist conversation agent: one entity per conversation subentry."""

from __future__ import annotations

import logging
from typing import Literal

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.translation import async_get_translations

from .const import CONF_PROMPT, DOMAIN, SUBENTRY_CONVERSATION
from .engine import FAST, EngineError
from .entity import SaraiEntity
from .integration import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0


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

    async def async_prepare(self, language: str | None = None) -> None:
        """Make sure the fast model is resident before the user finishes speaking."""
        try:
            await self.entry.runtime_data.engine.load(FAST)
        except EngineError as err:
            _LOGGER.debug("prepare could not load the fast model: %s", err)

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        options = self.options
        try:
            await chat_log.async_provide_llm_data(
                user_input.as_llm_context(DOMAIN),
                options.get(CONF_LLM_HASS_API),
                options.get(CONF_PROMPT),
                user_input.extra_system_prompt,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        try:
            await self._async_handle_chat_log(chat_log)
        except EngineError as err:
            _LOGGER.error("Sarai Omni could not answer: %s", err)
            return await self._error_result(user_input, chat_log, err)
        return conversation.async_get_result_from_chat_log(user_input, chat_log)

    async def _error_result(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog, err: EngineError
    ) -> conversation.ConversationResult:
        """A spoken error in the user's language, from this integration's translations."""
        language = user_input.language or self.hass.config.language
        strings = await async_get_translations(self.hass, language, "exceptions", [DOMAIN])
        message = strings.get(f"component.{DOMAIN}.exceptions.{err.key}.message") or str(err)
        response = intent.IntentResponse(language=language)
        response.async_set_error(intent.IntentResponseErrorCode.UNKNOWN, message.replace("{error}", str(err)))
        return conversation.ConversationResult(response=response, conversation_id=chat_log.conversation_id)
