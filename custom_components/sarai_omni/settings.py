"""The one source of configuration: a config entry turned into the engine's, and older entries brought
up to today's layout.

Where each setting lives (entry version 1.4):
- `data`: what setup decides for the whole engine: the RAM budget and the threads;
- `options`: tuning that needs no new files (KV cache type, GPU layers, idle unload, timeout, router,
  prompt lookup, the torch venv for model folders, the timeline's retention), each optional with its
  default from the defaults table;
- one `model` subentry per role: its name, its backend, its model (GGUF + projector, model folder, or a
  server's model), its context and batch, and whether it stays loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigSubentry, ConfigSubentryData
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from .const import (
    BACKEND_LLAMA_CPP,
    BACKEND_REMOTE,
    BACKEND_TRANSFORMERS,
    CONF_API_KEY,
    CONF_AUDIO,
    CONF_BACKEND,
    CONF_CAMERA_IMAGE_SIZE,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_IDLE_UNLOAD_S,
    CONF_KV_TYPE,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_MORE_URLS,
    CONF_N_BATCH,
    CONF_N_CTX,
    CONF_N_GPU_LAYERS,
    CONF_N_THREADS,
    CONF_PINNED,
    CONF_PROMPT_LOOKUP,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_REMOTE_MODEL,
    CONF_REQUEST_TIMEOUT_S,
    CONF_ROLE,
    CONF_ROUTER_SHORT_CHARS,
    CONF_ROUTER_SOFT_THRESHOLD,
    CONF_SERVER,
    CONF_TIMELINE_DAYS,
    CONF_TIMELINE_MAX_EVENTS,
    CONF_TIMELINE_MAX_MB,
    CONF_TORCH_DEVICE,
    CONF_TORCH_DTYPE,
    CONF_TORCH_PYTHON,
    CONF_TORCH_QUANTIZATION,
    CONF_URL,
    CONF_VISION,
    DOMAIN,
    FAST,
    OLD_FAST_N_BATCH,
    OLD_QUALITY_N_BATCH,
    OLD_REMOTE,
    OLD_ROLE_BACKENDS,
    QUALITY,
    SUBENTRY_MODEL,
)
from .engine import (
    EngineConfig,
    FolderModel,
    GGUFModel,
    ModelSpec,
    RemoteModel,
    RouterConfig,
    Runtime,
    defaults,
    physical_cores,
)
from .timeline import Retention

_LOGGER = logging.getLogger(__name__)
SETUP_KEYS = (CONF_RAM_BUDGET_MB, CONF_N_THREADS)
TUNABLE_DEFAULTS: dict[str, Any] = {
    CONF_KV_TYPE: defaults.KV_TYPE,
    CONF_N_GPU_LAYERS: 0,
    CONF_PROMPT_LOOKUP: defaults.PROMPT_LOOKUP,
    CONF_CAMERA_IMAGE_SIZE: defaults.CAMERA_IMAGE_SIZE,
    CONF_IDLE_UNLOAD_S: defaults.IDLE_UNLOAD_S,
    CONF_REQUEST_TIMEOUT_S: defaults.REQUEST_TIMEOUT_S,
    CONF_ROUTER_SHORT_CHARS: defaults.ROUTER_SHORT_CHARS,
    CONF_ROUTER_SOFT_THRESHOLD: defaults.ROUTER_SOFT_THRESHOLD,
    CONF_TORCH_PYTHON: "",
    CONF_TORCH_DTYPE: defaults.TORCH_DTYPE,
    CONF_TORCH_DEVICE: defaults.TORCH_DEVICE,
    CONF_TORCH_QUANTIZATION: defaults.TORCH_QUANTIZATION,
    CONF_TIMELINE_DAYS: Retention().days,
    CONF_TIMELINE_MAX_EVENTS: Retention().max_events,
    CONF_TIMELINE_MAX_MB: Retention().max_mb,
}


class UnknownBackend(ValueError):
    """A role stored with a backend this release does not know (written by a newer one?)."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.backend = backend


def resolve_path(hass: HomeAssistant, path: str) -> str:
    """Absolute path of a user-entered model path (relative ones are under the config dir)."""
    return path if Path(path).is_absolute() else hass.config.path(path)


