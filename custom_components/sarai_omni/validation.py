"""Validate user-entered model files and the budget (blocking file I/O: run in an executor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from homeassistant.core import HomeAssistant

from .const import (
    BACKEND_TRANSFORMERS,
    CONF_AUDIO,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_KV_TYPE,
    CONF_N_CTX,
    CONF_N_GPU_LAYERS,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_REMOTE_MODEL,
    CONF_TORCH_DTYPE,
    CONF_TORCH_QUANTIZATION,
    CONF_URL,
    CONF_VISION,
    DEFAULT_KV_TYPE,
    MODELS_DIR,
    QUALITY_N_CTX,
)
from .engine import MB, GGUFInfo, InvalidModelFile, ModelNotFound, ModelSpec, defaults, estimate_bytes, read_gguf
from .engine.backend import server_label
from .engine.hf import HFInfo, is_model_folder, read_folder
from .engine.procmem import total_ram_bytes

# Each model field, and whether it takes a projector (mmproj) rather than a model.
MODEL_KEYS: Final = (
    (CONF_FAST_MODEL, False),
    (CONF_FAST_MMPROJ, True),
    (CONF_QUALITY_MODEL, False),
    (CONF_QUALITY_MMPROJ, True),
)


class ModelFileError(Exception):
    """A model path the user entered is not usable; `key` is the config-flow error key."""

    def __init__(self, key: str, path: str, found: str = "") -> None:
        super().__init__(f"{key}: {path}")
        self.key, self.path, self.found = key, path, found  # found: the architecture the file has


def resolve_path(hass: HomeAssistant, path: str) -> str:
    """Absolute path of a user-entered model path (relative ones are under the config dir)."""
    return path if Path(path).is_absolute() else hass.config.path(path)


def machine_ram_mb() -> int:
    return total_ram_bytes() // 2**20


NOTHING: Final = "—"
REMOTE: Final = "remote"  # the architecture shown for a role on a server


def no_estimate(budget_mb: int | None = None) -> dict[str, str]:
    """Description placeholders before the models have been checked (the budget is known)."""
    return {
        "models": NOTHING,
        "need": NOTHING,
        "budget": f"{budget_mb} MB" if budget_mb else NOTHING,
        "ram_mb": str(machine_ram_mb()),
        "needed_mb": NOTHING,
        "budget_mb": str(budget_mb) if budget_mb else NOTHING,
        "architecture": NOTHING,
        "found": NOTHING,
    }


def is_allowed_model_path(hass: HomeAssistant, full: str) -> bool:
    """HA's allow-list, plus <config>/models: the folder this integration downloads into."""
    own = Path(hass.config.path(MODELS_DIR)).resolve()
    return hass.config.is_allowed_path(full) or Path(full).resolve().is_relative_to(own)


def check_model_file(hass: HomeAssistant, path: str, *, projector: bool = False) -> GGUFInfo:
    """Resolve, allow-list and parse a GGUF; raise ModelFileError with the form's error key."""
    full = _allowed(hass, path)
    try:
        if not Path(full).is_file():
            raise ModelFileError("file_not_found", path)
    except (OSError, ValueError) as err:
        raise ModelFileError("invalid_path", path) from err
    try:
        info = read_gguf(full)
    except (InvalidModelFile, OSError) as err:
        raise ModelFileError("not_gguf", path) from err
    if info.is_projector != projector or not (projector or info.is_supported_text_model):
        raise ModelFileError("unsupported_arch", path, info.architecture)
    return info


def _allowed(hass: HomeAssistant, path: str) -> str:
    """The resolved path, if the allow-list lets us read it (checked before it is probed at all)."""
    try:
        full = resolve_path(hass, path)
        if not is_allowed_model_path(hass, full):
            raise ModelFileError("path_not_allowed", path)
    except (OSError, ValueError) as err:  # a NUL byte, a lone surrogate, a name too long
        raise ModelFileError("invalid_path", path) from err
    return full


def is_folder_model(hass: HomeAssistant, path: str) -> bool:
    """A Hugging Face model folder (config.json) rather than a GGUF file (blocking: a stat)."""
    try:
        return is_model_folder(resolve_path(hass, path))
    except OSError, ValueError:
        return False


def transformers_roles(hass: HomeAssistant, data: dict[str, Any]) -> dict[str, str]:
    """The roles whose model is a folder, each with the transformers backend (blocking)."""
    return {
        key.split("_")[0]: BACKEND_TRANSFORMERS
        for key in (CONF_FAST_MODEL, CONF_QUALITY_MODEL)
        if data.get(key) and is_folder_model(hass, data[key])
    }


