"""Home Assistant entry points: set up the engine for a config entry, forward the platforms, migrate."""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryError
from homeassistant.helpers import config_validation as cv, llm
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.typing import ConfigType

from . import settings
from .const import (
    DOMAIN,
    ISSUE_BACKEND_MISSING,
    ISSUE_CRASH_LOOP,
    ISSUE_MODEL_MISSING,
    SIGNAL_ENGINE_UPDATED,
)
from .engine import BACKEND_LLAMA_CPP, Engine, EngineConfig, EngineError, FolderModel, ModelNotFound
from .history import async_open
from .installer import backend_available
from .issues import check_budget, check_torch, clear, on_engine_change, raise_issue
from .llm import LEGACY_CAMERA_API_ID
from .media_source import TimelineImageView
from .models import SaraiConfigEntry, SaraiRuntimeData
from .services import async_setup_services
from .settings import UnknownBackend, migrate_roles, role_subentry

_LOGGER = logging.getLogger(__name__)

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)
PLATFORMS = (Platform.AI_TASK, Platform.CALENDAR, Platform.CONVERSATION, Platform.SENSOR, Platform.STT, Platform.TTS)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's services (they find the loaded entry when called). The cameras
    tool comes through HA's `llm` tool platform (llm.py); the timeline's key frames through its view."""
    async_setup_services(hass)
    hass.http.register_view(TimelineImageView)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: SaraiConfigEntry) -> bool:
    """Start the engine: read the roles' files, then load the pinned roles in the background."""
    try:
        config = settings.engine_config(hass, entry)
    except UnknownBackend as err:
        placeholders = {"backend": err.backend}
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key="unknown_backend", translation_placeholders=placeholders
        ) from err
    if not config.models:
        raise ConfigEntryError(translation_domain=DOMAIN, translation_key="no_model_roles")
    local = any(spec.backend == BACKEND_LLAMA_CPP for spec in config.models)  # only GGUF roles need llama.cpp here
    if local and not await hass.async_add_executor_job(backend_available):
        raise_issue(hass, ISSUE_BACKEND_MISSING)
        raise ConfigEntryError(translation_domain=DOMAIN, translation_key="backend_missing")
    clear(hass, ISSUE_BACKEND_MISSING, ISSUE_CRASH_LOOP)  # a (re)load starts with fresh workers
    unavailable: set[str] = set()  # roles whose failure was logged: once when lost, once when back

    @callback
    def changed() -> None:
        async_dispatcher_send(hass, f"{SIGNAL_ENGINE_UPDATED}_{entry.entry_id}")
        if not engine.closed:  # unloading: the workers stop on purpose
            on_engine_change(hass, engine, unavailable)

    engine = Engine(config, on_change=changed)
    try:
        await engine.prepare()  # once: the background start below finds it done
    except ModelNotFound as err:
        raise_issue(hass, ISSUE_MODEL_MISSING, error=str(err))
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key="model_not_found", translation_placeholders={"error": str(err)}
        ) from err
    except EngineError as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key=err.key, translation_placeholders={"error": str(err)}
        ) from err
    clear(hass, ISSUE_MODEL_MISSING)
    check_budget(hass, entry, engine)
    timeline = await async_open(hass, entry)  # never fails: a corrupt store is set aside, a repair says so
    entry.runtime_data = SaraiRuntimeData(engine, timeline, _loaded_from(entry, config))

    async def _stop(_: Event) -> None:
        await engine.close()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _stop))
    entry.async_create_background_task(hass, _preload(engine), f"{DOMAIN} preload")
    if folder := next((s.source for s in config.models if isinstance(s.source, FolderModel)), None):
        entry.async_create_background_task(hass, check_torch(hass, folder.python), f"{DOMAIN} torch check")
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    return True


async def _preload(engine: Engine) -> None:
    """Load the pinned roles so the first Assist turn does not pay for them."""
    try:
        await engine.start()
    except EngineError as err:  # the first request will retry and report it to the user
        if engine.closed:  # the entry was removed or reloaded while it loaded: nothing failed
            _LOGGER.debug("Preloading stopped by the entry's unload: %s", err)
        else:
            _LOGGER.warning("Preloading the pinned models failed: %s", err)


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """1.1 → 1.2: the backend is stored. 1.2 → 1.3: the cameras tool moved into HA's Assist API (the
    `llm` tool platform), so an agent that chose the old cameras API gets Assist instead. 1.3 → 1.4:
    each role becomes a model subentry; KV type and GPU layers move to the options (settings.py)."""
    if entry.version > 1:  # written by a newer release: do not guess
        return False
    manager = hass.config_entries
    if entry.minor_version < 3:
        for subentry in entry.subentries.values():
            apis = subentry.data.get(CONF_LLM_HASS_API)
            if isinstance(apis, list) and LEGACY_CAMERA_API_ID in apis:
                moved = list(dict.fromkeys(llm.LLM_API_ASSIST if a == LEGACY_CAMERA_API_ID else a for a in apis))
                manager.async_update_subentry(entry, subentry, data={**subentry.data, CONF_LLM_HASS_API: moved})
    if entry.minor_version < 4:
        data, options, roles = migrate_roles(dict(entry.data), dict(entry.options))
        for role in roles:
            made = role_subentry(role)
            subentry = ConfigSubentry(
                data=MappingProxyType(made["data"]),
                subentry_type=made["subentry_type"],
                title=made["title"],
                unique_id=made["unique_id"],
            )
            manager.async_add_subentry(entry, subentry)
        manager.async_update_entry(entry, data=data, options=options)
    manager.async_update_entry(entry, minor_version=4)
    _LOGGER.info("Migrated the Sarai Omni entry to version 1.%s", entry.minor_version)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: SaraiConfigEntry) -> bool:
    """Unload platforms, then stop the worker processes and free their memory."""
    if not await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        return False
    await entry.runtime_data.engine.close()
    await hass.async_add_executor_job(entry.runtime_data.timeline.close)
    return True


def _loaded_from(entry: SaraiConfigEntry, config: EngineConfig) -> tuple[Any, ...]:
    """The engine's configuration and the agents' subentries: what a reload would rebuild."""
    agents = {sid: (sub.subentry_type, sub.title, dict(sub.data)) for sid, sub in entry.subentries.items()}
    return (config, agents)


async def _async_update_listener(hass: HomeAssistant, entry: SaraiConfigEntry) -> None:
    """Options or subentries changed: rebuild the engine with them. Options saved unchanged (the
    form submitted as it was shown) keep the running engine: no reload, Assist stays available.
    A flow that changes several subentries at once calls this once per change: one reload does."""
    runtime = entry.runtime_data
    if runtime.reloading or _loaded_from(entry, settings.engine_config(hass, entry)) == runtime.loaded_from:
        return
    runtime.reloading = True
    await hass.config_entries.async_reload(entry.entry_id)
