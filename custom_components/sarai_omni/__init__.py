"""Sarai Omni: local multimodal LLMs (llama.cpp) for Home Assistant's Assist.

The engine subpackage runs in worker processes without Home Assistant, and importing it must not
import Home Assistant (a worker would pay seconds and hundreds of MB for nothing). Python imports
this package's __init__ first, so it stays free of HA imports: Home Assistant's entry points live in
`integration.py` and are looked up here lazily (PEP 562) when the HA loader asks for them.
"""

from __future__ import annotations

from typing import Any

_ENTRY_POINTS = frozenset(
    {"CONFIG_SCHEMA", "async_setup", "async_setup_entry", "async_unload_entry", "async_migrate_entry"}
)


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        from . import integration  # noqa: PLC0415  (deferred on purpose, see the module docstring)

        return getattr(integration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
