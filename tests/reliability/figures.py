"""Figures the reliability suite measures, gathered for docs/reliability.md.

Each test records what it measured; at the end of the session they are written as JSON to
`$SARAI_RELIABILITY_FIGURES` when it is set (scripts/reliability sets it), and printed either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    """Keep the worst value seen under `name` for numbers (max), the last one otherwise."""
    old = FIGURES.get(name)
    FIGURES[name] = max(old, value) if isinstance(old, int | float) and isinstance(value, int | float) else value


def write() -> None:
    if not FIGURES:
        return
    print("\nreliability figures:", json.dumps(FIGURES, sort_keys=True))
    if target := os.environ.get("SARAI_RELIABILITY_FIGURES"):
        path = Path(target)
        known = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**known, **FIGURES}, indent=1, sort_keys=True) + "\n")
