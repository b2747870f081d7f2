"""The forms of the config, options and subentry flows (their fields, selectors and defaults)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import probatio

from .catalog import SEEDS
from .const import (
    CONF_API_KEY,
    CONF_AUDIO,
    CONF_CAMERA_IMAGE_SIZE,
    CONF_DOWNLOAD,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_FILENAME,
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
    CONF_REMOTE_ROLES,
    CONF_REPO_ID,
    CONF_REQUEST_TIMEOUT_S,
    CONF_REVISION,
    CONF_ROLE,
    CONF_ROUTER_SHORT_CHARS,
    CONF_ROUTER_SOFT_THRESHOLD,
    CONF_TARGET,
    CONF_TIMELINE_DAYS,
    CONF_TIMELINE_MAX_EVENTS,
    CONF_TIMELINE_MAX_MB,
    CONF_TORCH_DEVICE,
    CONF_TORCH_DTYPE,
    CONF_TORCH_PYTHON,
    CONF_TORCH_QUANTIZATION,
    CONF_URL,
    CONF_VISION,
    DOWNLOAD_HUB,
    DOWNLOAD_NONE,
    FAST,
    KV_TYPES,
    QUALITY,
)
from .engine import defaults, physical_cores
from .settings import TUNABLE_DEFAULTS
from .validation import MODEL_KEYS, machine_ram_mb

CONF_ON_SERVER = "on_server"  # the role form: its model is on a server (the next steps ask which)


def default_budget_mb() -> int:
    """The seed's 7.5 GB, capped by the machine's RAM (never more than the box has)."""
    ram = machine_ram_mb()
    return min(defaults.RAM_BUDGET_MB, ram) if ram else defaults.RAM_BUDGET_MB


def number(minimum: int, maximum: int, step: int = 1, unit: str | None = None) -> NumberSelector:
    config = NumberSelectorConfig(min=minimum, max=maximum, step=step, mode=NumberSelectorMode.BOX)
    if unit:
        config["unit_of_measurement"] = unit
    return NumberSelector(config)


def select(options: list[str], key: str) -> SelectSelector:
    return SelectSelector(SelectSelectorConfig(options=options, mode=SelectSelectorMode.DROPDOWN, translation_key=key))


def kv_type_selector() -> SelectSelector:
    return select(list(KV_TYPES), CONF_KV_TYPE)


def user_schema() -> probatio.Schema:
    """The setup form: the two default roles' models (or a download), budget, threads, context, KV type, GPU layers."""
    return probatio.Schema(
        {
            probatio.Optional(CONF_DOWNLOAD, default=DOWNLOAD_NONE): select(
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
            probatio.Required(CONF_RAM_BUDGET_MB, default=default_budget_mb()): number(256, 1 << 20, 64, "MB"),
            probatio.Required(CONF_N_THREADS, default=physical_cores()): number(1, 256),
            probatio.Required(CONF_N_CTX, default=defaults.N_CTX): number(256, 262144, 256),
            probatio.Required(CONF_KV_TYPE, default=defaults.KV_TYPE): kv_type_selector(),
            probatio.Required(CONF_N_GPU_LAYERS, default=0): number(0, 999),
        }
    )


def role_schema(*, creating: bool) -> probatio.Schema:
    """A model role: its name (when made), its model (a GGUF and projector, a model folder, or on a
    server), its context and batch, and whether it stays loaded."""
    name = {probatio.Required(CONF_ROLE): TextSelector()} if creating else {}
    return probatio.Schema(
        name
        | {
            probatio.Optional(CONF_MODEL_PATH): TextSelector(),
            probatio.Optional(CONF_MMPROJ_PATH): TextSelector(),
            probatio.Required(CONF_ON_SERVER, default=False): BooleanSelector(),
            probatio.Required(CONF_N_CTX, default=defaults.N_CTX): number(256, 262144, 256),
            probatio.Required(CONF_N_BATCH, default=defaults.N_BATCH): number(32, 4096, 32),
            probatio.Required(CONF_PINNED, default=False): BooleanSelector(),
        }
    )


def hub_schema() -> probatio.Schema:
    return probatio.Schema(
        {
            probatio.Required(CONF_REPO_ID): TextSelector(),
            probatio.Required(CONF_FILENAME): TextSelector(),
            probatio.Required(CONF_REVISION, default="main"): TextSelector(),
            probatio.Required(CONF_TARGET, default=CONF_FAST_MODEL): select([k for k, _ in MODEL_KEYS], CONF_TARGET),
            probatio.Optional("token"): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
        }
    )


def remote_schema() -> probatio.Schema:
    return probatio.Schema(
        {
            probatio.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
            probatio.Optional(CONF_API_KEY): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
            probatio.Optional(CONF_MORE_URLS): TextSelector(
                TextSelectorConfig(type=TextSelectorType.URL, multiple=True)
            ),
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


def torch_fields() -> dict[Any, Any]:
    """How model folders run: the torch venv's Python (checked: it must import torch), dtype, device, int8."""
    return {
        probatio.Required(CONF_TORCH_PYTHON, default=""): TextSelector(),
        probatio.Required(CONF_TORCH_DTYPE, default=defaults.TORCH_DTYPE): select(
            list(defaults.TORCH_DTYPES), CONF_TORCH_DTYPE
        ),
        probatio.Required(CONF_TORCH_DEVICE, default=defaults.TORCH_DEVICE): select(
            list(defaults.TORCH_DEVICES), CONF_TORCH_DEVICE
        ),
        probatio.Required(CONF_TORCH_QUANTIZATION, default=defaults.TORCH_QUANTIZATION): select(
            list(defaults.TORCH_QUANTIZATIONS), CONF_TORCH_QUANTIZATION
        ),
    }


def options_schema(*, torch: bool = False) -> probatio.Schema:
    """Tuning that needs no new files; with a model folder among the roles, also how torch runs it."""
    d = TUNABLE_DEFAULTS
    return probatio.Schema(
        {
            **(torch_fields() if torch else {}),
            probatio.Required(CONF_KV_TYPE, default=d[CONF_KV_TYPE]): kv_type_selector(),
            probatio.Required(CONF_N_GPU_LAYERS, default=d[CONF_N_GPU_LAYERS]): number(0, 999),
            probatio.Required(CONF_PROMPT_LOOKUP, default=d[CONF_PROMPT_LOOKUP]): BooleanSelector(),
            probatio.Required(CONF_CAMERA_IMAGE_SIZE, default=d[CONF_CAMERA_IMAGE_SIZE]): number(224, 1024, 28, "px"),
            probatio.Required(CONF_IDLE_UNLOAD_S, default=d[CONF_IDLE_UNLOAD_S]): number(0, 86400, 10, "s"),
            probatio.Required(CONF_REQUEST_TIMEOUT_S, default=d[CONF_REQUEST_TIMEOUT_S]): number(10, 3600, 10, "s"),
            probatio.Required(CONF_ROUTER_SHORT_CHARS, default=d[CONF_ROUTER_SHORT_CHARS]): number(10, 4000),
            probatio.Required(CONF_ROUTER_SOFT_THRESHOLD, default=d[CONF_ROUTER_SOFT_THRESHOLD]): NumberSelector(
                NumberSelectorConfig(min=0, max=1, step=0.05, mode=NumberSelectorMode.SLIDER)
            ),
            probatio.Required(CONF_TIMELINE_DAYS, default=d[CONF_TIMELINE_DAYS]): number(1, 3650, 1, "d"),
            probatio.Required(CONF_TIMELINE_MAX_EVENTS, default=d[CONF_TIMELINE_MAX_EVENTS]): number(10, 1_000_000),
            probatio.Required(CONF_TIMELINE_MAX_MB, default=d[CONF_TIMELINE_MAX_MB]): number(10, 100_000, 10, "MB"),
        }
    )


def valid_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def normalized(data: dict[str, Any]) -> dict[str, Any]:
    """Trimmed strings, integer numbers, empty fields dropped."""
    out = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
    for key in (CONF_RAM_BUDGET_MB, CONF_N_THREADS, CONF_N_CTX, CONF_N_GPU_LAYERS, CONF_N_BATCH):
        if key in out:
            out[key] = int(out[key])
    return {k: v for k, v in out.items() if v not in ("", None)}
