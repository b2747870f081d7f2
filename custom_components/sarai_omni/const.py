"""Constants: the public contract's keys and the seed's defaults."""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "sarai_omni"
TITLE: Final = "Sarai Omni"

# Config entry data (contract: shared/notes/interface.md).
CONF_BACKEND: Final = "backend"  # entry version 1.2+; "llama_cpp" is the only backend so far
BACKEND_LLAMA_CPP: Final = "llama_cpp"
CONF_FAST_MODEL: Final = "fast_model"
CONF_FAST_MMPROJ: Final = "fast_mmproj"
CONF_QUALITY_MODEL: Final = "quality_model"
CONF_QUALITY_MMPROJ: Final = "quality_mmproj"
CONF_RAM_BUDGET_MB: Final = "ram_budget_mb"
CONF_N_THREADS: Final = "n_threads"
CONF_N_CTX: Final = "n_ctx"

# Options.
CONF_KV_TYPE: Final = "kv_type"
CONF_IDLE_UNLOAD_S: Final = "idle_unload_s"
CONF_REQUEST_TIMEOUT_S: Final = "request_timeout_s"
CONF_N_GPU_LAYERS: Final = "n_gpu_layers"
CONF_ROUTER_SHORT_CHARS: Final = "router_short_chars"
CONF_ROUTER_SOFT_THRESHOLD: Final = "router_soft_threshold"
KV_TYPES: Final = ("f16", "q8_0")

# Conversation subentry.
CONF_PROMPT: Final = "prompt"
CONF_MODEL_PREFERENCE: Final = "model"
CONF_MAX_TOKENS: Final = "max_tokens"
CONF_TEMPERATURE: Final = "temperature"

DEFAULT_RAM_BUDGET_MB: Final = 7680  # the seed's 7.5 GB for both models
DEFAULT_N_CTX: Final = 2048
QUALITY_N_CTX: Final = 8192  # the contract's default context of the quality model (images take tokens)
DEFAULT_KV_TYPE: Final = "f16"
DEFAULT_IDLE_UNLOAD_S: Final = 600
DEFAULT_REQUEST_TIMEOUT_S: Final = 300
DEFAULT_MAX_TOKENS: Final = 256
DEFAULT_TEMPERATURE: Final = 0.7
MODEL_PREFERENCES: Final = ("auto", "fast", "quality")

DEFAULT_CONVERSATION_NAME: Final = "Sarai Omni"
SUBENTRY_CONVERSATION: Final = "conversation"
SUBENTRY_AI_TASK: Final = "ai_task_data"
DEFAULT_AI_TASK_NAME: Final = "Sarai Omni AI Task"

# Config-flow only (never stored): fetch models from the hub instead of giving paths.
CONF_DOWNLOAD: Final = "download"
CONF_REPO_ID: Final = "repo_id"
CONF_FILENAME: Final = "filename"
CONF_REVISION: Final = "revision"
CONF_TARGET: Final = "target"
DOWNLOAD_NONE: Final = "none"
DOWNLOAD_HUB: Final = "hub"

# Where users put GGUF files, relative to the HA config directory.
MODELS_DIR: Final = "models"
SIGNAL_ENGINE_UPDATED: Final = f"{DOMAIN}_engine_updated"
