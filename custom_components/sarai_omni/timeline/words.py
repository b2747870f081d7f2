"""The timeline's words, deterministic in Spanish and English: labels an analysis names, an event's
title, and time words resolved to a window ("today", "this morning", "since 8", "ayer por la tarde").

Never left to a small model's arithmetic: the tool hands the words over, this module computes.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
import re

from ..engine.router import normalize  # the router's own: one way to fold accents

TITLE_CHARS = 60
# Canonical label -> the words (es + en, accents stripped) that name it.
LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "person": (
        "person", "persons", "people", "man", "men", "woman", "women", "child", "children", "kid", "kids",
        "boy", "girl", "someone", "somebody", "courier", "visitor", "persona", "personas", "gente", "hombre",
        "hombres", "mujer", "mujeres", "nino", "nina", "ninos", "ninas", "alguien", "repartidor", "visitante",
    ),
    "vehicle": (
        "car", "cars", "truck", "van", "vehicle", "vehicles", "motorcycle", "motorbike", "bicycle", "bike",
        "bus", "coche", "coches", "carro", "camion", "camioneta", "furgoneta", "vehiculo", "vehiculos", "moto",
        "motocicleta", "bicicleta", "autobus",
    ),
    "animal": (
        "animal", "animals", "dog", "dogs", "cat", "cats", "bird", "birds", "fox", "pet", "animales", "perro",
        "perros", "gato", "gatos", "pajaro", "pajaros", "ave", "aves", "zorro", "mascota",
    ),
    "package": ("package", "packages", "parcel", "parcels", "box", "boxes", "paquete", "paquetes", "caja", "cajas"),
}  # fmt: skip
LABELS = tuple(LABEL_WORDS)
_NEGATIONS = frozenset({"no", "not", "without", "never", "sin", "ningun", "ninguna", "ni", "nunca"})
_WORD = re.compile(r"[a-z0-9]+")


def labels_in(text: str) -> tuple[str, ...]:
    """The labels `text` names, in LABELS order; a word right after a negation does not count
    ("no people", "sin coches")."""
    words = _WORD.findall(normalize(text))
    found = set()
    for i, word in enumerate(words):
        if any(w in _NEGATIONS for w in words[max(0, i - 2) : i]):
            continue
        found |= {label for label, names in LABEL_WORDS.items() if word in names}
    return tuple(label for label in LABELS if label in found)


# Words of a question about what the cameras saw (besides the labels): cameras, happening, coming, seeing.
_SEEN = re.compile(
    r"\b(?:cameras?|camaras?|happen(?:ed|ing)?|pas(?:o|aba)|ocurr(?:io|ia)|came|arrived|vino|vinieron|llego|"
    r"llegaron|saw|seen|spotted|vio|vieron|visto|detect(?:ed)?|detecto)\b"
)


def asks_what_was_seen(text: str) -> bool:
    """Whether `text` is about what the cameras saw ("who came?", "¿qué pasó en el jardín?", "any cars?")."""
    return bool(_SEEN.search(normalize(text)) or labels_in(text))


def title_of(summary: str) -> str:
    """The first sentence of what the model wrote, cut at a word within TITLE_CHARS."""
    first = re.split(r"(?<=[.!?])\s", summary.strip(), maxsplit=1)[0].strip().rstrip(".")
    if len(first) <= TITLE_CHARS:
        return first or "-"
    return first[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "…"


# Parts of the day (start hour, end hour), by the words that name them.
_PARTS: tuple[tuple[tuple[str, ...], int, int], ...] = (
    (("morning", "manana"), 5, 12),
    (("afternoon",), 12, 18),
    (("tarde",), 12, 20),
    (("evening",), 18, 24),
    (("night", "tonight", "noche"), 20, 24),
)
_LAST = re.compile(r"\b(?:last|past|ultim[oa]s?)\s+(?:(\d+)\s*)?(hours?|horas?|minutes?|minutos?|days?|dias?)\b")
_SINCE = re.compile(r"\b(?:since|desde (?:las|la))\s+(\d{1,2})(?::(\d{2}))?\b")


def window(text: str, now: datetime) -> tuple[datetime, datetime] | None:
    """The time window `text` speaks of, in `now`'s time zone (aware); None when it names none."""
    norm = normalize(text)
    midnight = datetime.combine(now.date(), time(), now.tzinfo)
    if match := _SINCE.search(norm):
        start = midnight.replace(hour=min(int(match[1]), 23), minute=int(match[2] or 0))
        return (start - timedelta(days=1) if start > now else start), now
    if match := _LAST.search(norm):
        return now - _span(match), now
    day = midnight - timedelta(days=1) if re.search(r"\b(?:yesterday|ayer)\b", norm) else None
    for names, first, last in _PARTS:
        if re.search(r"\b(?:" + "|".join(names) + r")\b", norm):
            base = day or midnight
            start, end = base + timedelta(hours=first), base + timedelta(hours=last)
            return start, min(end, now) if end > now >= start else end
    if day is not None:
        return day, midnight
    if re.search(r"\b(?:today|hoy)\b", norm):
        return midnight, now
    if re.search(r"\b(?:this week|esta semana)\b", norm):
        return midnight - timedelta(days=now.weekday()), now
    return None


def _span(match: re.Match[str]) -> timedelta:
    count, unit = int(match[1] or 1), match[2]
    if unit.startswith(("hour", "hora")):
        return timedelta(hours=count)
    if unit.startswith(("min",)):
        return timedelta(minutes=count)
    return timedelta(days=count)
