"""Subentry flows: conversation agents, AI Task entities and model roles (each made or reconfigured).

A model role is one model with a name (`fast`, `quality` from setup, or any other): a GGUF and its
projector, a model folder, or a model on a server; its files are checked and the roles together
against the RAM budget before it is saved. The entry reloads with it (the update listener).
"""

from __future__ import annotations

import re
from typing import Any

from homeassistant.config_entries import ConfigEntryState, ConfigSubentryData, ConfigSubentryFlow, SubentryFlowResult
from homeassistant.const import CONF_LLM_HASS_API
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
import probatio

from .const import (
    AUTO,
    CONF_MAX_TOKENS,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_MODEL_PREFERENCE,
    CONF_N_BATCH,
    CONF_N_CTX,
    CONF_PINNED,
    CONF_PROMPT,
    CONF_RAM_BUDGET_MB,
    CONF_ROLE,
    CONF_SERVER,
    CONF_TEMPERATURE,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from .engine import defaults
from .flow_schemas import CONF_ON_SERVER, normalized, number, role_schema
from .flow_servers import Servers, ServerSteps
from .settings import role_data, role_subentries
from .validation import check_roles, is_folder_model, no_estimate, summary

ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # what services and selectors can name


def _subentry(kind: str, title: str, data: dict[str, Any]) -> ConfigSubentryData:
    return {"subentry_type": kind, "title": title, "unique_id": None, "data": data}


def default_conversation() -> ConfigSubentryData:
    """The conversation agent created together with the entry."""
    return _subentry(SUBENTRY_CONVERSATION, DEFAULT_CONVERSATION_NAME, conversation_defaults())


def default_ai_task() -> ConfigSubentryData:
    """The AI Task entity created together with the entry."""
    return _subentry(SUBENTRY_AI_TASK, DEFAULT_AI_TASK_NAME, ai_task_defaults())


def ai_task_defaults() -> dict[str, Any]:
    return {
        CONF_MODEL_PREFERENCE: AUTO,
        CONF_MAX_TOKENS: defaults.TASK_MAX_TOKENS,
        CONF_TEMPERATURE: defaults.TASK_TEMPERATURE,
    }


def conversation_defaults() -> dict[str, Any]:
    """Like core's agents: the Assist API on, so a new agent can control the home out of the box."""
    return {
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_MODEL_PREFERENCE: AUTO,
        CONF_MAX_TOKENS: defaults.MAX_TOKENS,
        CONF_TEMPERATURE: defaults.TEMPERATURE,
    }


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
        fields: dict[Any, Any] = {probatio.Required("name"): TextSelector()} if creating else {}
        schema = probatio.Schema(fields | self._fields())
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
        roles = [str(s.data[CONF_ROLE]) for s in role_subentries(self._get_entry())]
        return {
            probatio.Required(CONF_MODEL_PREFERENCE, default=AUTO): SelectSelector(
                SelectSelectorConfig(
                    options=[AUTO, *roles],  # the entry's roles (the default ones' labels are translated)
                    mode=SelectSelectorMode.DROPDOWN,
                    translation_key=CONF_MODEL_PREFERENCE,
                )
            ),
            probatio.Required(CONF_MAX_TOKENS, default=defaults[CONF_MAX_TOKENS]): number(1, 8192),
            probatio.Required(CONF_TEMPERATURE, default=defaults[CONF_TEMPERATURE]): NumberSelector(
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
            probatio.Optional(CONF_LLM_HASS_API): SelectSelector(SelectSelectorConfig(options=apis, multiple=True)),
            probatio.Optional(CONF_PROMPT): TemplateSelector(),
            **super()._fields(),
        }


class AITaskSubentryFlow(_AgentSubentryFlow):
    """Add or change an AI Task entity: model preference and sampling."""

    default_name = DEFAULT_AI_TASK_NAME

    def _defaults(self) -> dict[str, Any]:
        return ai_task_defaults()


class ModelRoleSubentryFlow(ServerSteps[SubentryFlowResult], ConfigSubentryFlow):
    """Add a model role, or change one: its model (or server), context, batch, whether it stays loaded."""

    def __init__(self) -> None:
        self._servers = Servers()
        self._role: dict[str, Any] = {}

    async def async_step_role(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        creating = self.source == "user"
        current = {} if creating else dict(self._get_reconfigure_subentry().data)
        errors: dict[str, str] = {}
        placeholders = no_estimate(self._get_entry().data.get(CONF_RAM_BUDGET_MB))
        if user_input is not None:
            form = normalized(user_input)
            name = str(form.get(CONF_ROLE, "")) if creating else str(current[CONF_ROLE])
            if error := self._name_error(name) if creating else None:
                errors[CONF_ROLE] = error
            elif form.pop(CONF_ON_SERVER, False):
                self._role = self._data(name, form, server={})
                self._servers.plan([name], {name: current[CONF_SERVER]} if CONF_SERVER in current else {})
                return await self.async_step_remote()
            elif not form.get(CONF_MODEL_PATH):
                errors[CONF_MODEL_PATH] = "model_required"
            else:
                folder = await self.hass.async_add_executor_job(is_folder_model, self.hass, form[CONF_MODEL_PATH])
                self._role = self._data(name, form, folder=folder)
                errors, placeholders = await self._check()
                if not errors:
                    return self._finish()
        values = user_input or self._form_values(current)
        return self.async_show_form(
            step_id="role",
            data_schema=self.add_suggested_values_to_schema(role_schema(creating=creating), values),
            errors=errors,
            description_placeholders=placeholders,
        )

    async_step_user = async_step_reconfigure = async_step_role

    def _name_error(self, name: str) -> str | None:
        taken = {str(s.data[CONF_ROLE]) for s in role_subentries(self._get_entry())}
        if not ROLE_NAME.fullmatch(name) or name == "auto":
            return "invalid_role"
        return "role_exists" if name in taken else None

    @staticmethod
    def _data(
        name: str, form: dict[str, Any], *, server: dict[str, Any] | None = None, folder: bool = False
    ) -> dict[str, Any]:
        return role_data(
            name, model=form.get(CONF_MODEL_PATH), mmproj=form.get(CONF_MMPROJ_PATH), server=server, folder=folder,
            n_ctx=int(form.get(CONF_N_CTX, defaults.N_CTX)), n_batch=int(form.get(CONF_N_BATCH, defaults.N_BATCH)),
            pinned=bool(form.get(CONF_PINNED)),
        )  # fmt: skip

    @staticmethod
    def _form_values(current: dict[str, Any]) -> dict[str, Any]:
        kept = (CONF_MODEL_PATH, CONF_MMPROJ_PATH, CONF_N_CTX, CONF_N_BATCH, CONF_PINNED)
        return {k: current[k] for k in kept if k in current} | {CONF_ON_SERVER: CONF_SERVER in current}

    async def _servers_settled(self) -> SubentryFlowResult:
        self._role[CONF_SERVER] = self._servers.settings[str(self._role[CONF_ROLE])]
        errors, placeholders = await self._check()
        if not errors:
            return self._finish()
        return self.async_show_form(
            step_id="role",
            data_schema=self.add_suggested_values_to_schema(role_schema(creating=self.source == "user"), self._role),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _check(self) -> tuple[dict[str, str], dict[str, str]]:
        """This role's files, then all roles together against the budget (in the executor)."""
        entry, name = self._get_entry(), str(self._role[CONF_ROLE])
        roles = [dict(s.data) for s in role_subentries(entry) if s.data[CONF_ROLE] != name] + [self._role]
        checked = await self.hass.async_add_executor_job(check_roles, self.hass, roles)
        fields = {"model": CONF_MODEL_PATH, "mmproj": CONF_MMPROJ_PATH}
        mine = {fields[f]: key for (role, f), key in checked.errors.items() if role == name}
        if mine or checked.errors:  # another role's files broke since: say so on this form
            return mine or {"base": "other_role_broken"}, no_estimate() | {"found": checked.found}
        budget = int(entry.data[CONF_RAM_BUDGET_MB])
        return await self.hass.async_add_executor_job(summary, self.hass, roles, checked, budget, entry.options)

    def _finish(self) -> SubentryFlowResult:
        name = str(self._role[CONF_ROLE])
        if self.source == "user":
            return self.async_create_entry(title=name, data=self._role, unique_id=name)
        return self.async_update_and_abort(self._get_entry(), self._get_reconfigure_subentry(), data=self._role)
