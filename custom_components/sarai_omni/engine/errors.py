"""Typed engine errors. The HA layer maps each one, in one place, to a translated HA error."""

from __future__ import annotations

import signal


class EngineError(Exception):
    """Base class of everything the engine raises on purpose."""

    #: Translation key the HA layer uses for this error (exceptions.<key>.message).
    key = "engine_error"

    def detail(self) -> dict[str, int]:
        """Figures the translated message shows beside the text (they cross the worker's pipe)."""
        return {}

    def placeholders(self) -> dict[str, str]:
        """What the translated message may show: the text, and the figures."""
        return {"error": str(self)} | {k: str(v) for k, v in self.detail().items()}

    @classmethod
    def from_detail(cls, message: str, detail: dict[str, int]) -> EngineError:
        """The error again on the host's side of the pipe, from its text and `detail()`."""
        return cls(message)


class InvalidModelFile(EngineError):
    """The file is not a readable GGUF model."""

    key = "not_gguf"


class ModelNotFound(EngineError):
    """The model file is missing, or no model is configured for the request."""

    key = "model_not_found"


class BackendMissing(EngineError):
    """llama-cpp-python cannot be imported by the worker's Python."""

    key = "backend_missing"


class TorchMissing(BackendMissing):
    """The transformers worker's Python is missing, or it cannot import torch and transformers."""

    key = "torch_missing"


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

    def __init__(self, message: str, exit_code: int | None = None, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # negative: killed by that signal
        self.out_of_memory = out_of_memory  # the kernel ended it at its memory cgroup's limit

    @property
    def native_fault(self) -> bool:
        return is_native_fault(self.exit_code)


# Signals that mean the native code itself failed: an instruction the CPU traps, a bad memory access.
NATIVE_FAULTS = frozenset({signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT})
_SIGNAL_MEANINGS = {
    signal.SIGILL: "illegal instruction (the CPU refused an instruction of the native library)",
    signal.SIGSEGV: "segmentation fault (invalid memory access in native code)",
    signal.SIGBUS: "bus error (a memory-mapped file was truncated, or bad alignment)",
    signal.SIGFPE: "floating-point exception",
    signal.SIGABRT: "aborted (the native library gave up)",
    signal.SIGKILL: "killed (out of memory?)",
    signal.SIGTERM: "terminated",
}


def is_native_fault(code: int | None) -> bool:
    """Killed by the CPU or the C library (SIGILL, SIGSEGV, ...), not by the OOM killer or a user."""
    return code is not None and -code in NATIVE_FAULTS


def describe_exit(code: int | None) -> str:
    """A process exit as a person reads it: `SIGILL: illegal instruction (...)`, `exit code 1`."""
    if code is None:
        return "exited"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"killed by signal {-code}"
    return f"{name}: {_SIGNAL_MEANINGS.get(signal.Signals(-code), 'killed by a signal')}"


class Busy(EngineError):
    """Too many requests already wait for this model: refused at once instead of queued forever."""

    key = "busy"


class RequestTimeout(EngineError):
    """A request did not finish within its timeout."""

    key = "request_timeout"


class InvalidInput(EngineError):
    """The request itself is unusable (empty prompt, bad option)."""

    key = "invalid_input"


class ContextTooSmall(InvalidInput):
    """What cannot be cut from a prompt (instructions, tools, exposed entities, the last message)
    does not fit the model's context: only a larger n_ctx or a shorter standing prompt helps."""

    key = "context_too_small"

    def __init__(self, message: str = "", *, tokens: int = 0, n_ctx: int = 0, answer: int = 0) -> None:
        self.tokens, self.n_ctx, self.answer = tokens, n_ctx, answer
        self.role = ""  # set by the engine: the role whose context it is
        super().__init__(
            message
            or f"the prompt's instructions, tools and last message take {tokens} tokens; the model's context "
            f"holds {n_ctx}, {answer} of them kept for the answer"
        )

    @property
    def suggested_n_ctx(self) -> int:
        """The smallest context that holds the prompt and its answer, rounded up to 1024."""
        return -(-(self.tokens + self.answer) // 1024) * 1024

    def detail(self) -> dict[str, int]:
        return {"tokens": self.tokens, "n_ctx": self.n_ctx, "answer": self.answer, "suggested": self.suggested_n_ctx}

    def placeholders(self) -> dict[str, str]:
        return super().placeholders() | {"role": self.role}

    @classmethod
    def from_detail(cls, message: str, detail: dict[str, int]) -> EngineError:
        figures = {k: int(detail.get(k, 0)) for k in ("tokens", "n_ctx", "answer")}
        return cls(message, **figures)


class CapabilityMissing(EngineError):
    """The role asked for cannot do what the request needs (speak, constrain its output, ...)."""

    key = "capability_missing"


class LoadFailed(EngineError):
    """llama.cpp refused to load the model (corrupt file, unsupported tensor type)."""

    key = "load_failed"


class Cancelled(EngineError):
    """The request was cancelled before it produced a result."""

    key = "cancelled"


class RemoteError(EngineError):
    """An OpenAI-compatible server answered with an error (HTTP status or an error in the stream)."""

    key = "remote_error"


class RemoteUnreachable(RemoteError):
    """The server could not be reached (connection refused, DNS, timeout) after the retries."""

    key = "remote_unreachable"


class RemoteLoading(RemoteUnreachable):
    """The server is up but still loading its model (HTTP 503), for longer than a request may wait."""

    key = "remote_loading"


class RemoteAuthFailed(RemoteError):
    """The server refused the API key (HTTP 401/403)."""

    key = "remote_auth_failed"


class RemoteModelMissing(RemoteError):
    """The server does not list the configured model id."""

    key = "remote_model_missing"


class RemoteStreamBroken(RemoteError):
    """The server stopped in the middle of an answer (it died, or the connection dropped)."""

    key = "remote_stream_broken"
