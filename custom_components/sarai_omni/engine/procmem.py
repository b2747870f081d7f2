"""Memory and CPU facts of this machine and of processes (Linux /proc; safe fallbacks elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, or None when it is gone.

    Reads /proc/<pid>/statm with os.open/os.read: procfs is generated in memory, so this never
    waits on a disk and is safe to call from the event loop (the budget check runs there).
    """
    try:
        fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
        try:
            fields = os.read(fd, 256).split()
        finally:
            os.close(fd)
        return int(fields[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether a process still runs: not gone and not a zombie (dead, not yet reaped). Same
    procfs read as rss_bytes, so safe on the event loop; where /proc is absent, assume it runs."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        stat = os.read(fd, 512)
    finally:
        os.close(fd)
    state = stat.rpartition(b")")[2].split()[:1]  # the name in parentheses may hold spaces
    return state not in ([b"Z"], [b"X"])


def total_ram_bytes() -> int:
    """Physical memory of the machine."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def physical_cores() -> int:
    """Physical cores (not hyper-threads): llama.cpp decode is fastest with one thread per core."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    return len(cores) or os.cpu_count() or 1


def cpu_flags() -> list[str]:
    """The SIMD flags that decide llama.cpp's speed (AVX2, AVX-512, ...)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                wanted = ("avx", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "f16c", "neon", "asimd")
                have = set(line.partition(":")[2].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []
