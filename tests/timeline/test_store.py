"""The timeline store on a real SQLite file: queries, retention with the images, many writers at
once, and a corrupt database moved aside."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlite3

import pytest

from custom_components.sarai_omni.timeline import Event, Query, Retention, Timeline

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 1000


def event(minutes_ago: float, camera: str | None = "camera.garden", summary: str = "A cat.", **extra: object) -> Event:
    start = NOW - timedelta(minutes=minutes_ago)
    fields: dict[str, object] = {
        "start": start, "end": start + timedelta(seconds=5), "camera": camera, "source": camera or "clip.mp4",
        "title": summary.rstrip("."), "summary": summary, "labels": ("animal",), "role": "fast", "model": "m.gguf",
    }  # fmt: skip
    return Event(**{**fields, **extra})  # type: ignore[arg-type]


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[Timeline]]:
    """Every store a test opens, closed after it."""
    stores: list[Timeline] = []
    yield stores
    for store in stores:
        store.close()


def open_in(folder: Path, opened: list[Timeline]) -> Timeline:
    opened.append(Timeline.open(folder))
    return opened[-1]


def test_events_come_back_newest_first_and_filtered(tmp_path: Path) -> None:
    timeline = Timeline.open(tmp_path)
    old = timeline.add(event(90, summary="Un repartidor deja un paquete.", labels=("person", "package")), JPEG)
    cat = timeline.add(event(30))
    door = timeline.add(event(10, camera="camera.door", summary="A man at the door.", labels=("person",)))
    assert [e.id for e in timeline.events(Query())] == [door.id, cat.id, old.id]
    assert [e.id for e in timeline.events(Query(camera="camera.garden"))] == [cat.id, old.id]
    assert [e.id for e in timeline.events(Query(labels=("person",)))] == [door.id, old.id]
    assert [e.id for e in timeline.events(Query(words="PAQUETE"))] == [old.id]  # case and accents ignored
    assert [e.id for e in timeline.events(Query(start=NOW - timedelta(minutes=60), end=NOW))] == [door.id, cat.id]
    assert [e.id for e in timeline.events(Query(limit=1))] == [door.id]
    stored = timeline.get(old.id)
    assert stored == old
    assert stored.image == f"{old.id}.jpg"
    assert stored.bytes == len(JPEG)
    assert timeline.image_path(stored).read_bytes() == JPEG  # type: ignore[union-attr]
    timeline.close()
    reopened = Timeline.open(tmp_path)  # what a restart finds
    timeline = reopened
    assert reopened.size == 3
    assert reopened.recovered is None
    assert reopened.get(door.id) == door
    timeline.close()


def test_retention_removes_events_and_their_images(tmp_path: Path, opened: list[Timeline]) -> None:
    timeline = open_in(tmp_path, opened)
    ancient = timeline.add(event(60 * 24 * 40), JPEG)  # 40 days old
    recent = [timeline.add(event(m), JPEG) for m in (5, 4, 3, 2, 1)]
    assert timeline.prune(Retention(days=30), NOW) == 1
    assert timeline.get(ancient.id) is None
    assert not (tmp_path / "timeline" / f"{ancient.id}.jpg").exists()
    assert timeline.prune(Retention(max_events=3), NOW) == 2  # the oldest two go
    assert [e.id for e in timeline.events(Query())] == [e.id for e in reversed(recent[2:])]
    assert sorted(p.name for p in (tmp_path / "timeline").iterdir()) == sorted(f"{e.id}.jpg" for e in recent[2:])
    assert timeline.size == 3


def test_the_image_budget_keeps_the_newest(tmp_path: Path, opened: list[Timeline]) -> None:
    timeline = open_in(tmp_path, opened)
    big = b"\xff\xd8" + b"\0" * (600 * 1024)
    kept = [timeline.add(event(m), big) for m in (3, 2, 1)]
    assert timeline.prune(Retention(max_mb=1), NOW) == 2  # 1 MB holds one 600 kB frame
    assert [e.id for e in timeline.events(Query())] == [kept[-1].id]


def test_many_writers_at_once_lose_nothing(tmp_path: Path, opened: list[Timeline]) -> None:
    timeline = open_in(tmp_path, opened)
    with ThreadPoolExecutor(max_workers=8) as pool:
        added = list(pool.map(lambda i: timeline.add(event(i), JPEG), range(50)))
    assert timeline.size == 50
    assert {e.id for e in timeline.events(Query(limit=100))} == {e.id for e in added}


def test_a_corrupt_database_is_moved_aside_and_a_fresh_one_made(tmp_path: Path, opened: list[Timeline]) -> None:
    Timeline.open(tmp_path).close()
    (tmp_path / "timeline.db").write_bytes(b"this is not a database" * 500)
    timeline = open_in(tmp_path, opened)
    assert timeline.recovered is not None
    assert timeline.recovered.read_bytes().startswith(b"this is not a database")
    assert timeline.size == 0
    timeline.add(event(1))
    assert timeline.size == 1


def test_a_newer_schema_is_not_read_as_this_one(tmp_path: Path, opened: list[Timeline]) -> None:
    Timeline.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "timeline.db") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()  # the context manager commits, it does not close
    timeline = open_in(tmp_path, opened)
    assert timeline.recovered is not None  # kept aside for the release that wrote it


def test_a_temporary_store_leaves_nothing_behind() -> None:
    timeline = Timeline.open_temporary()
    timeline.add(event(1), JPEG)
    assert timeline.size == 1
    folder = timeline.folder
    timeline.close()
    assert not folder.exists()