def check_model_folder(hass: HomeAssistant, path: str) -> HFInfo:
    """Resolve, allow-list and read a model folder's config.json and weights' headers."""
    full = _allowed(hass, path)
    try:
        info = read_folder(full)
    except ModelNotFound as err:
        raise ModelFileError("file_not_found", path) from err
    except InvalidModelFile as err:
        raise ModelFileError("unsupported_folder", path, str(err)) from err
    if info.talker and not info.speakers_file:  # transformers refuses to load it without its voices
        raise ModelFileError("unsupported_folder", path, "no spk_dict.pt (the talker's voices)")
    return info


def estimated_mb(
    info: GGUFInfo, n_ctx: int, mmproj: GGUFInfo | None = None, kv_type: str = DEFAULT_KV_TYPE, n_gpu_layers: int = 0
) -> int:
    """What the model will take in RAM once loaded (same formula the pool enforces)."""
    spec = ModelSpec("check", str(info.path), n_ctx=n_ctx, kv_type=kv_type, n_gpu_layers=n_gpu_layers)
    return round(estimate_bytes(info, spec, mmproj) / MB)


# The words of the model summary, in HA's language (the form's description holds no per-file text).
WORDS: Final = {
    "en": {"parameters": "parameters", "context": "trained context", "projector": "projector",
           "vision": "vision", "audio": "audio", "on": "on", "server": "server, no local RAM",
           "speech": "speech", "transformers": "transformers, torch venv"},
    "es": {"parameters": "parámetros", "context": "contexto de entrenamiento", "projector": "proyector",
           "vision": "visión", "audio": "audio", "on": "en", "server": "servidor, sin RAM local",
           "speech": "voz", "transformers": "transformers, venv de torch"},
}  # fmt: skip


def words(language: str) -> dict[str, str]:
    return WORDS.get(language.split("-", maxsplit=1)[0], WORDS["en"])


def number(value: float, decimals: int = 0) -> str:
    """A number without thousands separators ("2048 MB", not "2,048 MB", which reads as 2 in Spanish)."""
    return f"{value:.{decimals}f}"


def describe(info: GGUFInfo | HFInfo, language: str = "en") -> str:
    """One line of what the header says, shown back to the user in the form."""
    w = words(language)
    if isinstance(info, HFInfo):
        return describe_folder(info, language)
    size_mb = info.file_size / MB
    size = f"{number(size_mb, 1 if size_mb < 10 else 0)} MB"
    if info.is_projector:
        kinds = [w[k] for k, on in (("vision", info.has_vision), ("audio", info.has_audio)) if on] or ["-"]
        return f"{info.path.name}: {w['projector']} ({'+'.join(kinds)}), {size}"
    count = info.parameter_count
    params = f"{number(count / 1e9, 2)} B" if count >= 1e8 else number(count)
    return (
        f"{info.path.name}: {info.architecture}, {params} {w['parameters']}, {info.file_type or '?'}, "
        f"{w['context']} {info.context_length or '?'}, {size}"
    )


def describe_folder(info: HFInfo, language: str = "en") -> str:
    w = words(language)
    count = info.parameters()
    params = f"{number(count / 1e9, 2)} B" if count >= 1e8 else number(count)
    kinds = [w[k] for k, on in (("vision", info.has_vision), ("audio", info.has_audio), ("speech", info.speaks)) if on]
    takes = f", {'+'.join(kinds)}" if kinds else ""
    return f"{info.path.name}: {info.model_type} ({w['transformers']}), {params} {w['parameters']}{takes}"


def describe_remote(role: str, server: dict[str, Any], language: str = "en") -> str:
    """One line of a role served by a server, shown back in the form."""
    w = words(language)
    takes = [w[k] for k in (CONF_VISION, CONF_AUDIO) if server.get(k)]
    extra = f", {'+'.join(takes)}" if takes else ""
    where = server_label(server[CONF_URL])
    return f"{role}: {server[CONF_REMOTE_MODEL]} {w['on']} {where} ({w['server']}{extra})"


