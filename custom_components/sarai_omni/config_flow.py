"""Config flow: model files, RAM budget, threads and context; conversation subentries."""

from __future__ import annotations

import logging
from typing import Any

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryData,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import llm
from homeassistant.helpers.selector import (
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
)
import voluptuous as vol

from .const import (
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_IDLE_UNLOAD_S,
    CONF_KV_TYPE,
    CONF_MAX_TOKENS,
    CONF_MODEL_PREFERENCE,
    CONF_N_CTX,
    CONF_N_GPU_LAYERS,
    CONF_N_THREADS,
    CONF_PROMPT,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_REQUEST_TIMEOUT_S,
    CONF_ROUTER_SHORT_CHARS,
    CONF_ROUTER_SOFT_THRESHOLD,
    CONF_TEMPERATURE,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_IDLE_UNLOAD_S,
    DEFAULT_KV_TYPE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_N_CTX,
    DEFAULT_RAM_BUDGET_MB,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_TEMPERATURE,
    DOMAIN,
    KV_TYPES,
    MODEL_PREFERENCES,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
    TITLE,
)
from .engine.procmem import physical_cores, total_ram_bytes
from .integration import backend_available
from .validation import ModelFileError, check_model_file, estimated_mb

_LOGGER = logging.getLogger(__name__)
_MODEL_KEYS = (
    (CONF_FAST_MODEL, False),
    (CONF_FAST_MMPROJ, True),
    (CONF_QUALITY_MODEL, False),
    (CONF_QUALITY_MMPROJ, True),
)


def machine_ram_mb() -> int:
    return total_ram_bytes() // 2**20


def no_estimate() -> dict[str, str]:
    """Description placeholders before a model has been checked."""
    return {"needed_mb": "-", "budget_mb": "-", "ram_mb": str(machine_ram_mb()), "architecture": "-"}


def default_budget_mb() -> int:
    """The seed's 7.5 GB, capped by the machine's RAM (never more than the box has)."""
    ram = machine_ram_mb()
    return min(DEFAULT_RAM_BUDGET_MB, ram) if ram else DEFAULT_RAM_BUDGET_MB


def _int(minimum: int, maximum: int, step: int = 1, unit: str | None = None) -> NumberSelector:
    config = NumberSelectorConfig(min=minimum, max=maximum, step=step, mode=NumberSelectorMode.BOX)
    if unit:
        config["unit_of_measurement"] = unit
    return NumberSelector(config)


def user_schema() -> vol.Schema:
    return vol.Schema(
        {
            vol.Required(CONF_FAST_MODEL): TextSelector(),
            vol.Optional(CONF_FAST_MMPROJ): TextSelector(),
            vol.Optional(CONF_QUALITY_MODEL): TextSelector(),
            vol.Optional(CONF_QUALITY_MMPROJ): TextSelector(),
            vol.Required(CONF_RAM_BUDGET_MB, default=default_budget_mb()): _int(256, 1 << 20, 64, "MB"),
            vol.Required(CONF_N_THREADS, default=physical_cores()): _int(1, 256),
            vol.Required(CONF_N_CTX, default=DEFAULT_N_CTX): _int(256, 262144, 256),
        }
    )


