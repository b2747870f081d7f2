"""The one table of defaults (the seed's values). Read by the config flow, the HA entities, the
engine's request and model types and the worker, so a default is changed in one place."""

from __future__ import annotations

from typing import Final

# Generation.
TEMPERATURE: Final = 0.7
MAX_TOKENS: Final = 256
TOP_K: Final = 40
TOP_P: Final = 0.95
MIN_P: Final = 0.05
REPEAT_PENALTY: Final = 1.0
# AI Task and the analysis services: factual, longer structured answers.
TASK_TEMPERATURE: Final = 0.2
TASK_MAX_TOKENS: Final = 512

# Roles: the two the config flow makes (a role is any name; these are only the defaults' names).
FAST_ROLE: Final = "fast"  # pinned: the resident model that answers Assist
QUALITY_ROLE: Final = "quality"  # loaded on demand: images, video, audio, long analytical turns

# Models.
# The fast model's context. 4096, not the seed's 2048: with the Assist API on (the default agent's
# setting, like core's agents) the instructions and tool definitions alone take ~1.4k tokens with a
# Qwen tokenizer, and each exposed entity and tool result adds more.
N_CTX: Final = 4096
QUALITY_N_CTX: Final = 8192  # the contract's context of the quality model (images take tokens)
N_BATCH: Final = 512
N_THREADS: Final = 2  # only where no thread count is given at all; HA uses the physical cores
KV_TYPE: Final = "f16"
KV_TYPES: Final = ("f16", "q8_0")
# Speculative decoding by prompt lookup: off by default. Measured (docs/benchmarks.md): it loses on
# text it cannot draft (0.85 of plain decoding on gemma's bench text, 0.96 on the 4B shape's Assist
# replies) more than it wins where drafts are accepted (1.10 on gemma's free text); the self-measurement
# cannot tell soon enough on a busy 2-core CPU. An option switches it on.
PROMPT_LOOKUP: Final = False
# The longest side of a camera snapshot an Assist question about a camera sends (px). An Assist question
# ("is anyone at the door?") needs less than a detailed description (`analyze_image`, up to 1024 px):
# a Qwen-VL projector makes one token per 28x28 px, so 448 px of a 16:9 frame is 16x9 = 144 image
# tokens where 672 px was 24x14 = 336; measured in docs/benchmarks.md (*What a person waits for*).
CAMERA_IMAGE_SIZE: Final = 448

# Pool.
RAM_BUDGET_MB: Final = 7680  # the seed's 7.5 GB for both models
IDLE_UNLOAD_S: Final = 600
REQUEST_TIMEOUT_S: Final = 300
MAX_QUEUE: Final = 8  # requests waiting for one model; more are refused as busy (like Ollama)

# Router.
ROUTER_SHORT_CHARS: Final = 200
ROUTER_SOFT_THRESHOLD: Final = 0.8

# transformers/torch roles (a Hugging Face model folder).
# bfloat16 halves the weights (the 7B: 22 GiB instead of 42 GiB); float32 is exact, and faster on CPUs
# without bfloat16 instructions.
TORCH_DTYPE: Final = "bfloat16"
TORCH_DEVICE: Final = "cpu"
TORCH_QUANTIZATION: Final = "none"
TORCH_DTYPES: Final = ("float32", "bfloat16")
TORCH_DEVICES: Final = ("cpu", "cuda", "auto")
TORCH_QUANTIZATIONS: Final = ("none", "int8")
VOICE: Final = "Chelsie"  # Qwen2.5-Omni's default speaker
CLIP_VOICE: Final = "Sarai"  # the reference clip that ships with the integration: a Qwen3-TTS voice's default
VOICES: Final = (VOICE, CLIP_VOICE)  # each kind of talker's default voice, in order of preference
VOICE_BATCH: Final = 64  # a Qwen3-TTS talker's prompt tokens per batch (each position's logits come out)
VOICES_FOLDER: Final = "sarai_omni/voices"  # in HA's config folder: reference clips, one voice each
