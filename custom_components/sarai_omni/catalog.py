"""The seed models the config flow offers to download (Hugging Face hub GGUF repositories)."""

from __future__ import annotations

from typing import Final

from .const import CONF_FAST_MMPROJ, CONF_FAST_MODEL, CONF_QUALITY_MMPROJ, CONF_QUALITY_MODEL
from .download import HubFile

_FAST_REPO: Final = "unsloth/Qwen3-VL-4B-Instruct-GGUF"
_QUALITY_REPO: Final = "unsloth/Qwen2.5-Omni-7B-GGUF"

# Each download choice: the config field each file fills, and the file. Projectors come with
# their models: a VL model without its mmproj cannot see.
SEED_FAST: Final = (
    (CONF_FAST_MODEL, HubFile(_FAST_REPO, "Qwen3-VL-4B-Instruct-Q4_K_M.gguf")),
    (CONF_FAST_MMPROJ, HubFile(_FAST_REPO, "mmproj-F16.gguf")),
)
SEED_QUALITY: Final = (
    (CONF_QUALITY_MODEL, HubFile(_QUALITY_REPO, "Qwen2.5-Omni-7B-Q4_K_M.gguf")),
    (CONF_QUALITY_MMPROJ, HubFile(_QUALITY_REPO, "mmproj-F16.gguf")),
)
SEEDS: Final[dict[str, tuple[tuple[str, HubFile], ...]]] = {
    "seed_both": SEED_FAST + SEED_QUALITY,
    "seed_fast": SEED_FAST,
    "seed_quality": SEED_QUALITY,
}
