"""The timeline: what the cameras saw, remembered locally (SQLite and JPEG key frames). No HA imports."""

from ..engine.router import normalize
from .store import Event, Query, Retention, Timeline
from .words import LABELS, asks_what_was_seen, labels_in, title_of, window

__all__ = [
    "LABELS",
    "Event",
    "Query",
    "Retention",
    "Timeline",
    "asks_what_was_seen",
    "labels_in",
    "normalize",
    "title_of",
    "window",
]
