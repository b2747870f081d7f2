"""What remembering an analysis costs: the key frame, the stored event, the disk, and a search.

    python -m benchmarks.timeline [--out docs/benchmarks]   (last line: the summary as JSON)

Measured in one run on a real SQLite file: a 672x378 camera snapshot (what camera analyses send;
synthetic: gradients, shapes and sensor noise, so JPEG sizes are photo-like) becomes the 320 px key
frame; events are added as the HA layer adds them (key frame written, row inserted, retention
applied); the disk is the database and the images per event; a search is `get_events` for the newest
20, with a camera and a word, over 1,000 and 10,000 events. The floor it is compared to is what the
remembered thing itself costs: the analysis (docs/benchmarks.md: a camera question on the 7B shape,
44.6 s to the first token on 2 threads).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
import io
from pathlib import Path
import random
import statistics
import tempfile
import time
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from benchmarks.common import save
from custom_components.sarai_omni.timeline import Event, Query, Retention, Timeline
from custom_components.sarai_omni.vision import to_jpeg

ANALYSIS_FLOOR_MS = 44_600  # the 7B camera question this remembers (docs/benchmarks.md)
SUMMARY = "A delivery person in a blue jacket leaves a parcel by the front door and walks back to a white van."


def snapshot(seed: int) -> bytes:
    """A photo-like 672x378 frame: a sky-to-ground gradient, a few shapes, blur and noise."""
    rng = random.Random(seed)
    img = Image.linear_gradient("L").resize((672, 378)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(672), rng.randrange(378)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 150)), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    noise = Image.effect_noise((672, 378), 24).convert("RGB")
    img = Image.blend(img, noise, 0.12)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def _event(i: int, now: datetime) -> Event:
    start = now - timedelta(minutes=i)
    camera = f"camera.cam_{i % 4}"
    labels = ("person", "vehicle", "package")
    return Event(start, start + timedelta(seconds=30), camera, camera, SUMMARY[:60], SUMMARY, labels, "quality", "7b")


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "min": round(min(samples), 3),
        "median": round(statistics.median(samples), 3),
        "max": round(max(samples), 3),
    }


def measure(folder: Path, events: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    frames = [snapshot(i) for i in range(8)]
    key_ms, adds_ms, late_ms, key_bytes = [], [], [], []
    timeline = Timeline.open(folder)
    searches: dict[str, dict[str, float]] = {}
    for i in range(events):
        frame = frames[i % len(frames)]
        started = time.perf_counter()
        key = to_jpeg(frame, 320, "snapshot")
        made = time.perf_counter()
        timeline.add(_event(i, now), key)
        timeline.prune(Retention(days=3650, max_events=1_000_000, max_mb=100_000), now)
        done = time.perf_counter()
        if i < 200:  # the first 200: what each remembered analysis pays
            key_ms.append((made - started) * 1000)
            adds_ms.append((done - made) * 1000)
        elif i >= events - 200:  # ... and the last 200, with the store full
            late_ms.append((done - made) * 1000)
        key_bytes.append(len(key))
        if i + 1 in (1_000, 10_000):
            searches[str(i + 1)] = _search(timeline)
    timeline.close()
    db = sum(p.stat().st_size for p in folder.glob("timeline.db*"))
    images = sum(p.stat().st_size for p in (folder / "timeline").iterdir())
    return {
        "events": events,
        "snapshot_bytes": statistics.median(len(f) for f in frames),
        "key_frame_ms": _ms(key_ms),
        "store_ms": _ms(adds_ms),
        "store_ms_full": _ms(late_ms),
        "key_frame_bytes": round(statistics.median(key_bytes)),
        "db_bytes_per_event": round(db / events),
        "disk_bytes_per_event": round((db + images) / events),
        "search_ms": searches,
        "analysis_floor_ms": ANALYSIS_FLOOR_MS,
    }


def _search(timeline: Timeline) -> dict[str, float]:
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        timeline.events(Query(camera="camera.cam_1", words="parcel", limit=20))
        samples.append((time.perf_counter() - started) * 1000)
    return _ms(samples)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    parts = {"key frame": result["key_frame_ms"]["median"], "store + retention": result["store_ms"]["median"]}
    left.bar(list(parts), list(parts.values()), color=["#4a90d9", "#7fb77e"])
    left.set_ylabel("ms per remembered analysis (median)")
    left.set_title(f"vs the analysis itself: {ANALYSIS_FLOOR_MS / 1000:.1f} s")
    counts = list(result["search_ms"])
    right.plot([int(c) for c in counts], [result["search_ms"][c]["median"] for c in counts], marker="o")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("events stored")
    right.set_ylabel("get_events ms (median)")
    right.set_title("search: a camera and a word, newest 20")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(Path(folder), args.events)
    save(args.out, "timeline", result, plot)


if __name__ == "__main__":
    main()
