"""A hard memory limit per worker process, where the kernel lets this process set one (Linux cgroups).

The pool's watchdog samples RSS every 100 ms; between two samples a runaway allocation could still
take the box down. A memory cgroup per worker closes that gap: the kernel ends that worker alone
(SIGKILL, reported as "killed (out of memory?)") when it passes the limit. Used where it is offered
without privileges we do not have:
- cgroup v2: our own cgroup already delegates the memory controller (`memory` in its
  cgroup.subtree_control); the worker gets a child with `memory.max`;
- cgroup v1: the memory hierarchy's directory of our cgroup is writable; the child gets
  `memory.limit_in_bytes`.
Elsewhere (containers without a writable cgroup fs, macOS) nothing is done and the watchdog alone
holds the budget. All of this is procfs/cgroupfs I/O (in memory, never a disk): fine on the loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from .procmem import alive

_LOGGER = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            out[name] = path
    return out


def memory_parent() -> tuple[Path, str] | None:
    """(directory under which worker cgroups can be made, the limit file's name), or None."""
    own = _own_cgroups()
    if "" in own:  # v2: pure (/sys/fs/cgroup) or hybrid (/sys/fs/cgroup/unified)
        for base in (ROOT, ROOT / "unified"):
            here = base / own[""].lstrip("/")
            with contextlib.suppress(OSError):
                if "memory" in (here / "cgroup.subtree_control").read_text().split() and os.access(here, os.W_OK):
                    return here, "memory.max"
    if "memory" in own:
        here = ROOT / "memory" / own["memory"].lstrip("/")
        if (here / "memory.limit_in_bytes").is_file() and os.access(here, os.W_OK):
            return here, "memory.limit_in_bytes"
    return None


def confine(pid: int, name: str, limit_bytes: int) -> Path | None:
    """Put process `pid` in a new memory cgroup limited to `limit_bytes`; return it (None: not offered)."""
    found = memory_parent()
    if found is None:
        return None
    parent, limit_file = found
    _remove_orphans(parent)
    group = parent / f"sarai_omni-{os.getpid()}-{name}-{pid}"
    try:
        group.mkdir(exist_ok=True)
        (group / limit_file).write_text(str(limit_bytes))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as err:
        _LOGGER.debug("no memory cgroup for the %s worker: %s", name, err)
        release(group)
        return None
    return group


def oom_killed(group: Path | None) -> bool:
    """Whether the kernel ended a process of this cgroup for passing its limit."""
    if group is None:
        return False
    for name in ("memory.events", "memory.oom_control"):  # v2, v1
        with contextlib.suppress(OSError):
            for line in (group / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value) > 0
    return False


def _remove_orphans(parent: Path) -> None:
    """Cgroups of workers whose Home Assistant process is gone (it died before removing them)."""
    with contextlib.suppress(OSError):
        for group in parent.glob("sarai_omni-*"):
            owner = group.name.removeprefix("sarai_omni-").partition("-")[0]
            if owner.isdigit() and not alive(int(owner)):
                release(group)  # only an empty cgroup can be removed: a live one stays


def release(group: Path | None) -> None:
    """Remove a worker's cgroup once its process has gone (an empty cgroup can be removed)."""
    if group is not None:
        with contextlib.suppress(OSError):
            group.rmdir()