def tunable(options: dict[str, Any] | Any, key: str) -> Any:
    """An option's value, or its default."""
    return options.get(key, TUNABLE_DEFAULTS[key])


def role_subentries(entry: ConfigEntry) -> list[ConfigSubentry]:
    """The entry's model roles, in the order they were made (the default roles first)."""
    return [s for s in entry.subentries.values() if s.subentry_type == SUBENTRY_MODEL]


def threads(data: dict[str, Any] | Any) -> int:
    """The configured threads, never more than this machine's CPUs (more only queue behind each other)."""
    wanted = int(data.get(CONF_N_THREADS) or physical_cores())
    usable = min(wanted, os.cpu_count() or 1)
    if usable < wanted:
        _LOGGER.warning("Using %d threads, the CPUs this machine has, instead of %s", usable, wanted)
    return usable


def engine_config(hass: HomeAssistant, entry: ConfigEntry) -> EngineConfig:
    """The engine's configuration from the entry's data, options and model subentries."""
    state_dir = hass.config.path(DOMAIN)  # calibrations and KV-cache snapshots live under the config dir
    models = tuple(
        role_spec(hass, dict(sub.data), entry.data, entry.options, str(Path(state_dir) / "kv_cache"))
        for sub in role_subentries(entry)
    )
    options = entry.options
    return EngineConfig(
        models=models,
        ram_budget_mb=int(entry.data.get(CONF_RAM_BUDGET_MB, defaults.RAM_BUDGET_MB)),
        idle_unload_s=float(tunable(options, CONF_IDLE_UNLOAD_S)),
        request_timeout_s=float(tunable(options, CONF_REQUEST_TIMEOUT_S)),
        state_dir=state_dir,
        http_session=async_get_clientsession(hass) if any(m.backend == BACKEND_REMOTE for m in models) else None,
        router=RouterConfig(
            short_chars=int(tunable(options, CONF_ROUTER_SHORT_CHARS)),
            soft_threshold=float(tunable(options, CONF_ROUTER_SOFT_THRESHOLD)),
        ),
    )


def role_spec(
    hass: HomeAssistant, role: dict[str, Any], data: Any, options: Any, kv_dir: str | None = None
) -> ModelSpec:
    """One model subentry as the engine's ModelSpec."""
    backend = role.get(CONF_BACKEND, BACKEND_LLAMA_CPP)
    if backend not in (BACKEND_LLAMA_CPP, BACKEND_TRANSFORMERS, BACKEND_REMOTE):
        raise UnknownBackend(str(backend))
    runtime = Runtime(
        n_ctx=int(role.get(CONF_N_CTX, defaults.N_CTX)),
        n_threads=threads(data),
        n_batch=int(role.get(CONF_N_BATCH, defaults.N_BATCH)),
        kv_type=str(tunable(options, CONF_KV_TYPE)),
        n_gpu_layers=int(tunable(options, CONF_N_GPU_LAYERS)),
        prompt_lookup=bool(tunable(options, CONF_PROMPT_LOOKUP)),
        kv_cache_dir=kv_dir if backend == BACKEND_LLAMA_CPP else None,
        voices_dir=hass.config.path(defaults.VOICES_FOLDER) if backend == BACKEND_LLAMA_CPP else None,
    )
    source: GGUFModel | FolderModel | RemoteModel
    if backend == BACKEND_REMOTE:
        source = remote_model(role[CONF_SERVER])
    elif backend == BACKEND_TRANSFORMERS:
        source = FolderModel(
            path=resolve_path(hass, role[CONF_MODEL_PATH]),
            python=str(tunable(options, CONF_TORCH_PYTHON)),
            dtype=str(tunable(options, CONF_TORCH_DTYPE)),
            device=str(tunable(options, CONF_TORCH_DEVICE)),
            quantization=str(tunable(options, CONF_TORCH_QUANTIZATION)),
        )
    else:
        mmproj = role.get(CONF_MMPROJ_PATH)
        source = GGUFModel(resolve_path(hass, role[CONF_MODEL_PATH]), resolve_path(hass, mmproj) if mmproj else None)
    return ModelSpec(str(role[CONF_ROLE]), source, runtime, pinned=bool(role.get(CONF_PINNED)))


