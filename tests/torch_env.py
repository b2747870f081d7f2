"""The torch venv (made by scripts/setup, outside the clone) and the tiny Qwen2.5-Omni written with it.

torch lives only there: HA's venv never imports it. The tiny model is written by that venv's Python
(tests/tiny_omni.py) with the GGUF fixtures' own tokenizer and chat template.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import tempfile

from tests.tiny_models import CHATML_TEMPLATE, SPECIAL_TOKENS, USER_TOKENS, vocabulary

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SARAI_CACHE", Path.home() / ".cache" / "sarai_omni"))
TORCH_VENV = CACHE / "torch-venv"
MISSING = "no torch venv: scripts/setup makes it (torch 2.13.0 CPU from this machine's disk, Python 3.11)"


def torch_python() -> Path | None:
    """The torch venv's interpreter, when setup could make it."""
    python = Path(os.environ.get("SARAI_TORCH_PYTHON", TORCH_VENV / "bin" / "python"))
    return python if python.is_file() and (TORCH_VENV / ".sarai-installed").is_file() else None


def write_tiny_omni(folder: Path, python: Path, seed: int = 0) -> Path:
    """A tiny random-weight Qwen2.5-Omni (thinker + talker + token2wav) in HF layout, in `folder`."""
    tokens, _, merges = vocabulary()
    spec = {"tokens": tokens, "merges": merges, "special": [*SPECIAL_TOKENS, *USER_TOKENS],
            "chat_template": CHATML_TEMPLATE}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        subprocess.run(
            [str(python), str(ROOT / "tests" / "tiny_omni.py"), str(folder), f.name, str(seed)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    finally:
        Path(f.name).unlink()
    return folder
