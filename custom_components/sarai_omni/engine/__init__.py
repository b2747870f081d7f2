"""The sarai_omni engine: model pool, worker processes, RAM budget, router, prompts.

Nothing in this package imports Home Assistant; worker processes import it without HA, and its tests
run on their own.
"""

from .core import ChatRequest, ChatResult, ChatStream, Engine, EngineConfig
from .errors import (
    BackendMissing,
    DoesNotFitBudget,
    EngineError,
    InvalidInput,
    InvalidModelFile,
    LoadFailed,
    ModelNotFound,
    RequestTimeout,
    WorkerCrashed,
)
from .gguf import GGUFInfo, read_gguf
from .pool import ModelSpec, estimate_bytes
from .router import FAST, QUALITY, RouteDecision, RouterConfig, route

__all__ = [
    "FAST",
    "QUALITY",
    "BackendMissing",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "DoesNotFitBudget",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GGUFInfo",
    "InvalidInput",
    "InvalidModelFile",
    "LoadFailed",
    "ModelNotFound",
    "ModelSpec",
    "RequestTimeout",
    "RouteDecision",
    "RouterConfig",
    "WorkerCrashed",
    "estimate_bytes",
    "read_gguf",
    "route",
]
