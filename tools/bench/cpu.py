"""CPU time of the cluster under test, read from /proc, so a cell can report node CPU per operation.

Theory of operation. On a small machine shared with the load generator, ops/s swings with whatever else
runs; the CPU the nodes spend per request swings much less, so it is the steadier measure of a change.
`tree_pids(root)` walks /proc for every descendant of the `cluster up` process (its node processes, and
whatever they start); `cpu_s(pids)` sums user + system time of those processes (all their threads: the
SQLite commit threads count too). A cell reads both before and after wrk runs; processes that started or
ended in between are counted from zero or dropped, which the caller accepts for a short cell.

Linux only: where /proc is missing both return nothing, and the report says "n/a".
"""

from __future__ import annotations

import os
import pathlib
import timeit

PROC = pathlib.Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def tree_pids(root_pid: int) -> list[int]:
    """root_pid and every process descending from it, found through the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return []
    for pid in entries:
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)  # field 4 of stat: the parent's pid
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_s(pids: list[int]) -> dict[int, float]:
    """pid -> user + system CPU seconds so far, for the pids still alive."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            used[pid] = (int(fields[11]) + int(fields[12])) / ticks_per_s  # fields 14, 15: utime, stime
    return used


def cpu_between_s(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two readings by the processes of `after` (a new one counts from zero)."""
    return sum(used - before.get(pid, 0.0) for pid, used in after.items())


def python_loop_us(repeat: int = 5, number: int = 2000) -> float:
    """How fast this machine runs pure Python right now: the best of `repeat` timings of
    `sum(range(1000))`, in microseconds. A shared VM drifts by up to 2x within minutes (measured while
    tuning: 13.4 to 25.7 us), so the report prints this before and after the cells: two reports are
    comparable only when their readings agree."""
    timer = timeit.Timer("sum(range(1000))")
    return min(timer.repeat(repeat, number)) / number * 1e6
