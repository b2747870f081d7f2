"""The sarai_omni engine: model pool, worker processes, RAM budget, router, prompts.

Nothing in this package imports Home Assistant; worker processes import it without HA, and its tests
run on their own.
"""

from .backend import Backend, ChatRequest, Generated, ModelSpec
from .core import ChatResult, ChatStream, Engine, EngineConfig
from .errors import (
    BackendMissing,
    Busy,
    DoesNotFitBudget,
    EngineError,
    InvalidInput,
    InvalidModelFile,
    LoadFailed,
    ModelNotFound,
    RemoteAuthFailed,
    RemoteError,
    RequestTimeout,
    WorkerCrashed,
)
from .gguf import GGUFInfo, read_gguf
from .pool import MB, estimate_bytes
from .router import FAST, QUALITY, RouteDecision, RouterConfig, route

__all__ = [
    "FAST",
    "MB",
    "QUALITY",
    "Backend",
    "BackendMissing",
    "Busy",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "DoesNotFitBudget",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GGUFInfo",
    "Generated",
    "InvalidInput",
    "InvalidModelFile",
    "LoadFailed",
    "ModelNotFound",
    "ModelSpec",
    "RemoteAuthFailed",
    "RemoteError",
    "RequestTimeout",
    "RouteDecision",
    "RouterConfig",
    "WorkerCrashed",
    "estimate_bytes",
    "read_gguf",
    "route",
]
