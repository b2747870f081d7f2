"""Config flow: model files (or downloads), RAM budget, threads and context; options; subentries."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
from homeassistant.core import callback
from homeassistant.helpers import llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import probatio

from .catalog import SEEDS
from .const import (
    BACKEND_LLAMA_CPP,
    CONF_API_KEY,
    CONF_AUDIO,
    CONF_BACKEND,
    CONF_DOWNLOAD,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_FAST_N_BATCH,
    CONF_FILENAME,
    CONF_IDLE_UNLOAD_S,
    CONF_KV_TYPE,
    CONF_MAX_TOKENS,
    CONF_MODEL_PREFERENCE,
    CONF_N_CTX,
    CONF_N_GPU_LAYERS,
    CONF_N_THREADS,
    CONF_PROMPT,
    CONF_PROMPT_LOOKUP,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_QUALITY_N_BATCH,
    CONF_RAM_BUDGET_MB,
    CONF_REMOTE,
    CONF_REMOTE_MODEL,
    CONF_REMOTE_ROLES,
    CONF_REPO_ID,
    CONF_REQUEST_TIMEOUT_S,
    CONF_REVISION,
    CONF_ROLE_BACKENDS,
    CONF_ROUTER_SHORT_CHARS,
    CONF_ROUTER_SOFT_THRESHOLD,
    CONF_TARGET,
    CONF_TEMPERATURE,
    CONF_TORCH_DEVICE,
    CONF_TORCH_DTYPE,
    CONF_TORCH_PYTHON,
    CONF_TORCH_QUANTIZATION,
    CONF_URL,
    CONF_VISION,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_IDLE_UNLOAD_S,
    DEFAULT_KV_TYPE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_N_BATCH,
    DEFAULT_N_CTX,
    DEFAULT_RAM_BUDGET_MB,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_ROUTER_SHORT_CHARS,
    DEFAULT_ROUTER_SOFT_THRESHOLD,
    DEFAULT_TASK_MAX_TOKENS,
    DEFAULT_TASK_TEMPERATURE,
    DEFAULT_TEMPERATURE,
    DOMAIN,
    DOWNLOAD_HUB,
    DOWNLOAD_NONE,
    KV_TYPES,
    MODEL_PREFERENCES,
    MODELS_DIR,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
    TITLE,
)
from .download import DownloadError, HubFile, RemoteInfo, download, fetch_info
from .engine import FAST, QUALITY, RemoteAuthFailed, RemoteError, defaults
from .engine.procmem import physical_cores
from .engine.remote import list_models, probe_modalities
from .installer import InstallSteps, backend_available, torch_problem
from .validation import MODEL_KEYS, machine_ram_mb, no_estimate, transformers_roles, validate_models

_LOGGER = logging.getLogger(__name__)
_SETUP_KEYS = (CONF_RAM_BUDGET_MB, CONF_N_THREADS, CONF_N_CTX, CONF_KV_TYPE, CONF_N_GPU_LAYERS)


def default_budget_mb() -> int:
    """The seed's 7.5 GB, capped by the machine's RAM (never more than the box has)."""
    ram = machine_ram_mb()
    return min(DEFAULT_RAM_BUDGET_MB, ram) if ram else DEFAULT_RAM_BUDGET_MB


def _int(minimum: int, maximum: int, step: int = 1, unit: str | None = None) -> NumberSelector:
    config = NumberSelectorConfig(min=minimum, max=maximum, step=step, mode=NumberSelectorMode.BOX)
    if unit:
        config["unit_of_measurement"] = unit
    return NumberSelector(config)


def _select(options: list[str], key: str) -> SelectSelector:
    return SelectSelector(SelectSelectorConfig(options=options, mode=SelectSelectorMode.DROPDOWN, translation_key=key))


def kv_type_selector() -> SelectSelector:
    return _select(list(KV_TYPES), CONF_KV_TYPE)


def user_schema() -> probatio.Schema:
    """Model files (or a download), budget, threads, context, KV type, GPU layers."""
    return probatio.Schema(
        {
            probatio.Optional(CONF_DOWNLOAD, default=DOWNLOAD_NONE): _select(
                [DOWNLOAD_NONE, *SEEDS, DOWNLOAD_HUB], CONF_DOWNLOAD
            ),
            # Required unless a download fills it: checked in the flow, so a download needs no path.
            probatio.Optional(CONF_FAST_MODEL): TextSelector(),
            probatio.Optional(CONF_FAST_MMPROJ): TextSelector(),
            probatio.Optional(CONF_QUALITY_MODEL): TextSelector(),
            probatio.Optional(CONF_QUALITY_MMPROJ): TextSelector(),
            probatio.Optional(CONF_REMOTE_ROLES, default=[]): SelectSelector(
                SelectSelectorConfig(
                    options=[FAST, QUALITY],
                    multiple=True,
                    mode=SelectSelectorMode.LIST,
                    translation_key=CONF_REMOTE_ROLES,
                )
            ),
            probatio.Required(CONF_RAM_BUDGET_MB, default=default_budget_mb()): _int(256, 1 << 20, 64, "MB"),
            probatio.Required(CONF_N_THREADS, default=physical_cores()): _int(1, 256),
            probatio.Required(CONF_N_CTX, default=DEFAULT_N_CTX): _int(256, 262144, 256),
            probatio.Required(CONF_KV_TYPE, default=DEFAULT_KV_TYPE): kv_type_selector(),
            probatio.Required(CONF_N_GPU_LAYERS, default=0): _int(0, 999),
        }
    )


def hub_schema() -> probatio.Schema:
    return probatio.Schema(
        {
            probatio.Required(CONF_REPO_ID): TextSelector(),
            probatio.Required(CONF_FILENAME): TextSelector(),
            probatio.Required(CONF_REVISION, default="main"): TextSelector(),
            probatio.Required(CONF_TARGET, default=CONF_FAST_MODEL): _select([k for k, _ in MODEL_KEYS], CONF_TARGET),
            probatio.Optional("token"): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
        }
    )


def remote_schema() -> probatio.Schema:
    return probatio.Schema(
        {
            probatio.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
            probatio.Optional(CONF_API_KEY): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
        }
    )


def remote_model_schema(models: list[str]) -> probatio.Schema:
    return probatio.Schema(
        {
            probatio.Required(CONF_REMOTE_MODEL): SelectSelector(
                SelectSelectorConfig(options=models, custom_value=True, mode=SelectSelectorMode.DROPDOWN)
            ),
            probatio.Required(CONF_VISION, default=False): BooleanSelector(),
            probatio.Required(CONF_AUDIO, default=False): BooleanSelector(),
        }
    )


def valid_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _normalized(data: dict[str, Any]) -> dict[str, Any]:
    """Trimmed strings, integer numbers, empty fields dropped."""
    out = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
    for key in (CONF_RAM_BUDGET_MB, CONF_N_THREADS, CONF_N_CTX, CONF_N_GPU_LAYERS):
        if key in out:
            out[key] = int(out[key])
    return {k: v for k, v in out.items() if v not in ("", None)}


@dataclass(slots=True)
class _Servers:
    """The roles the form sends to a server: what is settled, what is still to ask."""

    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> url, api_key, model, ...
    todo: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # what the server being asked about lists
    pending: dict[str, Any] = field(default_factory=dict)  # its url and key, until a model is chosen


@dataclass(slots=True)
class _Downloads:
    """The files one download step fetches, and how far it got."""

    files: list[tuple[str, HubFile]]
    token: str | None = None
    known: dict[HubFile, RemoteInfo] = field(default_factory=dict)  # asked already (the hub form)
    task: asyncio.Task[None] | None = None
    error: DownloadError | None = None


class SaraiOmniConfigFlow(InstallSteps[ConfigFlowResult], ConfigFlow, domain=DOMAIN):
    """Set up Sarai Omni with local GGUF models, downloaded from the hub if needed."""

    VERSION = 1
    MINOR_VERSION = 3

    def __init__(self) -> None:
        self._input: dict[str, Any] = {}  # what the user entered, kept across download/install steps
        self._form_step = "user"
        self._downloads: _Downloads | None = None
        self._form_error: DownloadError | None = None
        self._backend_checked = False
        self._servers = _Servers()

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
        """Change model files, budget, threads or context; the entry reloads with them."""
        return await self._models_form("reconfigure", user_input, dict(self._get_reconfigure_entry().data))

    async def _models_form(
        self, step_id: str, user_input: dict[str, Any] | None, current: dict[str, Any]
    ) -> ConfigFlowResult:
        self._form_step = step_id
        errors: dict[str, str] = {}
        placeholders = no_estimate(current.get(CONF_RAM_BUDGET_MB) or default_budget_mb())
        if user_input is not None:
            self._input = _normalized(user_input)
            self._plan_servers(self._input.pop(CONF_REMOTE_ROLES, []), current)
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
                self._input.pop(CONF_ROLE_BACKENDS, None)  # decided again from what the paths are now
                if backends := await self.hass.async_add_executor_job(transformers_roles, self.hass, self._input):
                    self._input[CONF_ROLE_BACKENDS] = backends
                return self._finish(self._input)
        elif self._form_error is not None:  # back from a failed download: say why, keep the form
            errors, placeholders = {"base": self._form_error.key}, placeholders | self._form_error.placeholders
            self._form_error = None
        elif current:  # reconfigure: show what the configured files are before anything changes
            _, placeholders = await self.hass.async_add_executor_job(validate_models, self.hass, current)
        return self._show_models_form(errors, placeholders, self._input or current)

    def _plan_servers(self, roles: list[str], current: dict[str, Any]) -> None:
        """Ask for each role sent to a server; a reconfigure keeps what was set, as suggestions."""
        settled = {r: v for r, v in self._servers.settings.items() if r in roles}  # asked in this flow
        known = {**(current.get(CONF_REMOTE) or {}), **settled}
        self._servers = _Servers(settled, todo=[r for r in (FAST, QUALITY) if r in roles and r not in settled])
        self._servers.pending = {r: dict(known[r]) for r in roles if r in known}  # suggestions for the steps

    def _show_models_form(
        self, errors: dict[str, str], placeholders: dict[str, str], values: dict[str, Any]
    ) -> ConfigFlowResult:
        remote = values.get(CONF_REMOTE) or self._servers.settings
        values = {**values, CONF_REMOTE_ROLES: [r for r in (FAST, QUALITY) if r in remote]}
        return self.async_show_form(
            step_id=self._form_step,
            data_schema=self.add_suggested_values_to_schema(user_schema(), values),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _check(self, data: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """Validate a submitted form (in the executor). Returns (errors, description placeholders)."""
        remote = self._servers.settings
        if not data.get(CONF_FAST_MODEL) and FAST not in remote:
            return {CONF_FAST_MODEL: "fast_model_required"}, no_estimate()
        local = FAST not in remote or (data.get(CONF_QUALITY_MODEL) and QUALITY not in remote)
        if local and not await self.hass.async_add_executor_job(backend_available):
            return {"base": "llama_cpp_missing"}, no_estimate()
        return await self.hass.async_add_executor_job(validate_models, self.hass, data, remote)

    # -- roles on an OpenAI-compatible server ------------------------------------------------------
    async def async_step_remote(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The server of the next remote role: its URL (and API key); its models are listed."""
        servers, errors = self._servers, {}
        role = servers.todo[0]
        if user_input is not None:
            data = _normalized(user_input)
            url = str(data[CONF_URL]).rstrip("/")
            if not valid_url(url):
                errors[CONF_URL] = "invalid_url"
            else:
                try:
                    servers.models = await list_models(async_get_clientsession(self.hass), url, data.get(CONF_API_KEY))
                except RemoteAuthFailed:
                    errors = {"base": "invalid_auth"}
                except RemoteError as err:
                    _LOGGER.debug("Server check failed: %s", err)
                    errors = {"base": "cannot_connect"}
                else:
                    servers.pending[role] = {**servers.pending.get(role, {}), **data, CONF_URL: url}
                    return await self.async_step_remote_model()
        values = user_input or servers.pending.get(role) or next(iter(servers.settings.values()), {})
        return self.async_show_form(
            step_id="remote",
            data_schema=self.add_suggested_values_to_schema(remote_schema(), values),
            errors=errors,
            description_placeholders={"role": role},
        )

    async def async_step_remote_model(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Which of the server's models plays the role, and whether it takes images or audio."""
        servers, errors = self._servers, {}
        role = servers.todo[0]
        server = servers.pending[role]
        if user_input is not None:
            if user_input[CONF_REMOTE_MODEL] not in servers.models:
                errors[CONF_REMOTE_MODEL] = "model_not_found"
            else:
                servers.settings[role] = {
                    CONF_URL: server[CONF_URL],
                    CONF_API_KEY: server.get(CONF_API_KEY, ""),
                    **{k: user_input[k] for k in (CONF_REMOTE_MODEL, CONF_VISION, CONF_AUDIO)},
                }
                servers.todo.pop(0)
                if servers.todo:
                    return await self.async_step_remote()
                errors, placeholders = await self._check(self._input)
                if not errors:
                    return self._finish(self._input)
                return self._show_models_form(errors, placeholders, self._input)
        values = user_input or {
            CONF_REMOTE_MODEL: server.get(CONF_REMOTE_MODEL) or (servers.models[0] if servers.models else ""),
            **await self._modalities(server),
        }
        return self.async_show_form(
            step_id="remote_model",
            data_schema=self.add_suggested_values_to_schema(remote_model_schema(servers.models), values),
            errors=errors,
            description_placeholders={"role": role, "server": server[CONF_URL], "models": ", ".join(servers.models)},
        )

    async def _modalities(self, server: dict[str, Any]) -> dict[str, bool]:
        """What was set before, else what the server says of its model (llama-server's /props)."""
        if CONF_VISION in server:
            return {CONF_VISION: bool(server[CONF_VISION]), CONF_AUDIO: bool(server.get(CONF_AUDIO))}
        probed = await probe_modalities(async_get_clientsession(self.hass), server[CONF_URL], server.get(CONF_API_KEY))
        return {CONF_VISION: probed.get("vision", False), CONF_AUDIO: probed.get("audio", False)}

    def _finish(self, data: dict[str, Any]) -> ConfigFlowResult:
        data = {CONF_BACKEND: BACKEND_LLAMA_CPP, **data}
        if self._servers.settings:
            data[CONF_REMOTE] = dict(self._servers.settings)
        if self._form_step == "user":
            self._abort_if_unique_id_configured()  # another flow finished first
            return self.async_create_entry(
                title=TITLE, data=data, subentries=[default_conversation(), default_ai_task()]
            )
        entry = self._get_reconfigure_entry()
        # Setup keys given here win over older option overrides of the same keys.
        options = {k: v for k, v in entry.options.items() if k not in _SETUP_KEYS}
        # The update listener reloads (core's way when an integration has one: no second reload).
        return self.async_update_and_abort(entry, data=data, options=options)

    # -- downloads from the hub ------------------------------------------------------------------
    async def async_step_hub(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Any GGUF from a Hugging Face repository, for one of the four model fields."""
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None:
            data = _normalized(user_input)
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
            return self._finish(self._input)
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
        return {SUBENTRY_CONVERSATION: ConversationSubentryFlow, SUBENTRY_AI_TASK: AITaskSubentryFlow}


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
        CONF_MODEL_PREFERENCE: "auto",
        CONF_MAX_TOKENS: DEFAULT_TASK_MAX_TOKENS,
        CONF_TEMPERATURE: DEFAULT_TASK_TEMPERATURE,
    }


def conversation_defaults() -> dict[str, Any]:
    """Like core's agents: the Assist API on, so a new agent can control the home out of the box."""
    return {
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_MODEL_PREFERENCE: "auto",
        CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
        CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    }


def torch_fields() -> dict[Any, Any]:
    """The transformers roles' options: the torch venv's Python (checked: it must import torch)."""
    return {
        probatio.Required(CONF_TORCH_PYTHON, default=""): TextSelector(),
        probatio.Required(CONF_TORCH_DTYPE, default=defaults.TORCH_DTYPE): _select(
            list(defaults.TORCH_DTYPES), CONF_TORCH_DTYPE
        ),
        probatio.Required(CONF_TORCH_DEVICE, default=defaults.TORCH_DEVICE): _select(
            list(defaults.TORCH_DEVICES), CONF_TORCH_DEVICE
        ),
        probatio.Required(CONF_TORCH_QUANTIZATION, default=defaults.TORCH_QUANTIZATION): _select(
            list(defaults.TORCH_QUANTIZATIONS), CONF_TORCH_QUANTIZATION
        ),
    }


def options_schema(*, torch: bool = False) -> probatio.Schema:
    """Tuning; with a transformers role, also how torch runs it."""
    return probatio.Schema(
        {
            **(torch_fields() if torch else {}),
            probatio.Required(CONF_KV_TYPE, default=DEFAULT_KV_TYPE): kv_type_selector(),
            probatio.Required(CONF_N_GPU_LAYERS, default=0): _int(0, 999),
            probatio.Required(CONF_FAST_N_BATCH, default=DEFAULT_N_BATCH): _int(32, 4096, 32),
            probatio.Required(CONF_QUALITY_N_BATCH, default=DEFAULT_N_BATCH): _int(32, 4096, 32),
            probatio.Required(CONF_PROMPT_LOOKUP, default=True): BooleanSelector(),
            probatio.Required(CONF_IDLE_UNLOAD_S, default=DEFAULT_IDLE_UNLOAD_S): _int(0, 86400, 10, "s"),
            probatio.Required(CONF_REQUEST_TIMEOUT_S, default=DEFAULT_REQUEST_TIMEOUT_S): _int(10, 3600, 10, "s"),
            probatio.Required(CONF_ROUTER_SHORT_CHARS, default=DEFAULT_ROUTER_SHORT_CHARS): _int(10, 4000),
            probatio.Required(CONF_ROUTER_SOFT_THRESHOLD, default=DEFAULT_ROUTER_SOFT_THRESHOLD): NumberSelector(
                NumberSelectorConfig(min=0, max=1, step=0.05, mode=NumberSelectorMode.SLIDER)
            ),
        }
    )


class SaraiOptionsFlow(OptionsFlow):
    """Tuning that needs no new files: KV cache type, GPU layers, idle unload, timeout, router."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        torch = bool(self.config_entry.data.get(CONF_ROLE_BACKENDS))
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            python = str(user_input.get(CONF_TORCH_PYTHON, "")).strip()
            if torch and (problem := await torch_problem(python)):
                errors[CONF_TORCH_PYTHON], placeholders["error"] = "torch_not_importable", problem
            else:
                return self.async_create_entry(data=user_input)  # the update listener reloads the engine
        # Setup data first: KV type and GPU layers may have been chosen there.
        current = {**self.config_entry.data, **self.config_entry.options, **(user_input or {})}
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(options_schema(torch=torch), current),
            errors=errors,
            description_placeholders=placeholders,
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
        return {
            probatio.Required(CONF_MODEL_PREFERENCE, default="auto"): SelectSelector(
                SelectSelectorConfig(
                    options=list(MODEL_PREFERENCES),
                    mode=SelectSelectorMode.DROPDOWN,
                    translation_key=CONF_MODEL_PREFERENCE,
                )
            ),
            probatio.Required(CONF_MAX_TOKENS, default=defaults[CONF_MAX_TOKENS]): _int(1, 8192),
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
