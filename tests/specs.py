"""Role specs for tests and benchmarks, spelled briefly: a GGUF (and projector), a folder, a server's model."""

from __future__ import annotations

from typing import Any

from custom_components.sarai_omni.engine.spec import (
    FolderModel,
    GGUFModel,
    LoadVariant,
    ModelSpec,
    RemoteModel,
    Runtime,
)


def gguf_spec(
    role: str,
    path: str,
    mmproj: str | None = None,
    *,
    pinned: bool = False,
    repack: bool | None = None,
    flash_attn: bool | None = None,
    capabilities: frozenset[str] | None = None,
    **runtime: Any,
) -> ModelSpec:
    """A GGUF role; `repack`/`flash_attn` fix the load variant (None: calibrated, as in HA)."""
    variant = None if repack is None and flash_attn is None else LoadVariant(bool(repack), bool(flash_attn))
    return ModelSpec(role, GGUFModel(path, mmproj), Runtime(**runtime), pinned, capabilities, variant)


def remote_spec(role: str, model: RemoteModel, *, pinned: bool = False, **runtime: Any) -> ModelSpec:
    return ModelSpec(role, model, Runtime(**runtime), pinned)


def folder_spec(role: str, path: str, python: str, *, n_ctx: int, n_threads: int, **torch: str) -> ModelSpec:
    """A model folder on transformers (`torch`: its dtype, device, quantization)."""
    return ModelSpec(role, FolderModel(path, python, **torch), Runtime(n_ctx=n_ctx, n_threads=n_threads))
