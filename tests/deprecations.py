"""Every HA deprecation this integration triggers, caught so the suite fails on it.

Home Assistant reports a deprecated use in three ways, each for the integration it finds on the
call stack: `helpers.frame.report_usage` (config entries, chat log, LLM tools, ...), the
`helpers.deprecation` decorators and constants, and plain `DeprecationWarning`s. The guard listens
to all three (and to any warning log line that names this integration and says "deprecated" or
"will stop working"), so the next break is caught here before a user meets it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
import logging
from pathlib import Path
import traceback
from typing import Any
import warnings

from homeassistant.helpers import deprecation, frame

DOMAIN = "sarai_omni"
PACKAGE = Path(__file__).resolve().parents[1] / "custom_components" / DOMAIN
HA_PACKAGE = Path(frame.__file__).resolve().parents[1]
WORDS = ("deprecated", "will stop working")


def _ours(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(PACKAGE)


def _on_stack() -> bool:
    return any(_ours(f.filename) for f in traceback.extract_stack())


class _Logged(logging.Handler):
    def __init__(self, found: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if DOMAIN in text and any(w in text.lower() for w in WORDS):
            self.found.append(f"log: {text}")


@contextmanager
def deprecation_guard() -> Iterator[list[str]]:
    """Yield the list that collects what the integration triggered (empty when nothing)."""
    found: list[str] = []
    report = frame._report_usage
    print_deprecation = deprecation._print_deprecation_warning_internal_impl

    def reported(hass: Any, what: str, **kwargs: Any) -> None:
        where = kwargs.get("integration_frame")
        if kwargs.get("integration_domain") == DOMAIN or (where is not None and where.integration == DOMAIN):
            found.append(f"report_usage: {what} (breaks in {kwargs.get('breaks_in_ha_version')})")
        report(hass, what, **kwargs)

    def printed(obj_name: str, module_name: str, replacement: str, description: str, *args: Any, **kw: Any) -> None:
        if _on_stack():
            found.append(f"deprecated {description} {obj_name} ({module_name}); use {replacement}")
        print_deprecation(obj_name, module_name, replacement, description, *args, **kw)

    shown: Callable[..., None] = warnings.showwarning

    def warned(message: Warning | str, category: type[Warning], filename: str, lineno: int, *a: Any) -> None:
        deprecated = issubclass(category, DeprecationWarning | PendingDeprecationWarning)
        from_ha = Path(filename).resolve().is_relative_to(HA_PACKAGE)
        if deprecated and (_ours(filename) or (from_ha and _on_stack())):
            found.append(f"{category.__name__}: {message} ({filename}:{lineno})")
        shown(message, category, filename, lineno, *a)

    handler = _Logged(found)
    logging.getLogger().addHandler(handler)
    frame._report_usage = reported
    deprecation._print_deprecation_warning_internal_impl = printed
    warnings.showwarning = warned  # type: ignore[assignment]
    try:
        yield found
    finally:
        warnings.showwarning = shown
        deprecation._print_deprecation_warning_internal_impl = print_deprecation
        frame._report_usage = report
        logging.getLogger().removeHandler(handler)
