"""Async proxy to one worker process: spawn, request/stream, cancel, crash detection.

A worker that dies (segfault, OOM kill, SIGKILL) fails every pending request at once with
WorkerCrashed; the next request spawns a fresh process. Crashes are counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
import contextlib
import logging
import os
from pathlib import Path
import sys
import time
from typing import Any

from .. import cgroup, errors, protocol
from ..deadlines import within
from ..procmem import alive, rss_bytes

_LOGGER = logging.getLogger(__name__)
_ENGINE_PACKAGE = (__package__ or "engine.backends").rpartition(".")[0]  # this module is in engine.backends
# The directory that holds the top-level package (custom_components/ in HA), for the child's sys.path.
_IMPORT_ROOT = Path(__file__).resolve().parents[len(_ENGINE_PACKAGE.split(".")) + 1]
_STDERR_TAIL = 20
_ERRORS: dict[str, type[errors.EngineError]] = {
    cls.__name__: cls
    for cls in (
        errors.InvalidInput,
        errors.ContextTooSmall,
        errors.LoadFailed,
        errors.BackendMissing,
        errors.TorchMissing,
        errors.Cancelled,
        errors.EngineError,
    )
}


def _no_answer() -> errors.EngineError:
    return errors.RequestTimeout("the model did not answer in time")


class WorkerClient:
    """One worker process, started on demand."""

    def __init__(
        self,
        name: str,
        python: str | None = None,
        *,
        env: dict[str, str] | None = None,
        on_crash: Callable[[], None] | None = None,
        memory_limit: int | None = None,
        module: str = "worker.llamacpp",
    ) -> None:
        self.name = name
        self._module = module  # the engine.worker package the process runs (its __main__)
        self.memory_limit = memory_limit  # bytes: the worker's own memory cgroup, where one can be made
        self.cgroup: Path | None = None
        self.out_of_memory = False  # the last worker was ended by its memory cgroup
        self.crashes = 0
        self.last_exit: int | None = None  # exit code of the last crash (negative: killed by that signal)
        self.crash_times: deque[float] = deque(maxlen=16)
        self._on_crash = on_crash
        self._closing = False
        self._python = python or sys.executable
        self._env = env or {}
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._next_id = 1
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        # Last in the lock order (pool.py): slot lock, then pool load lock, then this one.
        self._start_lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        # `alive` sees a death the reader has not read yet: a request right after an idle worker
        # died starts a new one instead of writing into the dead one's pipe.
        return (
            self._proc is not None
            and self._proc.returncode is None
            and self._reader is not None
            and not self._reader.done()
            and alive(self._proc.pid)
        )

    def rss_bytes(self) -> int:
        """Resident memory of the worker process right now (0 when not running)."""
        pid = self.pid
        return (rss_bytes(pid) or 0) if pid else 0

    async def start(self) -> None:
        async with self._start_lock:
            if self.running:
                return
            await self._spawn()

    async def _spawn(self) -> None:
        if self._reader is not None and not self._reader.done():  # a death not read yet: let its
            with contextlib.suppress(TimeoutError):  # reader report it before a new worker starts
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
        env = {**os.environ, **self._env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_IMPORT_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._proc = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            f"{_ENGINE_PACKAGE}.{self._module}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=protocol.MAX_LINE_BYTES,
            start_new_session=True,  # HA's signals stay HA's
        )
        if self.memory_limit:
            self.cgroup = await asyncio.to_thread(cgroup.confine, self._proc.pid, self.name, self.memory_limit)
        ready: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending = {0: ready}
        self._reader = asyncio.create_task(self._read(self._proc), name=f"sarai_omni {self.name} reader")
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc), name=f"sarai_omni {self.name} stderr")
        event = await ready.get()
        self._pending.pop(0, None)
        if event.get("event") != protocol.EV_READY:
            raise self._crash_error()
        self.last_exit = None
        _LOGGER.debug("worker %s started (pid %s)", self.name, self._proc.pid)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line over the limit: protocol broken, treat as a crash
                proc.kill()
                break
            if not line:
                break
            try:
                msg = protocol.decode(line)
            except ValueError:
                continue
            if (q := self._pending.get(int(msg.get("id", -1)))) is not None:
                q.put_nowait(msg)
        await proc.wait()
        group, self.cgroup = self.cgroup, None
        self.out_of_memory = await asyncio.to_thread(cgroup.oom_killed, group)
        await asyncio.to_thread(cgroup.release, group)
        if self._stderr_task is not None:  # collect the last words of the process for the error
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1)
        self._fail_pending(proc)

    def _fail_pending(self, proc: asyncio.subprocess.Process) -> None:
        pending, self._pending = self._pending, {}
        for q in pending.values():
            q.put_nowait({"event": protocol.EV_CRASHED, "code": proc.returncode})
        if self._closing:  # we asked it to exit
            return
        self.crashes += 1  # busy or idle: any exit we did not ask for is a crash
        self.last_exit = proc.returncode
        self.crash_times.append(time.monotonic())
        _LOGGER.warning(
            "worker %s %s; its last output: %s", self.name, errors.describe_exit(proc.returncode), self.stderr_tail()
        )
        if self._on_crash is not None:
            self._on_crash()

    def crashes_within(self, seconds: float) -> int:
        """Crashes in the last `seconds` (for crash-loop detection)."""
        now = time.monotonic()
        return sum(1 for t in self.crash_times if now - t <= seconds)

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                _LOGGER.debug("worker %s: %s", self.name, text)

    def stderr_tail(self) -> str:
        return " | ".join(list(self._stderr_tail)[-3:])

    def _crash_error(self) -> errors.WorkerCrashed:
        """The death by its signal's name and meaning; a Python exit also by its last words."""
        code = self._proc.returncode if self._proc else None
        why = errors.describe_exit(code)
        if self.out_of_memory:
            why = f"ended by the kernel at its memory limit of {(self.memory_limit or 0) // 2**20} MB"
        elif code is not None and code >= 0 and (tail := self.stderr_tail()):
            why = f"{why}: {tail}"
        return errors.WorkerCrashed(f"worker '{self.name}' died ({why})", code, out_of_memory=self.out_of_memory)

    async def stream(
        self, op: str, payload: dict[str, Any], deadline: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Send a request and yield its events; the last one is the result (errors are raised).

        `deadline` (event-loop time) bounds the whole request: past it, RequestTimeout is raised
        and the worker is told to stop.
        """
        await self.start()
        assert self._proc is not None
        assert self._proc.stdin is not None
        rid, self._next_id = self._next_id, self._next_id + 1
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[rid] = events
        done = False
        try:
            self._proc.stdin.write(protocol.encode({"id": rid, "op": op, **payload}))
            await self._proc.stdin.drain()
            while True:
                event = await within(events.get(), deadline, _no_answer)
                kind = event.get("event")
                if kind == protocol.EV_CRASHED:
                    done = True
                    raise self._crash_error()
                if kind == protocol.EV_ERROR:
                    done = True
                    raise self._error(event)
                done = kind == protocol.EV_RESULT
                yield event
                if done:
                    return
        except (BrokenPipeError, ConnectionResetError) as err:
            done = True
            raise self._crash_error() from err
        finally:
            self._pending.pop(rid, None)
            if not done:  # the caller gave up (cancelled, closed, timed out): stop the work
                self._send_nowait({"id": 0, "op": protocol.OP_CANCEL, "target": rid})

    async def call(self, op: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """A request without streaming: return its result data."""
        result: dict[str, Any] = {}
        async for event in self.stream(op, payload or {}):
            result = event.get("data", {})
        return result

    def cancel_all(self) -> None:
        """Ask the worker to stop every request in flight (each ends as cancelled)."""
        for rid in [r for r in self._pending if r]:
            self._send_nowait({"id": 0, "op": protocol.OP_CANCEL, "target": rid})

    def _send_nowait(self, message: dict[str, Any]) -> None:
        if self.running and self._proc and self._proc.stdin:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                self._proc.stdin.write(protocol.encode(message))

    @staticmethod
    def _error(event: dict[str, Any]) -> errors.EngineError:
        kind, message = str(event.get("kind")), str(event.get("message", event.get("kind")))
        return _ERRORS.get(kind, errors.EngineError).from_detail(message, event.get("detail") or {})

    async def close(self, grace_s: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within `grace_s` seconds."""
        proc = self._proc
        if proc is None:
            return
        self._closing = True
        if proc.returncode is None:
            self._send_nowait({"id": 0, "op": protocol.OP_SHUTDOWN})
            if proc.stdin is not None:  # EOF ends the worker's reader thread (a clean exit)
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._reader, self._stderr_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._proc = self._reader = self._stderr_task = None
        self._closing = False
