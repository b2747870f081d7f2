"""Typed engine errors. The HA layer maps each one, in one place, to a translated HA error."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of everything the engine raises on purpose."""

    #: Translation key the HA layer uses for this error (exceptions.<key>.message).
    key = "engine_error"


class InvalidModelFile(EngineError):
    """The file is not a readable GGUF model."""

    key = "not_gguf"


class ModelNotFound(EngineError):
    """The model file is missing, or no model is configured for the request."""

    key = "model_not_found"


class BackendMissing(EngineError):
    """llama-cpp-python cannot be imported by the worker's Python."""

    key = "backend_missing"


class DoesNotFitBudget(EngineError):
    """A model cannot be loaded within the RAM budget, even after evicting idle models."""

    key = "does_not_fit_budget"

    def __init__(self, model: str, needed_mb: int, free_mb: int, budget_mb: int) -> None:
        self.model, self.needed_mb, self.free_mb, self.budget_mb = model, needed_mb, free_mb, budget_mb
        super().__init__(
            f"model '{model}' needs {needed_mb} MB but only {free_mb} MB of the {budget_mb} MB RAM budget can be freed"
        )


class WorkerCrashed(EngineError):
    """The worker process died (native crash, OOM kill). The next request restarts it."""

    key = "worker_crashed"


class RequestTimeout(EngineError):
    """A request did not finish within its timeout."""

    key = "request_timeout"


class InvalidInput(EngineError):
    """The request itself is unusable (empty prompt, bad option)."""

    key = "invalid_input"


class LoadFailed(EngineError):
    """llama.cpp refused to load the model (corrupt file, unsupported tensor type)."""

    key = "load_failed"
