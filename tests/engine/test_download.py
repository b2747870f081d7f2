"""Hub downloads against a fake hub on 127.0.0.1: progress, resume, verification, errors, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import hashlib
from pathlib import Path
import random
import shutil
import threading
from typing import Any

import aiohttp
import pytest

from custom_components.sarai_omni import download as dl
from custom_components.sarai_omni.download import (
    DEFAULT_ENDPOINT,
    DownloadError,
    HubFile,
    download,
    fetch_info,
    hub_endpoint,
)
from tests.fake_hub import FakeHub

MB = 1 << 20
DATA = random.Random(20).randbytes(20 * MB)
SHA = hashlib.sha256(DATA).hexdigest()
MODEL = HubFile("acme/Tiny-GGUF", "quants/tiny-Q4_K_M.gguf")
Progress = Callable[[int, int], None]


# HA's test plugin blocks sockets; pytest-socket's `socket_enabled` opens them, still only to 127.0.0.1
@pytest.fixture
async def hub(socket_enabled: None) -> AsyncIterator[FakeHub]:
    async with FakeHub() as hub:
        hub.add(MODEL.repo_id, MODEL.filename, DATA)
        yield hub


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models" / MODEL.local_name


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def fetch(
    session: aiohttp.ClientSession,
    hub: FakeHub,
    dest: Path,
    file: HubFile = MODEL,
    *,
    progress: Progress | None = None,
    retries: int = 5,
) -> Path:
    return await download(
        session, file, dest, progress=progress, endpoint=hub.endpoint, retries=retries, retry_wait_s=0.05
    )


def test_hub_file_names() -> None:
    assert MODEL.local_name == "Tiny-GGUF/tiny-Q4_K_M.gguf"
    file = HubFile("acme/Tiny-GGUF", "a b/c#d.gguf", revision="refs/pr/1")
    assert file.url("http://h") == "http://h/acme/Tiny-GGUF/resolve/refs%2Fpr%2F1/a%20b/c%23d.gguf"


async def test_complete_download_with_progress(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    updates: list[tuple[int, int]] = []
    assert await fetch(session, hub, dest, progress=lambda done, total: updates.append((done, total))) == dest
    assert sha256(dest) == SHA
    assert not part_of(dest).exists()
    assert len(updates) >= 5
    done = [d for d, _ in updates]
    assert done == sorted(set(done))  # strictly increasing
    assert updates[-1] == (len(DATA), len(DATA))
    assert {total for _, total in updates} == {len(DATA)}
    # the hub's 302 was followed to the CDN, asked once, from the start
    assert [(m, p.split("/")[1], r) for m, p, r in hub.requests] == [
        ("HEAD", "acme", None),
        ("GET", "acme", None),
        ("GET", "cdn", None),
    ]


async def test_broken_connection_resumes_where_it_stopped(
    hub: FakeHub, session: aiohttp.ClientSession, dest: Path
) -> None:
    hub.break_after = 7 * MB
    await fetch(session, hub, dest)
    assert sha256(dest) == SHA
    first, second = hub.gets("/cdn/")
    assert first[2] is None
    assert second[2] is not None
    resumed_at = int(second[2].removeprefix("bytes=").removesuffix("-"))
    # what the client had read before the drop is kept (only what aiohttp still buffered may be lost)
    assert 5 * MB <= resumed_at <= 7 * MB
    assert hub.served == [7 * MB, len(DATA) - resumed_at]


async def test_wrong_sha256_is_refused_and_nothing_kept(session: aiohttp.ClientSession, dest: Path) -> None:
    async with FakeHub() as hub:
        hub.add(MODEL.repo_id, MODEL.filename, DATA, advertised_sha256="ab" * 32)
        with pytest.raises(DownloadError) as err:
            await fetch(session, hub, dest)
    assert err.value.key == "checksum_mismatch"
    assert MODEL.filename in err.value.placeholders["file"]
    assert err.value.placeholders["expected"] == "ab" * 32
    assert err.value.placeholders["got"] == SHA
    assert listing(dest.parent) == []  # neither the file nor a part to resume


async def test_wrong_size_is_refused(session: aiohttp.ClientSession, dest: Path) -> None:
    async with FakeHub() as hub:
        hub.add(MODEL.repo_id, MODEL.filename, DATA[:MB], advertised_size=MB + 10)
        with pytest.raises(DownloadError) as err:
            await fetch(session, hub, dest, retries=1)
    assert err.value.key == "size_mismatch"
    assert err.value.placeholders | {"file": ""} == {"file": "", "expected": str(MB + 10), "got": str(MB)}
    assert not part_of(dest).exists()


async def test_part_from_an_earlier_run_is_resumed(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    write(part_of(dest), DATA[: 5 * MB])
    updates: list[tuple[int, int]] = []
    await fetch(session, hub, dest, progress=lambda done, total: updates.append((done, total)))
    assert sha256(dest) == SHA
    assert hub.gets("/cdn/") == [("GET", f"/cdn/{SHA}", f"bytes={5 * MB}-")]
    assert hub.served == [len(DATA) - 5 * MB]
    assert updates[0][0] >= 5 * MB


async def test_corrupt_part_is_deleted_then_downloaded_afresh(
    hub: FakeHub, session: aiohttp.ClientSession, dest: Path
) -> None:
    write(part_of(dest), b"\0" * MB)
    with pytest.raises(DownloadError, match="checksum_mismatch"):
        await fetch(session, hub, dest)
    assert not part_of(dest).exists()
    await fetch(session, hub, dest)
    assert sha256(dest) == SHA


async def test_part_larger_than_the_file_starts_over(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    write(part_of(dest), DATA + b"junk")
    await fetch(session, hub, dest)
    assert sha256(dest) == SHA
    assert hub.gets("/cdn/") == [("GET", f"/cdn/{SHA}", None)]


async def test_server_ignoring_the_range_starts_over(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    write(part_of(dest), DATA[:MB])
    hub.ignore_range = True
    await fetch(session, hub, dest)
    assert sha256(dest) == SHA
    assert hub.served == [len(DATA)]


async def test_not_found_fails_at_once(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    missing = HubFile("acme/Tiny-GGUF", "nope.gguf")
    with pytest.raises(DownloadError) as err:
        await fetch(session, hub, dest, missing)
    assert err.value.key == "hub_not_found"
    assert err.value.placeholders == {"file": "acme/Tiny-GGUF/nope.gguf"}
    assert hub.requests == [("HEAD", "/acme/Tiny-GGUF/resolve/main/nope.gguf", None)]  # no retries
    assert not dest.parent.exists()


@pytest.mark.parametrize(
    ("repo_id", "filename"),
    [("no-slash", "a.gguf"), ("../x", "a.gguf"), ("a/b/c", "a.gguf"), ("acme/x", "../x"), ("acme/x", "/etc/passwd")],
)
async def test_invalid_repo(
    hub: FakeHub, session: aiohttp.ClientSession, tmp_path: Path, repo_id: str, filename: str
) -> None:
    with pytest.raises(DownloadError) as err:
        await fetch(session, hub, tmp_path / "x.gguf", HubFile(repo_id, filename))
    assert err.value.key == "invalid_repo"
    with pytest.raises(DownloadError, match="invalid_repo"):
        await fetch_info(session, HubFile(repo_id, filename), endpoint=hub.endpoint)
    assert hub.requests == []


async def test_not_enough_disk(
    hub: FakeHub, session: aiohttp.ClientSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100 * MB, 99 * MB, MB))  # type: ignore[attr-defined]
    with pytest.raises(DownloadError) as err:
        await fetch(session, hub, dest)
    assert err.value.key == "not_enough_disk"
    assert err.value.placeholders == {"needed_mb": "20", "free_mb": "1"}
    assert hub.gets() == []


async def test_server_errors_are_retried_then_reported(
    hub: FakeHub, session: aiohttp.ClientSession, dest: Path
) -> None:
    hub.fail_with = [503, 502]
    await fetch(session, hub, dest)  # two HEADs fail, the third works
    assert sha256(dest) == SHA
    hub.fail_with = [503] * 3
    with pytest.raises(DownloadError) as err:
        await fetch(session, hub, dest.with_name("other.gguf"), retries=2)
    assert err.value.key == "hub_unreachable"
    assert "503" in err.value.placeholders["error"]


async def test_unreachable_hub(session: aiohttp.ClientSession, dest: Path) -> None:
    async with FakeHub() as hub:
        endpoint = hub.endpoint
    with pytest.raises(DownloadError) as err:
        await download(session, MODEL, dest, endpoint=endpoint, retries=1, retry_wait_s=0.01)
    assert err.value.key == "hub_unreachable"


async def test_complete_file_is_not_downloaded_again(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    write(dest, DATA)
    updates: list[tuple[int, int]] = []
    await fetch(session, hub, dest, progress=lambda done, total: updates.append((done, total)))
    assert hub.gets() == []
    assert updates == [(len(DATA), len(DATA))]
    write(dest, DATA[:-1] + b"x")  # right size, wrong content: replaced
    await fetch(session, hub, dest)
    assert sha256(dest) == SHA


async def test_non_lfs_file_is_checked_by_size(hub: FakeHub, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    config = random.Random(1).randbytes(300_000)
    hosted = hub.add("acme/Tiny-GGUF", "config.json", config, lfs=False)
    file = HubFile("acme/Tiny-GGUF", "config.json")
    info = await fetch_info(session, file, endpoint=hub.endpoint)
    assert (info.size, info.sha256, info.etag) == (len(config), None, hosted.blob_id)
    dest = await fetch(session, hub, tmp_path / file.local_name, file)
    assert dest.read_bytes() == config
    assert hub.gets() == [("GET", "/acme/Tiny-GGUF/resolve/main/config.json", None)]


async def test_non_lfs_resume_sends_if_range(hub: FakeHub, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    config = random.Random(2).randbytes(300_000)
    hub.add("acme/Tiny-GGUF", "config.json", config, lfs=False)
    file = HubFile("acme/Tiny-GGUF", "config.json")
    dest = tmp_path / file.local_name
    write(part_of(dest), config[:1000])
    await fetch(session, hub, dest, file)
    assert dest.read_bytes() == config
    assert hub.served == [len(config) - 1000]  # the ETag matched: only the rest was sent


async def test_lfs_info_and_relative_redirect(hub: FakeHub, session: aiohttp.ClientSession) -> None:
    hub.renamed["acme/Old-Name"] = "acme/Tiny-GGUF"
    info = await fetch_info(session, HubFile("acme/Old-Name", MODEL.filename), endpoint=hub.endpoint)
    assert (info.size, info.sha256, info.etag) == (len(DATA), SHA, SHA)
    assert [p for _, p, _ in hub.requests] == [
        f"/acme/Old-Name/resolve/main/{MODEL.filename}",
        f"/acme/Tiny-GGUF/resolve/main/{MODEL.filename}",
    ]


async def test_cancel_keeps_the_part(hub: FakeHub, session: aiohttp.ClientSession, dest: Path) -> None:
    def cancel_at_5_mb(done: int, _total: int) -> None:
        if done >= 5 * MB:
            task.cancel()

    task = asyncio.create_task(fetch(session, hub, dest, progress=cancel_at_5_mb))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert listing(dest.parent) == [part_of(dest).name]
    kept = len(part_of(dest).read_bytes())
    assert 0 < kept < len(DATA)
    await fetch(session, hub, dest)
    assert sha256(dest) == SHA
    assert hub.gets("/cdn/")[-1][2] == f"bytes={kept}-"


async def test_hf_endpoint_env(
    hub: FakeHub, session: aiohttp.ClientSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_endpoint() == DEFAULT_ENDPOINT
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint + "/")
    assert hub_endpoint() == hub.endpoint
    await download(session, MODEL, dest)  # no endpoint argument: the env var's mirror is used
    assert sha256(dest) == SHA


async def test_event_loop_stays_free(
    hub: FakeHub, session: aiohttp.ClientSession, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing, writing and every other file call of a 20 MB download run off the event loop's thread."""
    loop_thread, calls = threading.current_thread(), []
    for name in ("_hash_file", "_is_complete", "_open_part", "_append", "_truncate", "_free_bytes", "_finish"):
        original = getattr(dl, name)

        def spy(*args: object, _original: Any = original, _name: str = name) -> Any:
            calls.append((_name, threading.current_thread() is loop_thread))
            return _original(*args)

        monkeypatch.setattr(dl, name, spy)
    await fetch(session, hub, dest)
    assert ("_append", False) in calls  # the data was written ...
    assert [name for name, on_loop in calls if on_loop] == []  # ... and nothing touched files on the loop
