"""Config flow: the default roles' models (or downloads, or servers), RAM budget, threads and context;
reconfigure; options; the subentry types (agents, AI Task, model roles: subentry_flows.py).

The setup form makes the `fast` (pinned) and `quality` roles as model subentries, the global
settings as data, the KV cache type and GPU layers as options (settings.py says where each lives).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentry,
    ConfigSubentryData,
    ConfigSubentryFlow,
    OptionsFlow,
)
from homeassistant.core import callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from .catalog import SEEDS
from .const import (
    BACKEND_REMOTE,
    BACKEND_TRANSFORMERS,
    CONF_BACKEND,
    CONF_DOWNLOAD,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_FILENAME,
    CONF_KV_TYPE,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_N_CTX,
    CONF_N_GPU_LAYERS,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_REMOTE_ROLES,
    CONF_REPO_ID,
    CONF_REVISION,
    CONF_ROLE,
    CONF_SERVER,
    CONF_TARGET,
    CONF_TORCH_PYTHON,
    DOMAIN,
    DOWNLOAD_HUB,
    DOWNLOAD_NONE,
    FAST,
    MODELS_DIR,
    QUALITY,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
    SUBENTRY_MODEL,
    TITLE,
)
from .download import DownloadError, HubFile, RemoteInfo, download, fetch_info
from .flow_schemas import default_budget_mb, hub_schema, normalized, options_schema, user_schema
from .flow_servers import Servers, ServerSteps
from .installer import InstallSteps, backend_available, torch_problem
from .settings import SETUP_KEYS, default_roles, role_subentries, role_subentry
from .subentry_flows import (
    AITaskSubentryFlow,
    ConversationSubentryFlow,
    ModelRoleSubentryFlow,
    default_ai_task,
    default_conversation,
)
from .validation import check_roles, is_folder_model, machine_ram_mb, no_estimate, summary

_LOGGER = logging.getLogger(__name__)
# The setup form's fields of each default role, and where a role's check errors show on it.
FORM_FIELDS = {(FAST, "model"): CONF_FAST_MODEL, (FAST, "mmproj"): CONF_FAST_MMPROJ,
               (QUALITY, "model"): CONF_QUALITY_MODEL, (QUALITY, "mmproj"): CONF_QUALITY_MMPROJ}  # fmt: skip
SETUP_OPTIONS = (CONF_KV_TYPE, CONF_N_GPU_LAYERS)  # asked at setup, kept (and tuned later) as options


@dataclass(slots=True)
class _Downloads:
    """The files one download step fetches, and how far it got."""

    files: list[tuple[str, HubFile]]
    token: str | None = None
    known: dict[HubFile, RemoteInfo] = field(default_factory=dict)  # asked already (the hub form)
    task: asyncio.Task[None] | None = None
    error: DownloadError | None = None


class SaraiOmniConfigFlow(InstallSteps[ConfigFlowResult], ServerSteps[ConfigFlowResult], ConfigFlow, domain=DOMAIN):
    """Set up Sarai Omni with local GGUF models, downloaded from the hub if needed, or on servers."""

    VERSION = 1
    MINOR_VERSION = 4

    def __init__(self) -> None:
        self._input: dict[str, Any] = {}  # what the user entered, kept across download/install steps
        self._form_step = "user"
        self._downloads: _Downloads | None = None
        self._form_error: DownloadError | None = None
        self._backend_checked = False
        self._servers = Servers()

    # -- the models form (user and reconfigure share it) -----------------------------------------
    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        # One installation per HA; a flow left open in another tab must not block this one (the
        # first to finish wins, the other ends as already_configured).
        await self.async_set_unique_id(DOMAIN, raise_on_progress=False)
        self._abort_if_unique_id_configured()
        if not self._backend_checked:
            self._backend_checked = True
            if not await self.hass.async_add_executor_job(backend_available):
                return await self.async_step_install()
        return await self._models_form("user", user_input, {})

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Change the default roles' models, budget, threads or context; the entry reloads with them."""
        return await self._models_form("reconfigure", user_input, form_values(self._get_reconfigure_entry()))

    async def _models_form(
        self, step_id: str, user_input: dict[str, Any] | None, current: dict[str, Any]
    ) -> ConfigFlowResult:
        self._form_step = step_id
        errors: dict[str, str] = {}
        placeholders = no_estimate(current.get(CONF_RAM_BUDGET_MB) or default_budget_mb())
        if user_input is not None:
            self._input = normalized(user_input)
            servers = current.get(CONF_SERVER, {})
            remote = self._input.pop(CONF_REMOTE_ROLES, [])  # once: popped inside the list, quality was lost
            self._servers.plan([r for r in (FAST, QUALITY) if r in remote], servers)
            choice = self._input.pop(CONF_DOWNLOAD, DOWNLOAD_NONE)
            if choice == DOWNLOAD_HUB:
                return await self.async_step_hub()
            if choice in SEEDS:
                self._downloads = _Downloads(list(SEEDS[choice]))
                return await self.async_step_download()
            if self._servers.todo:
                return await self.async_step_remote()
            errors, placeholders = await self._check(self._input)
            if not errors:
                return await self._finish()
        elif self._form_error is not None:  # back from a failed download: say why, keep the form
            errors, placeholders = {"base": self._form_error.key}, placeholders | self._form_error.placeholders
            self._form_error = None
        elif current:  # reconfigure: show what the configured files are before anything changes
            _, placeholders = await self._check(current, servers=current.get(CONF_SERVER, {}))
        return self._show_models_form(errors, placeholders, self._input or current)

    def _show_models_form(
        self, errors: dict[str, str], placeholders: dict[str, str], values: dict[str, Any]
    ) -> ConfigFlowResult:
        remote = values.get(CONF_SERVER) or self._servers.settings
        values = {k: v for k, v in values.items() if k != CONF_SERVER}
        values[CONF_REMOTE_ROLES] = [r for r in (FAST, QUALITY) if r in remote]
        return self.async_show_form(
            step_id=self._form_step,
            data_schema=self.add_suggested_values_to_schema(user_schema(), values),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _roles(self, form: dict[str, Any], servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The default roles the form describes (a model field naming a folder runs on transformers)."""
        folders = {
            role
            for role, key in ((FAST, CONF_FAST_MODEL), (QUALITY, CONF_QUALITY_MODEL))
            if form.get(key) and await self.hass.async_add_executor_job(is_folder_model, self.hass, form[key])
        }
        return default_roles(form, servers, folders)

    async def _check(
        self, form: dict[str, Any], servers: dict[str, dict[str, Any]] | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Validate a submitted form (files in the executor). Returns (errors, description placeholders)."""
        servers = self._servers.settings if servers is None else servers
        if not form.get(CONF_FAST_MODEL) and FAST not in servers:
            return {CONF_FAST_MODEL: "fast_model_required"}, no_estimate()
        if form.get(CONF_QUALITY_MMPROJ) and not form.get(CONF_QUALITY_MODEL) and QUALITY not in servers:
            return {CONF_QUALITY_MODEL: "projector_without_model"}, no_estimate()
        roles = await self._roles(form, servers)
        local = any(r[CONF_BACKEND] != BACKEND_REMOTE for r in roles)
        if local and not await self.hass.async_add_executor_job(backend_available):
            return {"base": "llama_cpp_missing"}, no_estimate()
        checked = await self.hass.async_add_executor_job(check_roles, self.hass, roles)
        if checked.errors:
            errors = {FORM_FIELDS[key]: error for key, error in checked.errors.items()}
            return errors, no_estimate(form.get(CONF_RAM_BUDGET_MB)) | {"found": checked.found}
        options = {k: form[k] for k in SETUP_OPTIONS if k in form}
        budget = int(form[CONF_RAM_BUDGET_MB])
        return await self.hass.async_add_executor_job(summary, self.hass, roles, checked, budget, options)

    async def _servers_settled(self) -> ConfigFlowResult:
        errors, placeholders = await self._check(self._input)
        if not errors:
            return await self._finish()
        return self._show_models_form(errors, placeholders, self._input)

    async def _finish(self) -> ConfigFlowResult:
        form = self._input
        roles = await self._roles(form, self._servers.settings)
        data = {k: form[k] for k in SETUP_KEYS if k in form}
        setup_options = {k: form[k] for k in SETUP_OPTIONS if k in form}
        if self._form_step == "user":
            self._abort_if_unique_id_configured()  # another flow finished first
            subentries = [role_subentry(r) for r in roles] + [default_conversation(), default_ai_task()]
            return self.async_create_entry(title=TITLE, data=data, options=setup_options, subentries=subentries)
        entry = self._get_reconfigure_entry()
        self._replace_default_roles(entry, roles)
        # The update listener reloads (core's way when an integration has one: no second reload).
        return self.async_update_and_abort(entry, data=data, options={**entry.options, **setup_options})

    def _replace_default_roles(self, entry: ConfigEntry, roles: list[dict[str, Any]]) -> None:
        """The form's fast and quality roles replace the entry's (other roles stay as they are)."""
        manager, wanted = self.hass.config_entries, {str(r[CONF_ROLE]): r for r in roles}
        existing = {str(s.data[CONF_ROLE]): s for s in role_subentries(entry)}
        for name in (FAST, QUALITY):
            if (old := existing.get(name)) is not None and name not in wanted:
                manager.async_remove_subentry(entry, old.subentry_id)
            elif old is not None:  # the form owns the model and context; the role keeps its tuning
                kept = {k: v for k, v in old.data.items() if k not in (*FORM_OWNED, CONF_N_CTX)}
                manager.async_update_subentry(entry, old, data={**wanted[name], **kept})
            elif name in wanted:
                manager.async_add_subentry(entry, _subentry_of(role_subentry(wanted[name])))

    # -- downloads from the hub ------------------------------------------------------------------
    async def async_step_hub(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Any GGUF from a Hugging Face repository, for one of the four model fields."""
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None:
            data = normalized(user_input)
            file = HubFile(data[CONF_REPO_ID], data[CONF_FILENAME], data.get(CONF_REVISION) or "main")
            try:
                info = await fetch_info(async_get_clientsession(self.hass), file, token=data.get("token"))
            except DownloadError as err:
                errors, placeholders = {"base": err.key}, err.placeholders
            else:
                self._downloads = _Downloads([(data[CONF_TARGET], file)], data.get("token"), {file: info})
                return await self.async_step_download()
        values = {k: v for k, v in (user_input or {}).items() if k != "token"}
        return self.async_show_form(
            step_id="hub",
            data_schema=self.add_suggested_values_to_schema(hub_schema(), values),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_download(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Download the chosen files into <config>/models with a progress bar."""
        job = self._downloads
        assert job is not None
        if job.task is None:
            job.task = self.hass.async_create_task(self._download_all(job), f"{DOMAIN} download")
        if not job.task.done():
            files = ", ".join(f.filename for _, f in job.files)
            return self.async_show_progress(
                step_id="download",
                progress_action="download",
                progress_task=job.task,
                description_placeholders={"files": files, "folder": MODELS_DIR},
            )
        self._downloads = None
        if job.error is not None:
            self._form_error = job.error
            return self.async_show_progress_done(next_step_id=self._form_step)
        return self.async_show_progress_done(next_step_id="downloaded")

    async def _download_all(self, job: _Downloads) -> None:
        """Fetch sizes first (a missing file fails before gigabytes are spent), then each file."""
        session = async_get_clientsession(self.hass)
        models = Path(self.hass.config.path(MODELS_DIR))
        try:
            infos: list[RemoteInfo] = [
                job.known.get(f) or await fetch_info(session, f, token=job.token) for _, f in job.files
            ]
            total, done_before = max(sum(i.size for i in infos), 1), 0
            for (key, file), info in zip(job.files, infos, strict=True):

                def progress(done: int, _size: int, base: int = done_before) -> None:
                    self.async_update_progress(min((base + done) / total, 1.0))

                dest = models / file.local_name
                await download(session, file, dest, progress=progress, token=job.token, info=info)
                self._input[key] = f"{MODELS_DIR}/{file.local_name}"
                done_before += info.size
        except DownloadError as err:
            _LOGGER.warning("Model download failed: %s", err)
            job.error = err
        except OSError as err:  # the models folder cannot be written: full, read-only, not a folder
            _LOGGER.warning("Model download failed: %s", err)
            job.error = DownloadError("download_failed", error=str(err))

    async def async_step_downloaded(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The files are here: finish at once when the form is complete, else show it filled in."""
        if self._servers.todo:
            return await self.async_step_remote()
        errors, placeholders = await self._check(self._input)
        if not errors:
            return await self._finish()
        if set(errors) == {CONF_FAST_MODEL} and errors[CONF_FAST_MODEL] == "fast_model_required":
            errors = {}  # only a quality model was downloaded: the user still picks the fast one
        elif self._budget_follows_models(errors, placeholders):
            errors = {"base": "budget_raised"}  # the form shows the new budget, to confirm or lower
        return self._show_models_form(errors, placeholders, self._input)

    def _budget_follows_models(self, errors: dict[str, str], placeholders: dict[str, str]) -> bool:
        """The downloaded models need more than the default budget the user left untouched: propose
        what they need (rounded up to 256 MB) when the machine has it. Nothing is saved until the
        user submits the form again."""
        if errors != {CONF_RAM_BUDGET_MB: "does_not_fit_budget"}:
            return False
        if int(self._input[CONF_RAM_BUDGET_MB]) != default_budget_mb():
            return False  # a budget the user chose is theirs to change
        proposed = -(-int(placeholders["needed_mb"]) // 256) * 256
        if proposed > machine_ram_mb():
            return False  # the machine cannot hold them: the budget error stands
        placeholders.update(old_budget_mb=str(self._input[CONF_RAM_BUDGET_MB]), budget_mb=str(proposed))
        self._input[CONF_RAM_BUDGET_MB] = proposed
        return True

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        return SaraiOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(cls, config_entry: ConfigEntry) -> dict[str, type[ConfigSubentryFlow]]:
        return {
            SUBENTRY_CONVERSATION: ConversationSubentryFlow,
            SUBENTRY_AI_TASK: AITaskSubentryFlow,
            SUBENTRY_MODEL: ModelRoleSubentryFlow,
        }


FORM_OWNED = (CONF_BACKEND, CONF_MODEL_PATH, CONF_MMPROJ_PATH, CONF_SERVER)  # a role's model source


def form_values(entry: ConfigEntry) -> dict[str, Any]:
    """The setup form's fields as the entry holds them today (its fast and quality roles)."""
    values: dict[str, Any] = {**entry.data, **{k: entry.options[k] for k in SETUP_OPTIONS if k in entry.options}}
    servers: dict[str, dict[str, Any]] = {}
    for sub in role_subentries(entry):
        role = dict(sub.data)
        name = str(role[CONF_ROLE])
        if name not in (FAST, QUALITY):
            continue
        if CONF_SERVER in role:
            servers[name] = role[CONF_SERVER]
        else:
            values[FORM_FIELDS[(name, "model")]] = role.get(CONF_MODEL_PATH)
            if role.get(CONF_MMPROJ_PATH):
                values[FORM_FIELDS[(name, "mmproj")]] = role[CONF_MMPROJ_PATH]
        if name == FAST:
            values[CONF_N_CTX] = role.get(CONF_N_CTX)
    values[CONF_SERVER] = servers
    return {k: v for k, v in values.items() if v is not None}


def _subentry_of(made: ConfigSubentryData) -> ConfigSubentry:
    return ConfigSubentry(
        data=MappingProxyType(made["data"]),
        subentry_type=made["subentry_type"],
        title=made["title"],
        unique_id=made["unique_id"],
    )


class SaraiOptionsFlow(OptionsFlow):
    """Tuning that needs no new files: KV cache type, GPU layers, idle unload, timeout, router, torch."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        entry = self.config_entry
        torch = any(s.data.get(CONF_BACKEND) == BACKEND_TRANSFORMERS for s in role_subentries(entry))
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            python = str(user_input.get(CONF_TORCH_PYTHON, "")).strip()
            if torch and (problem := await torch_problem(python)):
                errors[CONF_TORCH_PYTHON], placeholders["error"] = "torch_not_importable", problem
            else:
                return self.async_create_entry(data=user_input)  # the update listener reloads the engine
        current = {**entry.options, **(user_input or {})}
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(options_schema(torch=torch), current),
            errors=errors,
            description_placeholders=placeholders,
        )
