"""Validate user-entered model files and the budget (blocking file I/O: run in an executor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from homeassistant.core import HomeAssistant

from .const import (
    BACKEND_REMOTE,
    BACKEND_TRANSFORMERS,
    CONF_AUDIO,
    CONF_BACKEND,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_N_THREADS,
    CONF_PINNED,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_REMOTE_MODEL,
    CONF_ROLE,
    CONF_SERVER,
    CONF_URL,
    CONF_VISION,
    MODELS_DIR,
)
from .engine import (
    MB,
    GGUFInfo,
    HFInfo,
    InvalidModelFile,
    ModelFiles,
    ModelNotFound,
    estimate_bytes,
    is_model_folder,
    read_folder,
    read_gguf,
    read_voices,
    server_label,
    total_ram_bytes,
)
from .settings import resolve_path, role_spec

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
    if info.is_projector != projector or not (projector or info.is_supported_text_model or info.speaks):
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


@dataclass(slots=True)
class RoleCheck:
    """What checking the roles found: each role's files, and the form errors by (role, field)."""

    files: dict[str, ModelFiles] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)  # field: "model" | "mmproj"
    found: str = NOTHING  # what an unsupported file is (its architecture, or why a folder is not one)


def check_roles(hass: HomeAssistant, roles: list[dict[str, Any]]) -> RoleCheck:
    """Resolve, allow-list and read each role's model files (blocking); a role on a server has none."""
    checked = RoleCheck()
    for role in roles:
        name = str(role[CONF_ROLE])
        try:
            checked.files[name] = _role_files(hass, role)
        except RoleFileError as err:
            checked.errors[(name, err.field)], checked.found = err.key, err.found or checked.found
    return checked


class RoleFileError(ModelFileError):
    """A ModelFileError and which of the role's fields it is about."""

    def __init__(self, err: ModelFileError, which: str) -> None:
        super().__init__(err.key, err.path, err.found)
        self.field = which


def _role_files(hass: HomeAssistant, role: dict[str, Any]) -> ModelFiles:
    backend = role.get(CONF_BACKEND)
    if backend == BACKEND_REMOTE:
        return ModelFiles()
    model, mmproj = str(role.get(CONF_MODEL_PATH) or ""), role.get(CONF_MMPROJ_PATH)
    try:
        if backend == BACKEND_TRANSFORMERS:
            folder = check_model_folder(hass, model)
            if mmproj:  # a folder brings its own encoders
                raise RoleFileError(ModelFileError("projector_with_folder", str(mmproj)), "mmproj")
            return ModelFiles(folder=folder, voices=read_voices(folder.path) if folder.speaks else ())
        info = check_model_file(hass, model)
    except RoleFileError:
        raise
    except ModelFileError as err:
        raise RoleFileError(err, "model") from err
    try:
        projector = check_model_file(hass, str(mmproj), projector=True) if mmproj else None
    except ModelFileError as err:
        raise RoleFileError(err, "mmproj") from err
    width = projector.projection_dim if projector else None
    if width and info.embedding_length and width != info.embedding_length:  # llama.cpp would refuse it
        raise RoleFileError(ModelFileError("projector_mismatch", str(mmproj)), "mmproj")
    return ModelFiles(gguf=info, mmproj=projector)


def needed_mb(hass: HomeAssistant, roles: list[dict[str, Any]], files: dict[str, ModelFiles], options: Any) -> int:
    """What the budget must hold for every role to run: the pinned roles together with the largest of
    the others (the pool evicts those in turn). The pool's own estimator; a server's model takes none."""
    sizes = {
        str(r[CONF_ROLE]): estimate_bytes(role_spec(hass, r, {CONF_N_THREADS: 1}, options), files[str(r[CONF_ROLE])])
        for r in roles
        if str(r[CONF_ROLE]) in files
    }
    pinned = [r for r in roles if r.get(CONF_PINNED)]
    fixed = sum(sizes.get(str(r[CONF_ROLE]), 0) for r in pinned)
    others = [sizes.get(str(r[CONF_ROLE]), 0) for r in roles if not r.get(CONF_PINNED)]
    return -(-(fixed + max(others, default=0)) // MB)


def summary(
    hass: HomeAssistant, roles: list[dict[str, Any]], checked: RoleCheck, budget: int, options: Any
) -> tuple[dict[str, str], dict[str, str]]:
    """The roles' lines and the RAM they need against the budget, as description placeholders, and
    the budget's own error if it cannot hold them (errors keyed by the form's `ram_budget_mb`)."""
    need, ram, language = needed_mb(hass, roles, checked.files, options), machine_ram_mb(), hass.config.language
    lines = [
        line
        for r in roles
        for line in (
            [describe_remote(str(r[CONF_ROLE]), r[CONF_SERVER], language)] if r.get(CONF_BACKEND) == BACKEND_REMOTE
            else describe_files(checked.files[str(r[CONF_ROLE])], language)
        )
    ]  # fmt: skip
    placeholders = {
        "models": "".join(f"\n- {line}" for line in lines),  # a markdown list
        "need": f"{number(need)} MB",
        "budget": f"{number(budget)} MB",
        "found": NOTHING,
        "ram_mb": str(ram),
        "needed_mb": str(need),
        "budget_mb": str(budget),
    }
    error = budget_error(budget, need, ram)
    return ({CONF_RAM_BUDGET_MB: error} if error else {}), placeholders


def describe_files(files: ModelFiles, language: str = "en") -> list[str]:
    """The role's model, and its projector on a line of its own."""
    if files.folder is not None:
        return [describe_folder(files.folder, language)]
    assert files.gguf is not None
    return [describe(f, language) for f in (files.gguf, files.mmproj) if f is not None]


def budget_error(budget_mb: int, needed_mb: int, ram_mb: int) -> str | None:
    """The form error for a budget: above the machine's RAM, or below what the models need."""
    if budget_mb > ram_mb > 0:
        return "budget_exceeds_ram"
    if needed_mb > budget_mb:
        return "does_not_fit_budget"
    return None
