"""The sarai_omni engine: roles, model pool, backends, router, prompts; no Home Assistant imports.

This package's names are the engine's whole API for the HA layer, which imports nothing else of it
(tests/test_structure.py). They load lazily (PEP 562): a worker process runs
`python -m <package>.engine.worker.<backend>`, which imports this package first, and must get nothing
of the host side with it (no pool, no asyncio client, no aiohttp).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_API = {
    "defaults": (".", "defaults"),
    "llama_sources": (".", "llama_sources"),
    "Engine": (".core", None),
    "EngineConfig": (".core", None),
    "ChatResult": (".chat", None),
    "ChatStream": (".chat", None),
    "ChatRequest": (".backends.base", None),
    "Speech": (".backends.base", None),
    "ModelSpec": (".spec", None),
    "GGUFModel": (".spec", None),
    "FolderModel": (".spec", None),
    "RemoteModel": (".spec", None),
    "Runtime": (".spec", None),
    "server_label": (".spec", None),
    "BACKEND_LLAMA_CPP": (".spec", None),
    "BACKEND_TRANSFORMERS": (".spec", None),
    "BACKEND_REMOTE": (".spec", None),
    "CHAT": (".capabilities", None),
    "TOOLS": (".capabilities", None),
    "SEE": (".capabilities", None),
    "HEAR": (".capabilities", None),
    "SPEAK": (".capabilities", None),
    "GRAMMAR": (".capabilities", None),
    "JSON_SCHEMA": (".capabilities", None),
    "MODEL_CAPABILITIES": (".capabilities", None),
    "ModelStatus": (".status", None),
    "EngineStatus": (".status", None),
    "StandingPrompt": (".status", None),
    "MODEL_STATES": (".status", None),
    "STATE_ERROR": (".status", None),
    "STATE_LOADED": (".status", None),
    "STATE_REMOTE": (".status", None),
    "RouteDecision": (".router", None),
    "RouterConfig": (".router", None),
    "normalize": (".router", None),
    "ModelFiles": (".files", None),
    "read_files": (".files", None),
    "estimate_bytes": (".pool.budget", None),
    "MB": (".pool.budget", None),
    "GGUFInfo": (".gguf", None),
    "read_gguf": (".gguf", None),
    "HFInfo": (".backends.transformers.folder", None),
    "read_folder": (".backends.transformers.folder", None),
    "is_model_folder": (".backends.transformers.folder", None),
    "read_voices": (".backends.transformers.folder", None),
    "list_models": (".backends.remote.server", None),
    "probe_modalities": (".backends.remote.server", None),
    "audio_kind": (".worker.llamacpp.media", None),
    "LLAMA_CPP_VERSION": (".worker.llamacpp.adapter", None),
    "Message": (".prompts", None),
    "SENTENCE_END": (".prompts", None),
    "sentences": (".prompts", None),
    "speech_languages": (".voices", None),
    "BadToolCall": (".toolcalls", None),
    "TextPart": (".toolcalls", None),
    "ToolCall": (".toolcalls", None),
    "ToolCallParser": (".toolcalls", None),
    "tool_call_schema": (".toolcalls", None),
    "cpu_flags": (".procmem", None),
    "physical_cores": (".procmem", None),
    "total_ram_bytes": (".procmem", None),
}
_ERRORS = (
    "BackendMissing", "Busy", "CapabilityMissing", "ContextTooSmall", "DoesNotFitBudget", "EngineError",
    "InvalidInput", "InvalidModelFile", "LoadFailed", "ModelNotFound", "RemoteAuthFailed", "RemoteError",
    "RequestTimeout", "TorchMissing", "WorkerCrashed",
)  # fmt: skip
_API |= dict.fromkeys(_ERRORS, (".errors", None))
__all__ = [
    "BACKEND_LLAMA_CPP",
    "BACKEND_REMOTE",
    "BACKEND_TRANSFORMERS",
    "CHAT",
    "GRAMMAR",
    "HEAR",
    "JSON_SCHEMA",
    "LLAMA_CPP_VERSION",
    "MB",
    "MODEL_CAPABILITIES",
    "MODEL_STATES",
    "SEE",
    "SENTENCE_END",
    "SPEAK",
    "STATE_ERROR",
    "STATE_LOADED",
    "STATE_REMOTE",
    "TOOLS",
    "BackendMissing",
    "BadToolCall",
    "Busy",
    "CapabilityMissing",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "ContextTooSmall",
    "DoesNotFitBudget",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineStatus",
    "FolderModel",
    "GGUFInfo",
    "GGUFModel",
    "HFInfo",
    "InvalidInput",
    "InvalidModelFile",
    "LoadFailed",
    "Message",
    "ModelFiles",
    "ModelNotFound",
    "ModelSpec",
    "ModelStatus",
    "RemoteAuthFailed",
    "RemoteError",
    "RemoteModel",
    "RequestTimeout",
    "RouteDecision",
    "RouterConfig",
    "Runtime",
    "Speech",
    "StandingPrompt",
    "TextPart",
    "ToolCall",
    "ToolCallParser",
    "TorchMissing",
    "WorkerCrashed",
    "audio_kind",
    "cpu_flags",
    "defaults",
    "estimate_bytes",
    "is_model_folder",
    "list_models",
    "llama_sources",
    "normalize",
    "physical_cores",
    "probe_modalities",
    "read_files",
    "read_folder",
    "read_gguf",
    "read_voices",
    "sentences",
    "server_label",
    "speech_languages",
    "tool_call_schema",
    "total_ram_bytes",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _API[name]
    if attribute is not None:  # a submodule itself
        return importlib.import_module(f"{module}{attribute}" if module == "." else module, __name__)
    return getattr(importlib.import_module(module, __name__), name)


if TYPE_CHECKING:
    from . import defaults, llama_sources
    from .backends.base import ChatRequest, Speech
    from .backends.remote.server import list_models, probe_modalities
    from .backends.transformers.folder import HFInfo, is_model_folder, read_folder, read_voices
    from .capabilities import CHAT, GRAMMAR, HEAR, JSON_SCHEMA, MODEL_CAPABILITIES, SEE, SPEAK, TOOLS
    from .chat import ChatResult, ChatStream
    from .core import Engine, EngineConfig
    from .errors import (
        BackendMissing,
        Busy,
        CapabilityMissing,
        ContextTooSmall,
        DoesNotFitBudget,
        EngineError,
        InvalidInput,
        InvalidModelFile,
        LoadFailed,
        ModelNotFound,
        RemoteAuthFailed,
        RemoteError,
        RequestTimeout,
        TorchMissing,
        WorkerCrashed,
    )
    from .files import ModelFiles, read_files
    from .gguf import GGUFInfo, read_gguf
    from .pool.budget import MB, estimate_bytes
    from .procmem import cpu_flags, physical_cores, total_ram_bytes
    from .prompts import SENTENCE_END, Message, sentences
    from .router import RouteDecision, RouterConfig, normalize
    from .spec import (
        BACKEND_LLAMA_CPP,
        BACKEND_REMOTE,
        BACKEND_TRANSFORMERS,
        FolderModel,
        GGUFModel,
        ModelSpec,
        RemoteModel,
        Runtime,
        server_label,
    )
    from .status import MODEL_STATES, STATE_ERROR, STATE_LOADED, STATE_REMOTE, EngineStatus, ModelStatus, StandingPrompt
    from .toolcalls import BadToolCall, TextPart, ToolCall, ToolCallParser, tool_call_schema
    from .voices import speech_languages
    from .worker.llamacpp.adapter import LLAMA_CPP_VERSION
    from .worker.llamacpp.media import audio_kind
