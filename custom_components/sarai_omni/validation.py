"""Validate user-entered model files (blocking file I/O: run in an executor)."""

from __future__ import annotations

from pathlib import Path

from homeassistant.core import HomeAssistant

from .engine import GGUFInfo, InvalidModelFile, ModelSpec, estimate_bytes, read_gguf
from .engine.pool import MB


class ModelFileError(Exception):
    """A model path the user entered is not usable; `key` is the config-flow error key."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(f"{key}: {path}")
        self.key, self.path = key, path


def check_model_file(hass: HomeAssistant, path: str, *, projector: bool = False) -> GGUFInfo:
    """Resolve, allow-list and parse a GGUF; raise ModelFileError with the form's error key."""
    full = path if Path(path).is_absolute() else hass.config.path(path)
    if not hass.config.is_allowed_path(full):  # before existence: do not probe other dirs
        raise ModelFileError("path_not_allowed", path)
    if not Path(full).is_file():
        raise ModelFileError("file_not_found", path)
    try:
        info = read_gguf(full)
    except (InvalidModelFile, OSError) as err:
        raise ModelFileError("not_gguf", path) from err
    if info.is_projector != projector or not (projector or info.is_supported_text_model):
        raise ModelFileError("unsupported_arch", path)
    return info


def estimated_mb(info: GGUFInfo, n_ctx: int, mmproj: GGUFInfo | None = None) -> int:
    """What the model will take in RAM once loaded (same formula the pool enforces)."""
    spec = ModelSpec("check", str(info.path), n_ctx=n_ctx)
    return round(estimate_bytes(info, spec, mmproj) / MB)