def remote_model(server: dict[str, Any]) -> RemoteModel:
    """A role's stored server settings as the engine's RemoteModel."""
    return RemoteModel(
        base_url=str(server[CONF_URL]),
        model=str(server[CONF_REMOTE_MODEL]),
        api_key=server.get(CONF_API_KEY) or None,
        vision=bool(server.get(CONF_VISION)),
        audio=bool(server.get(CONF_AUDIO)),
        also=tuple(str(u) for u in server.get(CONF_MORE_URLS) or ()),
    )


def role_data(
    role: str, *, model: str | None = None, mmproj: str | None = None, server: dict[str, Any] | None = None,
    folder: bool = False, n_ctx: int = defaults.N_CTX, n_batch: int = defaults.N_BATCH, pinned: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """A model subentry's data (the backend follows from what the model is)."""
    data: dict[str, Any] = {CONF_ROLE: role, CONF_N_CTX: n_ctx, CONF_N_BATCH: n_batch, CONF_PINNED: pinned}
    if server is not None:
        return data | {CONF_BACKEND: BACKEND_REMOTE, CONF_SERVER: dict(server)}
    data |= {CONF_BACKEND: BACKEND_TRANSFORMERS if folder else BACKEND_LLAMA_CPP, CONF_MODEL_PATH: model}
    return data | ({CONF_MMPROJ_PATH: mmproj} if mmproj and not folder else {})


def role_subentry(data: dict[str, Any]) -> ConfigSubentryData:
    role = str(data[CONF_ROLE])
    return {"subentry_type": SUBENTRY_MODEL, "title": role, "unique_id": role, "data": data}


def default_roles(form: dict[str, Any], servers: dict[str, dict[str, Any]], folders: set[str]) -> list[dict[str, Any]]:
    """The fast (pinned) and quality roles the setup form describes: its model fields, or a server each."""
    n_ctx = int(form.get(CONF_N_CTX, defaults.N_CTX))
    roles = []
    for role, model_key, mmproj_key, ctx in (
        (FAST, CONF_FAST_MODEL, CONF_FAST_MMPROJ, n_ctx),
        (QUALITY, CONF_QUALITY_MODEL, CONF_QUALITY_MMPROJ, max(n_ctx, defaults.QUALITY_N_CTX)),
    ):
        if role not in servers and not form.get(model_key):
            continue
        roles.append(
            role_data(
                role, model=form.get(model_key), mmproj=form.get(mmproj_key), server=servers.get(role),
                folder=role in folders, n_ctx=ctx, n_batch=int(form.get(CONF_N_BATCH, defaults.N_BATCH)),
                pinned=role == FAST,
            )
        )  # fmt: skip
    return roles


def migrate_roles(
    data: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Entry 1.3 → 1.4: the roles' models out of data into model subentries, KV type and GPU layers
    (any tunable) from data into options (where an option did not already override them), batch sizes
    into their roles. Returns (data, options, roles); nothing the user set is dropped."""
    servers = dict(data.get(OLD_REMOTE) or {})
    folders = {r for r, b in (data.get(OLD_ROLE_BACKENDS) or {}).items() if b == BACKEND_TRANSFORMERS}
    roles = default_roles(data, servers, folders)
    if (backend := data.get(CONF_BACKEND, BACKEND_LLAMA_CPP)) != BACKEND_LLAMA_CPP:  # kept: setup says it is unknown
        for role in roles:
            role[CONF_BACKEND] = backend if role[CONF_BACKEND] == BACKEND_LLAMA_CPP else role[CONF_BACKEND]
    batches = {FAST: options.get(OLD_FAST_N_BATCH), QUALITY: options.get(OLD_QUALITY_N_BATCH)}
    for role in roles:
        if (batch := batches.get(role[CONF_ROLE])) is not None:
            role[CONF_N_BATCH] = int(batch)
    new_options = {k: v for k, v in options.items() if k not in (OLD_FAST_N_BATCH, OLD_QUALITY_N_BATCH)}
    for key in TUNABLE_DEFAULTS:  # the setup form's KV type and GPU layers (any other tunable, too)
        if key in data:
            new_options.setdefault(key, data[key])
    return {k: data[k] for k in SETUP_KEYS if k in data}, new_options, roles
