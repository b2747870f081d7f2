"""The timeline's storage: events in SQLite, their key frames as JPEG files beside it. No HA imports.

Every method blocks (file and database I/O): the HA layer calls them in the executor. One connection
behind one lock serialises writers, so any number of analyses remembered at once are all stored; WAL
keeps readers off the writer's back. A database that cannot be opened or fails its integrity check
is moved aside (`timeline.db.corrupt-<time>`) and a fresh one is made: `Timeline.recovered` names the
moved file, so the HA layer can raise a repair issue, and setup never fails because of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
import json
import logging
from pathlib import Path
import shutil
import sqlite3
import tempfile
import threading
import time
from typing import Any
import uuid

from ..engine.router import normalize

_LOGGER = logging.getLogger(__name__)
SCHEMA_VERSION = 1
DB_NAME = "timeline.db"
IMAGES = "timeline"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS events ("
    " id TEXT PRIMARY KEY, start REAL NOT NULL, end REAL NOT NULL, camera TEXT, source TEXT NOT NULL,"
    " title TEXT NOT NULL, summary TEXT NOT NULL, labels TEXT NOT NULL, role TEXT NOT NULL,"
    " model TEXT NOT NULL, image TEXT, bytes INTEGER NOT NULL DEFAULT 0, search TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_start ON events (start)",
)
_COLUMNS = "id, start, end, camera, source, title, summary, labels, role, model, image, bytes"
# Newest first, each row with how many events and image bytes are at least as new: what falls outside.
_PRUNE = (
    "SELECT id, image, bytes FROM (SELECT id, image, bytes, start, ROW_NUMBER() OVER w AS n, SUM(bytes) OVER w AS total"
    " FROM events WINDOW w AS (ORDER BY start DESC ROWS UNBOUNDED PRECEDING))"
    " WHERE start < ? OR n > ? OR total > ?"
)


@dataclass(frozen=True, slots=True)
class Event:
    """One remembered analysis."""

    start: datetime  # aware, UTC
    end: datetime
    camera: str | None  # the camera entity it looked through (None: a file)
    source: str  # the camera entity id, or the file's name
    title: str
    summary: str  # what the model wrote
    labels: tuple[str, ...]  # person, vehicle, animal, package, ... (labels.py)
    role: str  # the role that saw it, and its model
    model: str
    image: str | None = None  # the key frame's file name under the images folder
    bytes: int = 0  # what the key frame takes on disk
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class Retention:
    """What is kept: events younger than `days`, at most `max_events`, images within `max_mb`."""

    days: int = 30
    max_events: int = 10_000
    max_mb: int = 500


@dataclass(frozen=True, slots=True)
class Query:
    """What `Timeline.events` returns: a window, a camera, labels (any of them) and words (all of them)."""

    start: datetime | None = None
    end: datetime | None = None
    camera: str | None = None
    labels: tuple[str, ...] = ()
    words: str = ""
    limit: int = 20


@dataclass(slots=True)
class Timeline:
    """The open store. `recovered`: where a corrupt database was moved at open (None: it was fine)."""

    folder: Path
    conn: sqlite3.Connection
    recovered: Path | None = None
    temporary: bool = False  # in a temporary folder, gone at close (the real one cannot be written)
    size: int = 0  # events stored now (read without a query: the Assist tool is offered only then)
    stored_bytes: int = 0  # their key frames' bytes
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, folder: Path) -> Timeline:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / IMAGES).mkdir(exist_ok=True)
        path, recovered = folder / DB_NAME, None
        try:
            conn = _connect(path)
        except sqlite3.DatabaseError as err:
            recovered = path.with_name(f"{DB_NAME}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            _LOGGER.warning("The timeline database %s is unreadable (%s): moved to %s", path, err, recovered)
            for suffix in ("", "-wal", "-shm"):
                if (old := Path(f"{path}{suffix}")).exists():
                    old.replace(Path(f"{recovered}{suffix}"))
            conn = _connect(path)
        size, stored = conn.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events").fetchone()
        return cls(folder, conn, recovered, size=int(size), stored_bytes=int(stored))

    @classmethod
    def open_temporary(cls) -> Timeline:
        """A store for this run only, where the real folder cannot be written (a read-only or full disk)."""
        timeline = cls.open(Path(tempfile.mkdtemp(prefix="sarai_omni_timeline_")))
        timeline.temporary = True
        return timeline

    def close(self) -> None:
        with self.lock:
            self.conn.close()
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    def image_path(self, event: Event) -> Path | None:
        return self.folder / IMAGES / event.image if event.image else None

    def add(self, event: Event, jpeg: bytes | None = None) -> Event:
        """Store `event` (its key frame written first, so a stored event never names a missing file)."""
        if jpeg:
            name = f"{event.id}.jpg"
            (self.folder / IMAGES / name).write_bytes(jpeg)
            event = replace(event, image=name, bytes=len(jpeg))
        row = (
            event.id, event.start.timestamp(), event.end.timestamp(), event.camera, event.source, event.title,
            event.summary, json.dumps(list(event.labels)), event.role, event.model, event.image, event.bytes,
            normalize(f"{event.title} {event.summary} {event.source} {' '.join(event.labels)}"),
        )  # fmt: skip
        with self.lock, self.conn:
            self.conn.execute(f"INSERT INTO events ({_COLUMNS}, search) VALUES ({','.join('?' * 13)})", row)
            self.size += 1
            self.stored_bytes += event.bytes
        return event

    def get(self, event_id: str) -> Event | None:
        with self.lock:
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return _event(row) if row else None

    def events(self, query: Query) -> list[Event]:
        """Newest first."""
        where, args = _where(query)
        sql = f"SELECT {_COLUMNS} FROM events{where} ORDER BY start DESC LIMIT ?"
        with self.lock:
            rows = self.conn.execute(sql, (*args, query.limit)).fetchall()
        return [_event(r) for r in rows]

    def prune(self, retention: Retention, now: datetime | None = None) -> int:
        """Remove what `retention` does not keep (oldest first), with their images. Returns how many."""
        cutoff = ((now or datetime.now(UTC)) - timedelta(days=retention.days)).timestamp()
        budget = retention.max_mb * 2**20
        with self.lock, self.conn:
            oldest = self.conn.execute("SELECT MIN(start) FROM events").fetchone()[0]  # the index answers
            if (
                self.size <= retention.max_events
                and self.stored_bytes <= budget
                and (oldest is None or oldest >= cutoff)
            ):
                return 0  # nothing to drop: no scan
            gone = self.conn.execute(_PRUNE, (cutoff, retention.max_events, budget)).fetchall()
            self.conn.executemany("DELETE FROM events WHERE id = ?", [(event_id,) for event_id, _, _ in gone])
            self.size -= len(gone)
            self.stored_bytes -= sum(size for _, _, size in gone)
        for _, image, _ in gone:
            if image:
                (self.folder / IMAGES / image).unlink(missing_ok=True)
        return len(gone)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    try:
        if (ok := conn.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {ok}")
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            _migrate(conn)
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema migrations, one step per version (none yet beyond 1); a newer schema is refused."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"schema {version} is newer than this release's {SCHEMA_VERSION}")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))


def _where(query: Query) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if query.start is not None:
        clauses.append("end >= ?")
        args.append(query.start.timestamp())
    if query.end is not None:
        clauses.append("start < ?")
        args.append(query.end.timestamp())
    if query.camera:
        clauses.append("camera = ?")
        args.append(query.camera)
    if query.labels:
        clauses.append("(" + " OR ".join("labels LIKE ?" for _ in query.labels) + ")")
        args.extend(f'%"{label}"%' for label in query.labels)
    for word in normalize(query.words).split():
        clauses.append("search LIKE ?")
        args.append(f"%{word}%")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _event(row: tuple[Any, ...]) -> Event:
    event_id, start, end, camera, source, title, summary, labels, role, model, image, size = row
    return Event(
        id=event_id, start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(end, UTC), camera=camera,
        source=source, title=title, summary=summary, labels=tuple(json.loads(labels)), role=role, model=model,
        image=image, bytes=size,
    )  # fmt: skip
