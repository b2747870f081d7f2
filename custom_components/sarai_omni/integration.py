"""Home Assistant entry points: set up the engine for a config entry, forward the platforms."""

from __future__ import annotations

from dataclasses import replace
import logging
import os
from pathlib import Path
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_LLM_HASS_API, EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryError
from homeassistant.helpers import config_validation as cv, issue_registry as ir, llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.typing import ConfigType

from .const import (
    BACKEND_LLAMA_CPP,
    BACKEND_TRANSFORMERS,
    CONF_API_KEY,
    CONF_AUDIO,
    CONF_BACKEND,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_FAST_N_BATCH,
    CONF_IDLE_UNLOAD_S,
    CONF_KV_TYPE,
    CONF_N_CTX,
    CONF_N_GPU_LAYERS,
    CONF_N_THREADS,
    CONF_PROMPT_LOOKUP,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_QUALITY_N_BATCH,
    CONF_RAM_BUDGET_MB,
    CONF_REMOTE,
    CONF_REMOTE_MODEL,
    CONF_REQUEST_TIMEOUT_S,
    CONF_ROLE_BACKENDS,
    CONF_ROUTER_SHORT_CHARS,
    CONF_ROUTER_SOFT_THRESHOLD,
    CONF_TORCH_DEVICE,
    CONF_TORCH_DTYPE,
    CONF_TORCH_PYTHON,
    CONF_TORCH_QUANTIZATION,
    CONF_URL,
    CONF_VISION,
    DEFAULT_IDLE_UNLOAD_S,
    DEFAULT_KV_TYPE,
    DEFAULT_N_BATCH,
    DEFAULT_N_CTX,
    DEFAULT_RAM_BUDGET_MB,
    DEFAULT_REQUEST_TIMEOUT_S,
    DOMAIN,
    ISSUE_BACKEND_MISSING,
    ISSUE_BACKEND_UNUSABLE,
    ISSUE_BUDGET,
    ISSUE_CRASH_LOOP,
    ISSUE_MODEL_MISSING,
    ISSUE_REMOTE_DOWN,
    ISSUE_TORCH_MISSING,
    QUALITY_N_CTX,
    REMOTE_DOWN_AFTER,
    SIGNAL_ENGINE_UPDATED,
)
from .engine import FAST, QUALITY, Engine, EngineConfig, EngineError, ModelNotFound, ModelSpec, RouterConfig, defaults
from .engine.backend import RemoteModel, TransformersModel
from .engine.procmem import physical_cores
from .installer import backend_available, torch_problem
from .llm import LEGACY_CAMERA_API_ID
from .models import SaraiConfigEntry, SaraiRuntimeData
from .services import async_setup_services
from .validation import resolve_path

_LOGGER = logging.getLogger(__name__)

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)
PLATFORMS = (Platform.AI_TASK, Platform.CONVERSATION, Platform.SENSOR, Platform.STT, Platform.TTS)
CRASH_LOOP_COUNT, CRASH_LOOP_WINDOW_S = 3, 600


