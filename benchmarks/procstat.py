"""CPU time and memory of a server process (and its worker children), read from /proc.

The gateway's cost per request is the CPU its own processes spent during a load run divided
by the requests served: unlike requests/s, this does not depend on how much of the two
shared cores the load generator and the stub upstream took.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (uvicorn's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds spent so far by ``pids`` (those still alive)."""
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def rss_mb(pids: list[int]) -> float:
    """Resident memory of ``pids`` together, in MB."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * _PAGE / 1e6


@dataclass
class CpuMeter:
    """CPU spent by a process tree between ``start()`` and ``stop()``."""

    pid: int
    _pids: list[int] | None = None
    _start: float = 0.0

    def start(self) -> "CpuMeter":
        self._pids = process_tree(self.pid)
        self._start = cpu_seconds(self._pids)
        return self

    def stop(self) -> float:
        return cpu_seconds(self._pids or [self.pid]) - self._start
