"""The serving loop every worker process shares (llama.cpp's worker.py, transformers' hf_worker.py).

Requests are served one at a time in arrival order; a reader thread handles `cancel` (and
`media_ready`) at once, so a running generation stops at its next token. The protocol goes out on a
private copy of stdout; fd 1 points at stderr, so native prints cannot corrupt it. Python 3.11-safe:
the transformers worker runs under the torch venv's interpreter.
"""

from __future__ import annotations

from collections.abc import Callable
import os
import queue
import sys
import threading
from typing import Any, BinaryIO, Protocol

from .. import protocol
from ..errors import EngineError

Send = Callable[[dict[str, Any]], None]


class Requests:
    """Which requests were cancelled before or while they ran (shared by the reader and the loop)."""

    def __init__(self) -> None:
        self._cancelled: set[int] = set()
        self._served = 0  # the highest request id finished: requests are served in id order
        self._lock = threading.Lock()

    def cancel(self, target: int) -> None:
        with self._lock:
            if target > self._served:  # a cancel for a finished request would stay forever
                self._cancelled.add(target)

    def finished(self, rid: int) -> None:
        """`rid` got its answer: forget its cancel (the set holds only requests still to come)."""
        with self._lock:
            self._served = max(self._served, rid)
            self._cancelled.discard(rid)

    def pending_cancels(self) -> int:
        with self._lock:
            return len(self._cancelled)

    def is_cancelled(self, rid: int) -> bool:
        with self._lock:
            return rid in self._cancelled


class Runner(Protocol):
    """What a worker's model owner offers the loop."""

    requests: Requests

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]: ...

    def answer_when_media_ready(self, rid: int) -> None: ...

    def unload(self) -> None: ...


def serve(runner: Runner, requests: queue.Queue[dict[str, Any] | None], send: Send) -> None:
    while (msg := requests.get()) is not None:
        if msg.get("op") == protocol.OP_SHUTDOWN:
            send({"id": msg.get("id", 0), "event": protocol.EV_RESULT, "data": {}})
            break
        rid = msg.get("id", 0)
        if runner.requests.is_cancelled(rid):  # cancelled while it waited: never start it
            send({"id": rid, "event": protocol.EV_ERROR, "kind": "Cancelled", "message": "cancelled"})
        else:
            answer(runner, msg, send)
        runner.requests.finished(rid)


def answer(runner: Runner, msg: dict[str, Any], send: Send) -> None:
    rid = msg.get("id", 0)
    try:
        send({"id": rid, "event": protocol.EV_RESULT, "data": runner.handle(msg)})
    except EngineError as err:
        event = {"id": rid, "event": protocol.EV_ERROR, "kind": type(err).__name__, "message": str(err)}
        send(event | ({"detail": detail} if (detail := err.detail()) else {}))
    except Exception as err:  # noqa: BLE001  (the client must always get an answer)
        send({"id": rid, "event": protocol.EV_ERROR, "kind": "EngineError", "message": repr(err)})


def read(stdin: BinaryIO, runner: Runner, requests: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stdin:
        try:
            msg = protocol.decode(line)
        except ValueError:
            continue
        if msg.get("op") == protocol.OP_CANCEL:
            runner.requests.cancel(int(msg.get("target", -1)))
        elif msg.get("op") == protocol.OP_MEDIA_READY:
            runner.answer_when_media_ready(int(msg.get("id", 0)))
        else:
            requests.put(msg)
    requests.put(None)  # the engine went away: exit


def main(make_runner: Callable[[Send], Runner], preimport: Callable[[], None]) -> None:
    """Run a worker: READY, then requests until shutdown or EOF. `preimport` runs while idle."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # C code printing to stdout now lands on stderr, not in the protocol
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            out.write(protocol.encode(message))

    runner = make_runner(send)
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    reader = threading.Thread(target=read, args=(sys.stdin.buffer, runner, requests), daemon=True)
    reader.start()
    send({"id": 0, "event": protocol.EV_READY, "data": {"protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid()}})
    # While no request is here yet (a spare worker waits for its model), import the native library;
    # a load that comes first waits on Python's import lock. A failure is the load's to report.
    threading.Thread(target=preimport, daemon=True).start()
    serve(runner, requests, send)
    runner.unload()
    # The client closes our stdin after a shutdown: let the reader see EOF and let go of stdin's
    # lock, or interpreter shutdown aborts (SIGABRT) on the lock that thread holds.
    reader.join(timeout=2.0)
