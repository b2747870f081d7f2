"""Model file download from the Hugging Face hub: resumable, verified, without Home Assistant.

Modelled on huggingface_hub's file_download: a HEAD without redirects reads the size and, for LFS
files, the sha256 (the `X-Linked-*` headers of the hub's 302 to its CDN); the GET then follows that
redirect. Bytes go to `<dest>.part`, which a later call resumes with a `Range` request; the file is
hashed while it is written and only a complete file with the right size and sha256 is renamed to
`dest`. A corrupt part is deleted, never resumed. All file I/O runs in the executor.

Only the standard library and aiohttp are imported, so the config flow and plain tests share it.
Over 400 lines because probe, resume, verify and rename share one download's state and error
mapping; split apart, each piece would reach into the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
import hashlib
import logging
import os
from pathlib import Path, PurePosixPath
import re
import shutil
import time
from urllib.parse import quote, urljoin, urlsplit

import aiohttp

_LOGGER = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
MB = 1 << 20
CHUNK = MB  # read size of the body
WRITE_BATCH = 4 * MB  # bytes gathered before one executor write: few thread hops, little memory
HASH_BLOCK = 8 * MB
MAX_RELATIVE_REDIRECTS = 5
PROGRESS_STEP_S = 0.5
NOT_FOUND = frozenset({401, 403, 404})  # the hub answers 401 for a missing or gated repo
TRANSIENT = frozenset({408, 429})  # plus every 5xx
# HEAD needs a bounded answer; a GET of gigabytes must not hit the session's total timeout, only stall.
HEAD_TIMEOUT = aiohttp.ClientTimeout(total=30)
GET_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)

# worth a retry; any other aiohttp.ClientError (a bad URL, a redirect loop) will not get better
_NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hub_endpoint() -> str:
    """The hub to use: `HF_ENDPOINT` (a mirror, as huggingface_hub honours it) or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of a hub repository at a revision."""

    repo_id: str
    filename: str
    revision: str = "main"

    def url(self, endpoint: str) -> str:
        return f"{endpoint}/{self.repo_id}/resolve/{quote(self.revision, safe='')}/{quote(self.filename)}"

    @property
    def local_name(self) -> str:
        """Path under the models folder: `<repo name>/<file name>`."""
        return f"{self.repo_id.split('/')[-1]}/{Path(self.filename).name}"


@dataclass(frozen=True, slots=True)
class RemoteInfo:
    """What the hub says about a file before it is downloaded."""

    size: int
    sha256: str | None
    etag: str | None


class DownloadError(Exception):
    """A download failure the config flow can show: `key` is a translation key."""

    def __init__(self, key: str, **placeholders: str) -> None:
        super().__init__(key, placeholders)
        self.key = key
        self.placeholders = placeholders

    def __str__(self) -> str:
        details = ", ".join(f"{k}={v}" for k, v in self.placeholders.items())
        return f"{self.key} ({details})" if details else self.key


class _Transient(Exception):
    """A failure worth retrying: connection lost or timed out, 5xx, body cut short."""


def _validate(file: HubFile) -> None:
    """Refuse names that are not a hub path or would escape the models folder."""
    repo_ok = bool(_REPO_ID.fullmatch(file.repo_id)) and not any(
        part.startswith(".") for part in file.repo_id.split("/")
    )
    path = PurePosixPath(file.filename.replace("\\", "/"))
    name_ok = (
        bool(file.filename)
        and not path.is_absolute()
        and ".." not in path.parts
        and path.name not in ("", ".")
        and bool(file.revision)
    )
    if not (repo_ok and name_ok):
        raise DownloadError("invalid_repo", repo_id=file.repo_id, file=file.filename)


def _describe(file: HubFile) -> str:
    return f"{file.repo_id}/{file.filename}"


def _headers(token: str | None) -> dict[str, str]:
    # identity: a gzip-encoded body would not match the advertised size and sha256
    headers = {"Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _check_status(status: int, file: HubFile) -> None:
    """Raise for an error status: not found at once, server trouble as retryable."""
    if status in NOT_FOUND:
        raise DownloadError("hub_not_found", file=_describe(file))
    if status in TRANSIENT or status >= 500:
        raise _Transient(f"HTTP {status}")
    if status >= 400:
        raise DownloadError("hub_unreachable", error=f"HTTP {status}")


def _explain(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _clean_etag(value: str | None) -> str | None:
    if not value:
        return None
    return value.removeprefix("W/").strip('"') or None


def _remote_info(headers: Mapping[str, str], file: HubFile) -> RemoteInfo:
    size = headers.get("X-Linked-Size") or headers.get("Content-Length") or ""
    if not size.isdigit():
        raise DownloadError("hub_unreachable", error=f"no size for {_describe(file)} in the hub's answer")
    etag = _clean_etag(headers.get("X-Linked-Etag") or headers.get("ETag"))
    sha256 = etag.lower() if etag and _SHA256.fullmatch(etag.lower()) else None
    return RemoteInfo(size=int(size), sha256=sha256, etag=etag)


async def _fetch_info(session: aiohttp.ClientSession, file: HubFile, endpoint: str, token: str | None) -> RemoteInfo:
    url = file.url(endpoint)
    for _ in range(MAX_RELATIVE_REDIRECTS + 1):
        try:
            async with session.head(url, headers=_headers(token), allow_redirects=False, timeout=HEAD_TIMEOUT) as resp:
                _check_status(resp.status, file)
                location = resp.headers.get("Location", "")
                if resp.status in range(300, 400) and location and not urlsplit(location).netloc:
                    # a renamed repo: the hub points at its new name on the same host
                    url = urljoin(url, location)
                    continue
                # an absolute redirect goes to the CDN: the hub's own headers describe the file
                return _remote_info(resp.headers, file)
        except _NETWORK_ERRORS as err:
            raise _Transient(_explain(err)) from err
        except aiohttp.ClientError as err:
            raise DownloadError("hub_unreachable", error=_explain(err)) from err
    raise DownloadError("hub_unreachable", error="too many redirects")


async def fetch_info(
    session: aiohttp.ClientSession, file: HubFile, *, endpoint: str | None = None, token: str | None = None
) -> RemoteInfo:
    """Size, sha256 and etag of a hub file, by one HEAD (plus same-host redirects)."""
    _validate(file)
    try:
        return await _fetch_info(session, file, (endpoint or hub_endpoint()).rstrip("/"), token)
    except _Transient as err:
        raise DownloadError("hub_unreachable", error=str(err)) from err


async def _retrying[T](attempt: Callable[[], Awaitable[T]], retries: int, wait_s: float) -> T:
    """Run `attempt`, retrying transient failures with a doubling wait; then `hub_unreachable`."""
    failures = 0
    while True:
        try:
            return await attempt()
        except _Transient as err:
            if failures >= retries:
                raise DownloadError("hub_unreachable", error=str(err)) from err
            _LOGGER.info("Download interrupted (%s), retry %d of %d", err, failures + 1, retries)
            await asyncio.sleep(wait_s * 2**failures)
            failures += 1


async def _run[T](func: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


# --- file work, run in the executor ------------------------------------------------------------


def _hash_file(path: Path, hasher: hashlib._Hash) -> int:
    """Feed the file into `hasher`; return how many bytes it had."""
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(HASH_BLOCK):
            hasher.update(block)
            size += len(block)
    return size


def _is_complete(dest: Path, info: RemoteInfo) -> bool:
    try:
        if dest.stat().st_size != info.size:
            return False
    except FileNotFoundError:
        return False
    if info.sha256 is None:
        return True
    hasher = hashlib.sha256()
    _hash_file(dest, hasher)
    return hasher.hexdigest() == info.sha256


def _open_part(part: Path, total: int) -> tuple[int, hashlib._Hash]:
    """Size and running hash of what an earlier run left; a part larger than the file is dropped."""
    part.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    try:
        if part.stat().st_size > total:
            part.unlink()
            return 0, hasher
    except FileNotFoundError:
        return 0, hasher
    return _hash_file(part, hasher), hasher


def _append(part: Path, hasher: hashlib._Hash, data: bytes) -> None:
    # hashing here too: hashlib releases the GIL, so the event loop never hashes
    hasher.update(data)
    with part.open("ab") as fh:
        fh.write(data)


def _truncate(part: Path) -> None:
    with part.open("wb"):
        pass


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _finish(part: Path, dest: Path) -> None:
    part.touch()  # an empty file never had a write
    os.replace(part, dest)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)


# --- download ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Progress:
    """Throttles the callback to about every 1% or 0.5 s."""

    callback: Callable[[int, int], None] | None
    total: int
    sent: int = -1
    sent_at: float = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        if self.callback is None or done == self.sent:  # nothing new (the end may already be said)
            return
        now = time.monotonic()
        if force or done - self.sent >= self.total / 100 or now - self.sent_at >= PROGRESS_STEP_S:
            self.sent, self.sent_at = done, now
            self.callback(done, self.total)


@dataclass(slots=True)
class _Part:
    """The `.part` file: bytes on disk, their running sha256 and the bytes not yet written."""

    path: Path
    size: int
    hasher: hashlib._Hash
    buffer: bytearray = field(default_factory=bytearray)

    @property
    def done(self) -> int:
        return self.size + len(self.buffer)

    async def flush(self) -> None:
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            await _run(_append, self.path, self.hasher, data)
            self.size += len(data)

    async def restart(self) -> None:
        self.buffer.clear()
        await _run(_truncate, self.path)
        self.size, self.hasher = 0, hashlib.sha256()


async def _get_once(
    session: aiohttp.ClientSession,
    file: HubFile,
    *,
    url: str,
    token: str | None,
    info: RemoteInfo,
    part: _Part,
    progress: _Progress,
) -> None:
    """One GET from the current part size to the end; raise `_Transient` if it stops short."""
    headers = _headers(token)
    offset = part.size
    if offset:
        headers["Range"] = f"bytes={offset}-"
        # not for LFS files: their etag is the hub's sha256, and the CDN's own etag would never match it
        if info.etag and info.sha256 is None:
            headers["If-Range"] = f'"{info.etag}"'
    try:
        async with session.get(url, headers=headers, timeout=GET_TIMEOUT) as resp:
            if offset and resp.status == 416:
                return  # nothing past the part: the file is shorter than the hub said, and _verify says so
            _check_status(resp.status, file)
            if offset:
                await _match_range(resp, part)
            progress.update(part.done)
            async for chunk in resp.content.iter_chunked(CHUNK):
                part.buffer += chunk
                if len(part.buffer) >= WRITE_BATCH:
                    await part.flush()
                progress.update(part.done)
    except _NETWORK_ERRORS as err:
        await part.flush()  # keep what arrived: the retry asks only for the rest
        raise _Transient(_explain(err)) from err
    except aiohttp.ClientError as err:
        raise DownloadError("hub_unreachable", error=_explain(err)) from err
    await part.flush()
    if part.size < info.size:
        raise _Transient(f"connection closed at {part.size} of {info.size} bytes")


async def _match_range(resp: aiohttp.ClientResponse, part: _Part) -> None:
    """Make the part fit the answer to a ranged GET: a 206 continues it, anything else restarts it."""
    if resp.status != 206:
        await part.restart()  # the server ignored the range, or If-Range saw a changed file: a whole body
        return
    content_range = resp.headers.get("Content-Range", "")
    if not content_range.startswith(f"bytes {part.size}-"):
        await part.restart()  # a body from somewhere else: ask again for the whole file
        raise _Transient(f"asked for bytes from {part.size}, got {content_range!r}")


async def _verify(part: _Part, info: RemoteInfo, file: HubFile) -> None:
    """Size, then sha256 when the hub gave one; a bad part is deleted so it is never resumed."""
    error: DownloadError | None = None
    if part.size != info.size:
        error = DownloadError("size_mismatch", file=_describe(file), expected=str(info.size), got=str(part.size))
    elif info.sha256 is not None and (got := part.hasher.hexdigest()) != info.sha256:
        error = DownloadError("checksum_mismatch", file=_describe(file), expected=info.sha256, got=got)
    if error is not None:
        await _run(_discard, part.path)
        raise error


async def download(
    session: aiohttp.ClientSession,
    file: HubFile,
    dest: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    info: RemoteInfo | None = None,
    retries: int = 5,
    retry_wait_s: float = 1.0,
) -> Path:
    """Download `file` to `dest`, resuming `<dest>.part` if there is one; return `dest`.

    `progress(done, total)` is called from the event loop, throttled, and once at the end. A
    cancelled download keeps its part for the next call. `info` is what `fetch_info` returned,
    when the caller already asked (saves a HEAD).
    """
    _validate(file)
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    if info is None:
        info = await _retrying(lambda: _fetch_info(session, file, endpoint, token), retries, retry_wait_s)
    tracker = _Progress(progress, info.size)
    if await _run(_is_complete, dest, info):
        tracker.update(info.size, force=True)
        return dest

    part_path = dest.with_name(dest.name + ".part")
    size, hasher = await _run(_open_part, part_path, info.size)
    free = await _run(_free_bytes, dest.parent)
    if free < info.size - size:
        raise DownloadError("not_enough_disk", needed_mb=str(-(-(info.size - size) // MB)), free_mb=str(free // MB))
    part = _Part(part_path, size, hasher)
    if size:
        _LOGGER.info("Resuming %s at %d of %d bytes", _describe(file), size, info.size)
    if size < info.size:
        url = file.url(endpoint)
        await _retrying(
            lambda: _get_once(session, file, url=url, token=token, info=info, part=part, progress=tracker),
            retries,
            retry_wait_s,
        )
    await _verify(part, info, file)
    await _run(_finish, part.path, dest)
    tracker.update(info.size, force=True)
    return dest
