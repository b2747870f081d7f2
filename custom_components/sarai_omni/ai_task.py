"""AI Task entity: generate_data, with image attachments and a structure (JSON-schema decoding)."""

from __future__ import annotations

from json import JSONDecodeError
import logging

from homeassistant.components import ai_task, conversation
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util.json import json_loads
import probatio

from .const import DEFAULT_TASK_MAX_TOKENS, DEFAULT_TASK_TEMPERATURE, DOMAIN, SUBENTRY_AI_TASK
from .engine import EngineError
from .entity import SaraiEntity, openapi
from .errors import ha_error
from .models import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant, entry: SaraiConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    for subentry in entry.subentries.values():
        if subentry.subentry_type == SUBENTRY_AI_TASK:
            async_add_entities([SaraiAITaskEntity(entry, subentry)], config_subentry_id=subentry.subentry_id)


class SaraiAITaskEntity(ai_task.AITaskEntity, SaraiEntity):
    """Generates text or structured data, locally; sees attached images with a vision projector."""

    _attr_supported_features = (
        ai_task.AITaskEntityFeature.GENERATE_DATA | ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
    )

    default_max_tokens = DEFAULT_TASK_MAX_TOKENS
    default_temperature = DEFAULT_TASK_TEMPERATURE

    async def _async_generate_data(
        self, task: ai_task.GenDataTask, chat_log: conversation.ChatLog
    ) -> ai_task.GenDataTaskResult:
        """The same chat-log path as Assist (entity.py), with the structure as a JSON schema."""
        schema = openapi(task.structure, llm.selector_serializer) if task.structure else None
        try:
            await self._async_handle_chat_log(chat_log, structure=schema)
        except EngineError as err:
            raise ha_error(err) from err
        last = chat_log.content[-1]
        text = last.content or "" if isinstance(last, conversation.AssistantContent) else ""
        if task.structure is None:
            return ai_task.GenDataTaskResult(conversation_id=chat_log.conversation_id, data=text)
        return ai_task.GenDataTaskResult(
            conversation_id=chat_log.conversation_id, data=_structured(task.structure, text)
        )


def _structured(structure: probatio.Schema, text: str) -> object:
    """Parse and validate the model's JSON; a clear, translated error when it does not fit."""
    try:
        data = json_loads(text)
    except JSONDecodeError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN, translation_key="invalid_json", translation_placeholders={"error": str(err)}
        ) from err
    try:
        return structure(data)
    except probatio.Invalid as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="structure_mismatch",
            translation_placeholders={"error": str(err)},
        ) from err
