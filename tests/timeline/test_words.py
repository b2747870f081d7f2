"""The timeline's words: labels named, titles, and time words resolved to windows (es + en)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from custom_components.sarai_omni.timeline import asks_what_was_seen, labels_in, title_of, window

TZ = timezone(timedelta(hours=1))
NOW = datetime(2026, 12, 7, 15, 30, tzinfo=TZ)  # a Monday afternoon


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=TZ)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("A man walks a dog past a parked car.", ("person", "vehicle", "animal")),
        ("Un repartidor deja un paquete en la puerta.", ("person", "package")),
        ("No people, no cars: only a cat on the wall.", ("animal",)),  # what is denied is not named
        ("Sin personas ni coches; un gato en el muro.", ("animal",)),
        ("The garden is empty and quiet.", ()),
        ("Una furgoneta blanca y dos niños en bicicleta.", ("person", "vehicle")),
    ],
)
def test_labels_are_what_the_summary_names(text: str, labels: tuple[str, ...]) -> None:
    assert labels_in(text) == labels


def test_titles_are_the_first_sentence_within_sixty_characters() -> None:
    assert title_of("A person at the door. They leave a box.") == "A person at the door"
    long = title_of("A delivery person leaves a box at the front door and walks back to a white van outside.")
    assert long == "A delivery person leaves a box at the front door and walks…"
    assert len(long) <= 61
    assert title_of("   ") == "-"


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("what happened today?", at(7, 0), NOW),
        ("¿qué pasó hoy en el jardín?", at(7, 0), NOW),
        ("who came this morning?", at(7, 5), at(7, 12)),
        ("¿quién vino esta mañana?", at(7, 5), at(7, 12)),
        ("¿y esta tarde?", at(7, 12), NOW),  # the afternoon so far
        ("anything yesterday?", at(6, 0), at(7, 0)),
        ("¿quién vino ayer por la tarde?", at(6, 12), at(6, 20)),
        ("yesterday evening", at(6, 18), at(7, 0)),
        ("since 8", at(7, 8), NOW),
        ("desde las 9:15", at(7, 9, 15), NOW),
        ("since 18:00", at(6, 18), NOW),  # later than now: yesterday's
        ("in the last 2 hours", NOW - timedelta(hours=2), NOW),
        ("en la última hora", NOW - timedelta(hours=1), NOW),
        ("últimos 30 minutos", NOW - timedelta(minutes=30), NOW),
        ("this week", at(7, 0), NOW),
    ],
)
def test_time_words_resolve_deterministically(text: str, start: datetime, end: datetime) -> None:
    assert window(text, NOW) == (start, end)


def test_no_time_words_no_window() -> None:
    assert window("who was at the door?", NOW) is None
    assert window("", NOW) is None


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("what happened on the garden camera today?", True),
        ("¿quién vino ayer por la tarde?", True),
        ("¿qué pasó esta mañana en la entrada?", True),
        ("any cars since 8?", True),  # a label
        ("turn on the kitchen light", False),
        ("write me a long analysis of today's energy use", False),  # time words, but not about the cameras
    ],
)
def test_questions_about_what_the_cameras_saw(text: str, asks: bool) -> None:
    assert asks_what_was_seen(text) is asks