def validate_models(
    hass: HomeAssistant, data: dict[str, Any], remote: dict[str, dict[str, Any]] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Check every given model file and the budget (blocking). Returns (errors, placeholders).

    The files of roles in `remote` (served by a server) are not used, so not checked.
    """
    remote = remote or {}
    errors: dict[str, str] = {}
    infos: dict[str, GGUFInfo | HFInfo] = {}
    found = NOTHING
    for key, projector in MODEL_KEYS:
        if data.get(key) and key.split("_")[0] not in remote:
            try:
                folder = not projector and is_folder_model(hass, data[key])
                infos[key] = (
                    check_model_folder(hass, data[key])
                    if folder
                    else check_model_file(hass, data[key], projector=projector)
                )
            except ModelFileError as err:
                errors[key], found = err.key, err.found or found
    if errors:
        return errors, no_estimate(data.get(CONF_RAM_BUDGET_MB)) | {"found": found}
    if CONF_QUALITY_MMPROJ in infos and CONF_QUALITY_MODEL not in infos:
        return {CONF_QUALITY_MODEL: "projector_without_model"}, no_estimate()
    if errors := projector_mismatches(infos):
        return errors, no_estimate()
    need, budget, ram = _needed_mb(infos, data), int(data[CONF_RAM_BUDGET_MB]), machine_ram_mb()
    language = hass.config.language
    lines = [describe(i, language) for i in infos.values()] + [
        describe_remote(r, s, language) for r, s in remote.items()
    ]
    placeholders = {
        "models": "".join(f"\n- {line}" for line in lines),  # a markdown list
        "need": f"{number(need)} MB",
        "budget": f"{number(budget)} MB",
        "found": NOTHING,
        "ram_mb": str(ram),
        "needed_mb": str(need),
        "budget_mb": str(budget),
        "architecture": _architecture(infos.get(CONF_FAST_MODEL)),
    }
    if error := budget_error(budget, need, ram):
        errors[CONF_RAM_BUDGET_MB] = error
    return errors, placeholders


def _architecture(info: GGUFInfo | HFInfo | None) -> str:
    if info is None:
        return REMOTE
    return info.model_type if isinstance(info, HFInfo) else info.architecture


def projector_mismatches(infos: dict[str, GGUFInfo | HFInfo]) -> dict[str, str]:
    """A projector made for another model: its output width is not the model's embedding width
    (llama.cpp would refuse it at load). A model folder brings its own encoders: no projector."""
    errors = {}
    for model_key, mmproj_key in ((CONF_FAST_MODEL, CONF_FAST_MMPROJ), (CONF_QUALITY_MODEL, CONF_QUALITY_MMPROJ)):
        model, mmproj = infos.get(model_key), infos.get(mmproj_key)
        if isinstance(model, HFInfo) or isinstance(mmproj, HFInfo):
            if mmproj is not None:
                errors[mmproj_key] = "projector_with_folder"
            continue
        width = mmproj.projection_dim if mmproj else None
        if model and width and model.embedding_length and width != model.embedding_length:
            errors[mmproj_key] = "projector_mismatch"
    return errors


def budget_error(budget_mb: int, needed_mb: int, ram_mb: int) -> str | None:
    """The form error for a budget: above the machine's RAM, or below what the models need."""
    if budget_mb > ram_mb > 0:
        return "budget_exceeds_ram"
    if needed_mb > budget_mb:
        return "does_not_fit_budget"
    return None


def _needed_mb(infos: dict[str, GGUFInfo | HFInfo], data: dict[str, Any]) -> int:
    """Fast model (pinned) plus the quality model: both must fit together, or quality never loads.

    Roles served by a server take no RAM here.
    """
    n_ctx, kv_type = int(data[CONF_N_CTX]), str(data.get(CONF_KV_TYPE, DEFAULT_KV_TYPE))
    gpu = int(data.get(CONF_N_GPU_LAYERS, 0))  # offloaded layers live in GPU memory, not in RAM
    need = 0  # roles on a server take no RAM here
    for model_key, mmproj_key, ctx in (
        (CONF_FAST_MODEL, CONF_FAST_MMPROJ, n_ctx),
        (CONF_QUALITY_MODEL, CONF_QUALITY_MMPROJ, max(n_ctx, QUALITY_N_CTX)),
    ):
        info, mmproj = infos.get(model_key), infos.get(mmproj_key)
        if isinstance(info, HFInfo):
            dtype = str(data.get(CONF_TORCH_DTYPE, defaults.TORCH_DTYPE))
            quant = str(data.get(CONF_TORCH_QUANTIZATION, defaults.TORCH_QUANTIZATION))
            need += -(-info.estimate_bytes(dtype, ctx, quant) // MB)
        elif info is not None:
            need += estimated_mb(info, ctx, mmproj if isinstance(mmproj, GGUFInfo) else None, kv_type, gpu)
    return need