def engine_config(hass: HomeAssistant, entry: ConfigEntry) -> EngineConfig:
    """Build the engine's configuration from the entry's data and options."""
    conf = {**entry.data, **entry.options}
    threads = min(int(conf.get(CONF_N_THREADS) or physical_cores()), os.cpu_count() or 1)
    if threads < int(conf.get(CONF_N_THREADS) or 0):  # more threads than CPUs only queue behind each other
        _LOGGER.warning("Using %d threads, the CPUs this machine has, instead of %s", threads, conf[CONF_N_THREADS])
    kv_type = str(conf.get(CONF_KV_TYPE, DEFAULT_KV_TYPE))
    n_ctx = int(conf.get(CONF_N_CTX, DEFAULT_N_CTX))
    gpu_layers = int(conf.get(CONF_N_GPU_LAYERS, 0))

    def path(key: str) -> str | None:
        return resolve_path(hass, conf[key]) if conf.get(key) else None

    state_dir = hass.config.path(DOMAIN)  # calibrations and KV-cache snapshots live under the config dir
    kv_dir = str(Path(state_dir) / "kv_cache")
    remote = conf.get(CONF_REMOTE) or {}
    torch_roles = conf.get(CONF_ROLE_BACKENDS) or {}

    def spec(role: str, model_key: str, mmproj_key: str, batch_key: str, ctx: int) -> ModelSpec | None:
        local = ModelSpec(
            role, "", n_ctx=ctx, n_threads=threads, kv_type=kv_type, pinned=role == FAST, kv_cache_dir=kv_dir,
            n_gpu_layers=gpu_layers, n_batch=int(conf.get(batch_key, DEFAULT_N_BATCH)),
            prompt_lookup=bool(conf.get(CONF_PROMPT_LOOKUP, True)),
        )  # fmt: skip
        if server := remote.get(role):
            return replace(local, remote=remote_model(server))
        model = path(model_key)
        if model is None and role != FAST:  # the fast model is required: a missing one is reported at setup
            return None
        if torch_roles.get(role) == BACKEND_TRANSFORMERS:  # a model folder: its encoders are its own
            return replace(local, path=model or "", transformers=torch_runtime(conf), kv_cache_dir=None)
        return replace(local, path=model or "", mmproj=path(mmproj_key))

    specs = [
        s
        for s in (
            spec(FAST, CONF_FAST_MODEL, CONF_FAST_MMPROJ, CONF_FAST_N_BATCH, n_ctx),
            spec(QUALITY, CONF_QUALITY_MODEL, CONF_QUALITY_MMPROJ, CONF_QUALITY_N_BATCH, max(n_ctx, QUALITY_N_CTX)),
        )
        if s is not None
    ]
    return EngineConfig(
        models=tuple(specs),
        ram_budget_mb=int(conf.get(CONF_RAM_BUDGET_MB, DEFAULT_RAM_BUDGET_MB)),
        idle_unload_s=float(conf.get(CONF_IDLE_UNLOAD_S, DEFAULT_IDLE_UNLOAD_S)),
        request_timeout_s=float(conf.get(CONF_REQUEST_TIMEOUT_S, DEFAULT_REQUEST_TIMEOUT_S)),
        state_dir=state_dir,
        http_session=async_get_clientsession(hass) if remote else None,
        router=RouterConfig(
            short_chars=int(conf.get(CONF_ROUTER_SHORT_CHARS, defaults.ROUTER_SHORT_CHARS)),
            soft_threshold=float(conf.get(CONF_ROUTER_SOFT_THRESHOLD, defaults.ROUTER_SOFT_THRESHOLD)),
        ),
    )


def torch_runtime(conf: dict[str, Any]) -> TransformersModel:
    """How transformers roles run: the torch venv's Python (none set: the load says what is missing)."""
    return TransformersModel(
        python=str(conf.get(CONF_TORCH_PYTHON) or ""),
        dtype=str(conf.get(CONF_TORCH_DTYPE, defaults.TORCH_DTYPE)),
        device=str(conf.get(CONF_TORCH_DEVICE, defaults.TORCH_DEVICE)),
        quantization=str(conf.get(CONF_TORCH_QUANTIZATION, defaults.TORCH_QUANTIZATION)),
    )


def remote_model(server: dict[str, Any]) -> RemoteModel:
    """A role's stored server settings as the engine's RemoteModel."""
    return RemoteModel(
        base_url=str(server[CONF_URL]),
        model=str(server[CONF_REMOTE_MODEL]),
        api_key=server.get(CONF_API_KEY) or None,
        vision=bool(server.get(CONF_VISION)),
        audio=bool(server.get(CONF_AUDIO)),
    )


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's services (they find the loaded entry when called). The cameras
    tool comes through HA's `llm` tool platform (llm.py)."""
    async_setup_services(hass)
    return True


def _issue(hass: HomeAssistant, issue_id: str, data: dict[str, Any] | None = None, **placeholders: str) -> None:
    """Raise a repair issue (its translation says what to do); each is deleted once fixed.

    Issues with a fix flow in repairs.py are fixable; `data` is what that flow needs.
    """
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        data=data,
        is_fixable=issue_id in (ISSUE_BACKEND_MISSING, ISSUE_BUDGET),
        severity=ir.IssueSeverity.ERROR,
        translation_key=issue_id,
        translation_placeholders=placeholders or None,
    )