def validate_models(hass: HomeAssistant, data: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Check every given model file and the budget (blocking). Returns (errors, placeholders)."""
    errors: dict[str, str] = {}
    infos = {}
    for key, projector in _MODEL_KEYS:
        if data.get(key):
            try:
                infos[key] = check_model_file(hass, data[key], projector=projector)
            except ModelFileError as err:
                errors[key] = err.key
    if errors:
        return errors, {}
    fast = infos[CONF_FAST_MODEL]
    need = estimated_mb(fast, int(data[CONF_N_CTX]), infos.get(CONF_FAST_MMPROJ))
    placeholders = {
        "needed_mb": str(need),
        "budget_mb": str(data[CONF_RAM_BUDGET_MB]),
        "ram_mb": str(machine_ram_mb()),
        "architecture": fast.architecture,
    }
    if int(data[CONF_RAM_BUDGET_MB]) > machine_ram_mb() > 0:
        errors[CONF_RAM_BUDGET_MB] = "budget_exceeds_ram"
    elif need > int(data[CONF_RAM_BUDGET_MB]):
        errors[CONF_RAM_BUDGET_MB] = "does_not_fit_budget"
    return errors, placeholders


class SaraiOmniConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up Sarai Omni with local GGUF models."""

    VERSION = 1
    MINOR_VERSION = 1

    async def _check(self, user_input: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """Validate a submitted form (in the executor). Returns (errors, description placeholders)."""
        placeholders = no_estimate()
        if not await self.hass.async_add_executor_job(backend_available):
            return {"base": "llama_cpp_missing"}, placeholders
        errors, found = await self.hass.async_add_executor_job(validate_models, self.hass, user_input)
        return errors, placeholders | found

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Change model files, budget, threads or context; the entry reloads with them."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        placeholders = no_estimate()
        if user_input is not None:
            user_input = _normalized(user_input)
            errors, placeholders = await self._check(user_input)
            if not errors:
                self.hass.config_entries.async_update_entry(entry, data=user_input)  # the update listener reloads
                return self.async_abort(reason="reconfigure_successful")
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(user_schema(), user_input or dict(entry.data)),
            errors=errors,
            description_placeholders=placeholders,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        return SaraiOptionsFlow()

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        await self.async_set_unique_id(DOMAIN)  # one installation per HA
        self._abort_if_unique_id_configured()
        errors: dict[str, str] = {}
        placeholders = no_estimate()
        if user_input is not None:
            user_input = _normalized(user_input)
            errors, placeholders = await self._check(user_input)
            if not errors:
                return self.async_create_entry(
                    title=TITLE, data=user_input, subentries=[default_conversation(), default_ai_task()]
                )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(user_schema(), user_input or {}),
            errors=errors,
            description_placeholders=placeholders,
        )

    @classmethod
    @callback
    def async_get_supported_subentry_types(cls, config_entry: ConfigEntry) -> dict[str, type[ConfigSubentryFlow]]:
        return {SUBENTRY_CONVERSATION: ConversationSubentryFlow, SUBENTRY_AI_TASK: AITaskSubentryFlow}


def _normalized(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
    for key in (CONF_RAM_BUDGET_MB, CONF_N_THREADS, CONF_N_CTX):
        out[key] = int(out[key])
    return {k: v for k, v in out.items() if v not in ("", None)}


def _subentry(kind: str, title: str, data: dict[str, Any]) -> ConfigSubentryData:
    return {"subentry_type": kind, "title": title, "unique_id": None, "data": data}


def default_conversation() -> ConfigSubentryData:
    """The conversation agent created together with the entry."""
    return _subentry(SUBENTRY_CONVERSATION, DEFAULT_CONVERSATION_NAME, conversation_defaults())


def default_ai_task() -> ConfigSubentryData:
    """The AI Task entity created together with the entry."""
    return _subentry(SUBENTRY_AI_TASK, DEFAULT_AI_TASK_NAME, ai_task_defaults())


def ai_task_defaults() -> dict[str, Any]:
    return {CONF_MODEL_PREFERENCE: "auto", CONF_MAX_TOKENS: 512, CONF_TEMPERATURE: 0.2}


def conversation_defaults() -> dict[str, Any]:
    return {
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_MODEL_PREFERENCE: "auto",
        CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
        CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    }


class SaraiOptionsFlow(OptionsFlow):
    """Tuning that needs no new files: KV cache type, GPU layers, idle unload, timeout, router."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        if user_input is not None:
            return self.async_create_entry(data=user_input)  # the update listener reloads the engine
        schema = vol.Schema(
            {
                vol.Required(CONF_KV_TYPE, default=DEFAULT_KV_TYPE): SelectSelector(
                    SelectSelectorConfig(
                        options=list(KV_TYPES), mode=SelectSelectorMode.DROPDOWN, translation_key=CONF_KV_TYPE
                    )
                ),
                vol.Required(CONF_N_GPU_LAYERS, default=0): _int(0, 999),
                vol.Required(CONF_IDLE_UNLOAD_S, default=DEFAULT_IDLE_UNLOAD_S): _int(0, 86400, 10, "s"),
                vol.Required(CONF_REQUEST_TIMEOUT_S, default=DEFAULT_REQUEST_TIMEOUT_S): _int(10, 3600, 10, "s"),
                vol.Required(CONF_ROUTER_SHORT_CHARS, default=200): _int(10, 4000),
                vol.Required(CONF_ROUTER_SOFT_THRESHOLD, default=0.8): NumberSelector(
                    NumberSelectorConfig(min=0, max=1, step=0.05, mode=NumberSelectorMode.SLIDER)
                ),
            }
        )
        return self.async_show_form(
            step_id="init", data_schema=self.add_suggested_values_to_schema(schema, dict(self.config_entry.options))
        )


class _AgentSubentryFlow(ConfigSubentryFlow):
    """Steps shared by the agent subentries: create one with a name, or reconfigure it in place."""

    default_name: str

    async def async_step_set_options(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        if self._get_entry().state != ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        creating = self.source == "user"
        if user_input is not None:
            data = self._clean(user_input)
            if creating:
                return self.async_create_entry(title=data.pop("name"), data=data)
            return self.async_update_and_abort(self._get_entry(), self._get_reconfigure_subentry(), data=data)
        current = (
            {"name": self.default_name, **self._defaults()} if creating else dict(self._get_reconfigure_subentry().data)
        )
        fields: dict[Any, Any] = {vol.Required("name"): TextSelector()} if creating else {}
        schema = vol.Schema(fields | self._fields())
        return self.async_show_form(
            step_id="set_options", data_schema=self.add_suggested_values_to_schema(schema, current)
        )

    async_step_user = async_step_reconfigure = async_step_set_options

    def _defaults(self) -> dict[str, Any]:
        raise NotImplementedError

    def _clean(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)

    def _fields(self) -> dict[Any, Any]:
        defaults = self._defaults()
        return {
            vol.Required(CONF_MODEL_PREFERENCE, default="auto"): SelectSelector(
                SelectSelectorConfig(
                    options=list(MODEL_PREFERENCES),
                    mode=SelectSelectorMode.DROPDOWN,
                    translation_key=CONF_MODEL_PREFERENCE,
                )
            ),
            vol.Required(CONF_MAX_TOKENS, default=defaults[CONF_MAX_TOKENS]): _int(1, 8192),
            vol.Required(CONF_TEMPERATURE, default=defaults[CONF_TEMPERATURE]): NumberSelector(
                NumberSelectorConfig(min=0, max=2, step=0.05, mode=NumberSelectorMode.SLIDER)
            ),
        }


class ConversationSubentryFlow(_AgentSubentryFlow):
    """Add or change a conversation agent: prompt, tools API, model preference, sampling."""

    default_name = DEFAULT_CONVERSATION_NAME

    def _defaults(self) -> dict[str, Any]:
        return conversation_defaults()

    def _clean(self, data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        if not data.get(CONF_LLM_HASS_API):  # "no tools" is stored as no key, like HA's core agents
            data.pop(CONF_LLM_HASS_API, None)
        return data

    def _fields(self) -> dict[Any, Any]:
        apis = [SelectOptionDict(label=api.name, value=api.id) for api in llm.async_get_apis(self.hass)]
        return {
            vol.Optional(CONF_LLM_HASS_API): SelectSelector(SelectSelectorConfig(options=apis, multiple=True)),
            vol.Optional(CONF_PROMPT): TemplateSelector(),
            **super()._fields(),
        }


class AITaskSubentryFlow(_AgentSubentryFlow):
    """Add or change an AI Task entity: model preference and sampling."""

    default_name = DEFAULT_AI_TASK_NAME

    def _defaults(self) -> dict[str, Any]:
        return ai_task_defaults()
