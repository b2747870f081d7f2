"""What the engine tells the HA layer about itself: typed, frozen, read by field (never by string key).

`ModelStatus` is one role (its state, memory, load, faults and its last request's figures),
`EngineStatus` the whole pool under its budget. Sensors, diagnostics, repairs and services read
these fields; `as_attributes()` is the one place that names them for HA's state attributes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_UNLOADED, STATE_LOADING, STATE_LOADED, STATE_ERROR = "unloaded", "loading", "loaded", "error"
STATE_REMOTE = "remote"  # a loaded role that a server runs (the contract's word for "reachable")
MODEL_STATES = (STATE_UNLOADED, STATE_LOADING, STATE_LOADED, STATE_REMOTE, STATE_ERROR)


@dataclass(frozen=True, slots=True)
class StandingPrompt:
    """The prompt last put in a model's KV cache without a turn, and where it came from."""

    source: str  # evaluated | disk | context | server | not_cached
    tokens: int
    ms: int


@dataclass(frozen=True, slots=True)
class LastRequest:
    """The figures of a role's last request (each None until a request of that kind ran)."""

    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    prompt_tokens: int | None = None
    evaluated_prompt_tokens: int | None = None
    cached_tokens: int | None = None
    route_reason: str | None = None
    images: int | None = None
    audio_seconds: float | None = None
    audio_tokens: int | None = None
    cameras: tuple[str, ...] | None = None
    speech_seconds: float | None = None
    speech_ms: float | None = None
    voice: str | None = None

    def present(self) -> dict[str, Any]:
        """The figures that exist (for state attributes)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One role, now."""

    role: str
    model: str
    state: str
    backend: str  # llama_cpp | transformers | remote
    capabilities: tuple[str, ...]  # what the role's model can do (capabilities.py), sorted
    pinned: bool
    estimate_mb: int
    rss_mb: int
    load_ms: float
    last_used: float
    queue: int
    crashes: int
    failures: int  # requests in a row that could not reach a server
    error: str | None = None
    error_key: str | None = None  # the EngineError key of the last failed load
    vision_error: str | None = None
    hearing: str | None = None  # how the role's library encodes audio (backends.base.Hears)
    repack: bool = False
    flash_attn: bool = False
    unusable_variants: dict[str, str] = field(default_factory=dict)
    voices: tuple[str, ...] = ()
    server: str | None = None  # the role's server without credentials, for a remote role (the one that answered)
    servers: tuple[str, ...] = ()  # all of the role's servers (more than one: the same model on each)
    standing_prompt: StandingPrompt | None = None
    last: LastRequest = LastRequest()

    @property
    def remote(self) -> bool:
        return self.server is not None

    def as_attributes(self) -> dict[str, Any]:
        """Every field under its public attribute name (docs/interface.md), the last request's flat."""
        data = {k: v for k, v in asdict(self).items() if k != "last"}
        data["capabilities"], data["voices"] = list(self.capabilities), list(self.voices)
        return data | {"remote": self.remote} | self.last.present()


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """The pool under its budget, and every role."""

    budget_mb: int
    used_mb: int
    used_pct: float
    measured_rss_mb: int
    peak_rss_mb: int  # the highest sum of worker RSS the memory watchdog sampled
    models: dict[str, ModelStatus]

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_mb": self.budget_mb,
            "used_mb": self.used_mb,
            "used_pct": self.used_pct,
            "measured_rss_mb": self.measured_rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "models": {role: status.as_attributes() for role, status in self.models.items()},
        }
