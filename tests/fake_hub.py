"""A fake Hugging Face hub on 127.0.0.1: the file API that download.py uses, with faults on demand.

Like the real hub, `/{repo}/resolve/{rev}/{file}` answers an LFS file with a 302 to a CDN path and
the `X-Linked-Size` / `X-Linked-Etag` headers, and a plain git file with 200, Content-Length and
its blob id as ETag. The CDN serves byte ranges, and like S3 its ETag is not the sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import re
from types import TracebackType
from typing import Self

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
WRITE_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class HostedFile:
    data: bytes
    lfs: bool
    sha256: str  # the real one: the CDN path
    advertised_sha256: str
    advertised_size: int
    blob_id: str  # git's id of a non-LFS file, its ETag on the hub
    cdn_etag: str  # an S3-style md5: not the sha256


class FakeHub:
    """`async with FakeHub() as hub:` serves files added with `add` at `hub.endpoint`."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], HostedFile] = {}
        self.renamed: dict[str, str] = {}  # old repo_id -> new: answered with a relative redirect
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.served: list[int] = []  # body bytes actually written, per GET that sent a body
        self.break_after: int | None = None  # the next body is cut after this many bytes
        self.fail_with: list[int] = []  # statuses for the next requests, one each
        self.ignore_range = False  # act like a server without range support
        app = web.Application()
        app.router.add_route("*", "/cdn/{sha}", self._cdn)
        app.router.add_route("*", "/{owner}/{name}/resolve/{rev}/{filename:.+}", self._resolve)
        self._runner = web.AppRunner(app, access_log=None)
        self._port = 0

    def add(
        self,
        repo_id: str,
        filename: str,
        data: bytes,
        *,
        lfs: bool = True,
        advertised_sha256: str | None = None,
        advertised_size: int | None = None,
    ) -> HostedFile:
        sha256 = hashlib.sha256(data).hexdigest()
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        hosted = HostedFile(
            data=data,
            lfs=lfs,
            sha256=sha256,
            advertised_sha256=advertised_sha256 or sha256,
            advertised_size=len(data) if advertised_size is None else advertised_size,
            blob_id=blob_id,
            cdn_etag=hashlib.md5(data).hexdigest(),
        )
        self.files[repo_id, filename] = hosted
        return hosted

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def gets(self, prefix: str = "") -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].startswith(prefix)]

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._runner.cleanup()

    def _log(self, request: web.Request) -> web.Response | None:
        """Record the request; answer it with an injected failure if one is queued."""
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        if self.fail_with:
            return web.Response(status=self.fail_with.pop(0))
        return None

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        if failure := self._log(request):
            return failure
        owner, name, rev = request.match_info["owner"], request.match_info["name"], request.match_info["rev"]
        repo_id = f"{owner}/{name}"
        if new := self.renamed.get(repo_id):
            location = f"/{new}/resolve/{rev}/{request.match_info['filename']}"
            return web.Response(status=307, headers={"Location": location})
        hosted = self.files.get((repo_id, request.match_info["filename"]))
        if hosted is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        if not hosted.lfs:
            return await self._serve(request, hosted, etag=f'"{hosted.blob_id}"')
        return web.Response(
            status=302,
            text="Found. Redirecting",
            headers={
                "Location": f"{self.endpoint}/cdn/{hosted.sha256}",  # absolute, as the real CDN is elsewhere
                "X-Linked-Size": str(hosted.advertised_size),
                "X-Linked-Etag": f'"{hosted.advertised_sha256}"',
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{hosted.advertised_sha256}"',
            },
        )

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        if failure := self._log(request):
            return failure
        for hosted in self.files.values():
            if hosted.lfs and hosted.sha256 == request.match_info["sha"]:
                return await self._serve(request, hosted, etag=f'"{hosted.cdn_etag}"')
        return web.Response(status=404)

    async def _serve(self, request: web.Request, hosted: HostedFile, *, etag: str) -> web.StreamResponse:
        """The body, or the asked range of it when `If-Range` (if any) matches this ETag."""
        data, status = hosted.data, 200
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        wanted = _RANGE.match(request.headers.get("Range", ""))
        if_range = request.headers.get("If-Range")
        if wanted and not self.ignore_range and if_range in (None, etag):
            start = int(wanted[1])
            end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=status, headers=headers)
        return await self._stream(request, data, status, headers)

    async def _stream(
        self, request: web.Request, data: bytes, status: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        cut, self.break_after = self.break_after, None
        body = data if cut is None else data[:cut]
        for start in range(0, len(body), WRITE_CHUNK):
            await response.write(body[start : start + WRITE_CHUNK])
        self.served.append(len(body))
        if cut is not None:
            # the connection drops mid-body: the client sees fewer bytes than Content-Length
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response