async def async_setup_entry(hass: HomeAssistant, entry: SaraiConfigEntry) -> bool:
    """Start the engine: read model headers, then preload the fast model in the background."""
    if (backend := entry.data.get(CONF_BACKEND, BACKEND_LLAMA_CPP)) != BACKEND_LLAMA_CPP:
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key="unknown_backend", translation_placeholders={"backend": backend}
        )
    config = engine_config(hass, entry)
    local = any(spec.backend == "llama_cpp" for spec in config.models)  # only GGUF roles need llama.cpp here
    if local and not await hass.async_add_executor_job(backend_available):
        _issue(hass, ISSUE_BACKEND_MISSING)
        raise ConfigEntryError(translation_domain=DOMAIN, translation_key="backend_missing")
    ir.async_delete_issue(hass, DOMAIN, ISSUE_BACKEND_MISSING)
    ir.async_delete_issue(hass, DOMAIN, ISSUE_CRASH_LOOP)  # a (re)load starts with fresh workers

    unavailable: set[str] = set()  # roles whose failure was logged: once when lost, once when back

    @callback
    def changed() -> None:
        async_dispatcher_send(hass, f"{SIGNAL_ENGINE_UPDATED}_{entry.entry_id}")
        if engine.closed:  # unloading: the workers stop on purpose
            return
        statuses = {role: engine.status(role) for role in engine.roles}  # read once per change
        _log_availability(statuses, unavailable)
        _check_model_files(hass, statuses)
        if (crashes := engine.crashes_within(CRASH_LOOP_WINDOW_S)) >= CRASH_LOOP_COUNT:
            _issue(hass, ISSUE_CRASH_LOOP, count=str(crashes), minutes=str(CRASH_LOOP_WINDOW_S // 60))
        _check_backend(hass, engine)
        _check_remote(hass, statuses)

    engine = Engine(config, on_change=changed)
    try:
        await engine.prepare()  # once: the background start below finds it done
    except ModelNotFound as err:
        _issue(hass, ISSUE_MODEL_MISSING, error=str(err))
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key="model_not_found", translation_placeholders={"error": str(err)}
        ) from err
    except EngineError as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key=err.key, translation_placeholders={"error": str(err)}
        ) from err
    ir.async_delete_issue(hass, DOMAIN, ISSUE_MODEL_MISSING)
    _check_budget(hass, entry, engine)
    entry.runtime_data = SaraiRuntimeData(engine, _loaded_from(entry, config))

    async def _stop(_: Event) -> None:
        await engine.close()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _stop))
    entry.async_create_background_task(hass, _preload(engine), f"{DOMAIN} preload")
    if torch := next((s.transformers for s in config.models if s.transformers), None):
        entry.async_create_background_task(hass, _check_torch(hass, torch.python), f"{DOMAIN} torch check")
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    return True


def _check_budget(hass: HomeAssistant, entry: ConfigEntry, engine: Engine) -> None:
    """The budget must at least hold the fast model, or Assist can never answer."""
    if (needed_mb := engine.needed_mb(FAST)) > engine.budget_mb:
        data = {"entry_id": entry.entry_id, "needed_mb": needed_mb}
        _issue(hass, ISSUE_BUDGET, data, needed_mb=str(needed_mb), budget_mb=str(engine.budget_mb))
    else:
        ir.async_delete_issue(hass, DOMAIN, ISSUE_BUDGET)


@callback
def _check_backend(hass: HomeAssistant, engine: Engine) -> None:
    """llama-cpp-python installed but unusable (bad CPU instructions, broken native library)."""
    if (problem := engine.backend_problem()) is not None:
        _issue(hass, ISSUE_BACKEND_UNUSABLE, error=problem)
    elif engine.any_loaded():  # it ran: whatever it was is fixed
        ir.async_delete_issue(hass, DOMAIN, ISSUE_BACKEND_UNUSABLE)


async def _check_torch(hass: HomeAssistant, python: str) -> None:
    """A transformers role needs a Python that imports torch and transformers: say so if it cannot."""
    if (problem := await torch_problem(python)) is None:
        ir.async_delete_issue(hass, DOMAIN, ISSUE_TORCH_MISSING)
    else:
        _LOGGER.warning("The transformers model cannot run: %s", problem)
        _issue(hass, ISSUE_TORCH_MISSING, python=python or "-", error=problem)


