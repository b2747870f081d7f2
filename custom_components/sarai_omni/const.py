"""Constants: the public contract's keys and the seed's defaults."""

from __future__ import annotations

from typing import Final

from . import engine
from .engine import defaults

DOMAIN: Final = "sarai_omni"
TITLE: Final = "Sarai Omni"

# Config entry data: what setup decides for the whole engine (contract: docs/interface.md).
CONF_RAM_BUDGET_MB: Final = "ram_budget_mb"
CONF_N_THREADS: Final = "n_threads"

# Model roles: one subentry each (type SUBENTRY_MODEL, unique_id = the role's name). Its data: the
# role's name, which backend runs it, its model (a GGUF file and projector, a model folder, or a
# server's model), its context and batch, and whether it stays loaded.
SUBENTRY_MODEL: Final = "model"
CONF_ROLE: Final = "role"
CONF_BACKEND: Final = "backend"
CONF_MODEL_PATH: Final = "model_path"
CONF_MMPROJ_PATH: Final = "mmproj_path"
CONF_SERVER: Final = "server"  # {url, api_key, model, vision, audio, more_urls?}
CONF_N_CTX: Final = "n_ctx"
CONF_N_BATCH: Final = "n_batch"
CONF_PINNED: Final = "pinned"
CONF_URL: Final = "url"
CONF_MORE_URLS: Final = "more_urls"  # more servers of the same model (optional)
CONF_API_KEY: Final = "api_key"
CONF_REMOTE_MODEL: Final = "model"
CONF_VISION: Final = "vision"
CONF_AUDIO: Final = "audio"
BACKEND_LLAMA_CPP: Final = engine.BACKEND_LLAMA_CPP
BACKEND_TRANSFORMERS: Final = engine.BACKEND_TRANSFORMERS
BACKEND_REMOTE: Final = engine.BACKEND_REMOTE

# The setup form's fields (contract): the two default roles' models. Also the stored keys of entries
# before version 1.4 (migrations read them): data[fast_model], ..., data["remote"][role],
# data["role_backends"][role], options[fast_n_batch].
CONF_FAST_MODEL: Final = "fast_model"
CONF_FAST_MMPROJ: Final = "fast_mmproj"
CONF_QUALITY_MODEL: Final = "quality_model"
CONF_QUALITY_MMPROJ: Final = "quality_mmproj"
OLD_REMOTE: Final = "remote"
OLD_ROLE_BACKENDS: Final = "role_backends"
OLD_FAST_N_BATCH: Final = "fast_n_batch"
OLD_QUALITY_N_BATCH: Final = "quality_n_batch"

# Options: tuning that needs no new files (every one optional; the defaults below).
CONF_KV_TYPE: Final = "kv_type"
CONF_IDLE_UNLOAD_S: Final = "idle_unload_s"
CONF_REQUEST_TIMEOUT_S: Final = "request_timeout_s"
CONF_N_GPU_LAYERS: Final = "n_gpu_layers"
CONF_ROUTER_SHORT_CHARS: Final = "router_short_chars"
CONF_ROUTER_SOFT_THRESHOLD: Final = "router_soft_threshold"
CONF_PROMPT_LOOKUP: Final = "prompt_lookup"
CONF_CAMERA_IMAGE_SIZE: Final = "camera_image_size"  # px, longest side of a snapshot an Assist turn asks about
CONF_TIMELINE_DAYS: Final = "timeline_days"
CONF_TIMELINE_MAX_EVENTS: Final = "timeline_max_events"
CONF_TIMELINE_MAX_MB: Final = "timeline_max_mb"
# transformers roles (options): the torch venv's interpreter, dtype, device, weight quantization.
CONF_TORCH_PYTHON: Final = "torch_python"
CONF_TORCH_DTYPE: Final = "torch_dtype"
CONF_TORCH_DEVICE: Final = "torch_device"
CONF_TORCH_QUANTIZATION: Final = "torch_quantization"
KV_TYPES: Final = defaults.KV_TYPES

# Conversation subentry.
CONF_PROMPT: Final = "prompt"
CONF_MODEL_PREFERENCE: Final = "model"
CONF_MAX_TOKENS: Final = "max_tokens"
CONF_TEMPERATURE: Final = "temperature"

# The seed's defaults, from the engine's one table (engine/defaults.py).
DEFAULT_RAM_BUDGET_MB: Final = defaults.RAM_BUDGET_MB
DEFAULT_N_CTX: Final = defaults.N_CTX
DEFAULT_N_BATCH: Final = defaults.N_BATCH
QUALITY_N_CTX: Final = defaults.QUALITY_N_CTX
DEFAULT_KV_TYPE: Final = defaults.KV_TYPE
DEFAULT_IDLE_UNLOAD_S: Final = defaults.IDLE_UNLOAD_S
DEFAULT_REQUEST_TIMEOUT_S: Final = defaults.REQUEST_TIMEOUT_S
DEFAULT_MAX_TOKENS: Final = defaults.MAX_TOKENS
DEFAULT_TEMPERATURE: Final = defaults.TEMPERATURE
DEFAULT_TASK_MAX_TOKENS: Final = defaults.TASK_MAX_TOKENS
DEFAULT_TASK_TEMPERATURE: Final = defaults.TASK_TEMPERATURE
DEFAULT_ROUTER_SHORT_CHARS: Final = defaults.ROUTER_SHORT_CHARS
DEFAULT_ROUTER_SOFT_THRESHOLD: Final = defaults.ROUTER_SOFT_THRESHOLD
FAST: Final = defaults.FAST_ROLE  # the two roles the setup form makes
QUALITY: Final = defaults.QUALITY_ROLE
DEFAULT_ROLES: Final = (FAST, QUALITY)  # their names are translated; any other role shows its own
AUTO: Final = "auto"  # let the router choose (agents, services)
MODEL_PREFERENCES: Final = (AUTO, FAST, QUALITY)  # what the selectors list (any configured role is accepted)

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
CONF_REMOTE_ROLES: Final = "remote_roles"  # which roles the form sends to a server
DOWNLOAD_NONE: Final = "none"
DOWNLOAD_HUB: Final = "hub"

# Repair issues (translations: issues.<id>).
ISSUE_BACKEND_MISSING: Final = "llama_cpp_missing"
ISSUE_BACKEND_UNUSABLE: Final = "llama_cpp_unusable"
ISSUE_MODEL_MISSING: Final = "model_missing"
ISSUE_BUDGET: Final = "budget_too_small"
ISSUE_CRASH_LOOP: Final = "crash_loop"
ISSUE_REMOTE_DOWN: Final = "remote_unreachable"
ISSUE_CONTEXT: Final = "context_too_small"  # the standing prompt outgrew a role's n_ctx
ISSUE_TIMELINE_CORRUPT: Final = "timeline_corrupt"  # the database was moved aside
ISSUE_TIMELINE_NOT_SAVED: Final = "timeline_not_saved"  # its folder cannot be written: kept in memory
ISSUE_TORCH_MISSING: Final = "torch_missing"  # a transformers role, and its Python cannot import torch
REMOTE_DOWN_AFTER: Final = 3  # failed requests in a row before a server counts as down

# Where users put GGUF files, relative to the HA config directory.
MODELS_DIR: Final = "models"
SIGNAL_ENGINE_UPDATED: Final = f"{DOMAIN}_engine_updated"
SIGNAL_TIMELINE_UPDATED: Final = f"{DOMAIN}_timeline_updated"