@callback
def _check_model_files(hass: HomeAssistant, statuses: dict[str, dict[str, Any]]) -> None:
    """A model file that vanished after setup is found by the load that needs it."""
    missing = [s["error"] for s in statuses.values() if s["error_key"] == ModelNotFound.key]
    if missing:
        _issue(hass, ISSUE_MODEL_MISSING, error=str(missing[0]))


@callback
def _check_remote(hass: HomeAssistant, statuses: dict[str, dict[str, Any]]) -> None:
    """A server that failed REMOTE_DOWN_AFTER requests in a row gets a repair; it goes when one answers."""
    down = [(r, s) for r, s in statuses.items() if s["remote"] and s["failures"] >= REMOTE_DOWN_AFTER]
    if down:
        role, status = down[0]
        _issue(hass, ISSUE_REMOTE_DOWN, role=role, server=str(status["server"]), count=str(status["failures"]))
    elif all(s["failures"] == 0 for s in statuses.values()):
        ir.async_delete_issue(hass, DOMAIN, ISSUE_REMOTE_DOWN)


def _log_availability(statuses: dict[str, dict[str, Any]], unavailable: set[str]) -> None:
    """Quality rule log-when-unavailable: a model that fails is logged once, and once when it is back."""
    for role, status in statuses.items():
        if status["state"] == "error" and role not in unavailable:
            unavailable.add(role)
            _LOGGER.warning("The %s model is unavailable: %s", role, status["error"])
        elif status["state"] in ("loaded", "remote") and role in unavailable:
            unavailable.discard(role)
            _LOGGER.info("The %s model is available again", role)


async def _preload(engine: Engine) -> None:
    """Load the pinned fast model so the first Assist turn does not pay for it."""
    try:
        await engine.start()
    except EngineError as err:  # the first request will retry and report it to the user
        if engine.closed:  # the entry was removed or reloaded while it loaded: nothing failed
            _LOGGER.debug("Preloading stopped by the entry's unload: %s", err)
        else:
            _LOGGER.warning("Preloading the fast model failed: %s", err)


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """1.1 → 1.2: the backend is stored. 1.2 → 1.3: the cameras tool moved into HA's Assist API
    (the `llm` tool platform), so an agent that chose the old cameras API gets Assist instead."""
    if entry.version > 1:  # written by a newer release: do not guess
        return False
    if entry.minor_version < 2:
        data = {CONF_BACKEND: BACKEND_LLAMA_CPP, **entry.data}
        hass.config_entries.async_update_entry(entry, data=data, minor_version=2)
    if entry.minor_version < 3:
        for subentry in entry.subentries.values():
            apis = subentry.data.get(CONF_LLM_HASS_API)
            if isinstance(apis, list) and LEGACY_CAMERA_API_ID in apis:
                moved = list(dict.fromkeys(llm.LLM_API_ASSIST if a == LEGACY_CAMERA_API_ID else a for a in apis))
                hass.config_entries.async_update_subentry(
                    entry, subentry, data={**subentry.data, CONF_LLM_HASS_API: moved}
                )
        hass.config_entries.async_update_entry(entry, minor_version=3)
    _LOGGER.info("Migrated the Sarai Omni entry to version 1.%s", entry.minor_version)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: SaraiConfigEntry) -> bool:
    """Unload platforms, then stop the worker processes and free their memory."""
    if not await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        return False
    await entry.runtime_data.engine.close()
    return True


def _loaded_from(entry: SaraiConfigEntry, config: EngineConfig) -> tuple[Any, ...]:
    """The engine's configuration and the agents' subentries: what a reload would rebuild."""
    agents = {sid: (sub.subentry_type, sub.title, dict(sub.data)) for sid, sub in entry.subentries.items()}
    return (config, agents)


async def _async_update_listener(hass: HomeAssistant, entry: SaraiConfigEntry) -> None:
    """Options or subentries changed: rebuild the engine with them. Options saved unchanged (the
    form submitted as it was shown) keep the running engine: no reload, Assist stays available."""
    if _loaded_from(entry, engine_config(hass, entry)) == entry.runtime_data.loaded_from:
        return
    await hass.config_entries.async_reload(entry.entry_id)
