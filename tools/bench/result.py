"""What one cell measured, read back from wrk's output.

Theory of operation. The generated script's done() (script.py) prints `@bench` lines after wrk's own
report; `parse_wrk_output` reads only those, so a change in wrk's human-readable text cannot break it.
A run whose output lacks the lines (wrk failed to start, the script raised) is an error naming what came
out instead, never a row of zeros.

Success depends on the operation: a put succeeds with 200/201/204; a get with 200, or 300 when the key
has siblings. A 404 on a get is counted against it, because gets only read keys the preload wrote.
Everything else (4xx, 5xx, socket errors, wrk's timeouts) is listed by kind in the table.
Latency percentiles cover every completed request, errors included, as wrk records them (with its
correction for coordinated omission).
"""

from __future__ import annotations

import dataclasses
import types

from tools.bench.script import MARKER, PERCENTILES

OK_STATUSES = types.MappingProxyType({"put": frozenset({200, 201, 204}), "get": frozenset({200, 300})})
SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")


class WrkOutputError(ValueError):
    """wrk's output does not hold the numbers the script prints."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """The numbers of one wrk run, as the script's done() printed them."""

    requests: int  # completed responses, any status
    duration_s: float
    latency_us: tuple[tuple[float, int], ...]  # (percentile, microseconds), in PERCENTILES order
    latency_max_us: int
    socket_errors: tuple[tuple[str, int], ...]  # (kind, count) for SOCKET_ERROR_KINDS
    statuses: tuple[tuple[int, int], ...]  # (status, count), sorted by status
    loader_cpu_s: float = 0.0  # CPU (user + system) wrk itself used: measured around the run, not parsed

    def percentile_us(self, percentile: float) -> int:
        for candidate, value_us in self.latency_us:
            if candidate == percentile:
                return value_us
        raise KeyError(percentile)


@dataclasses.dataclass(frozen=True)
class CellResult:
    """One row of the table: an operation at a consistency, and what wrk measured."""

    operation: str
    consistency: str
    wrk: WrkResult
    node_cpu_s: float | None = None  # CPU the cluster's processes used during the cell, when known

    @property
    def node_cpu_ms_per_request(self) -> float | None:
        if self.node_cpu_s is None or self.wrk.requests == 0:
            return None
        return 1000 * self.node_cpu_s / self.wrk.requests

    @property
    def ok_count(self) -> int:
        ok = OK_STATUSES[self.operation]
        return sum(count for status, count in self.wrk.statuses if status in ok)

    @property
    def ok_per_s(self) -> float:
        return self.ok_count / self.wrk.duration_s if self.wrk.duration_s > 0 else 0.0

    @property
    def errors(self) -> tuple[tuple[str, int], ...]:
        """(label, count) of everything that was not a success, statuses first, then socket errors."""
        ok = OK_STATUSES[self.operation]
        found = [(str(status), count) for status, count in self.wrk.statuses if status not in ok and count]
        found += [(kind, count) for kind, count in self.wrk.socket_errors if count]
        return tuple(found)


def parse_wrk_output(text: str) -> WrkResult:
    """Read the `@bench` lines of one wrk run; WrkOutputError when they are missing or malformed."""
    fields: dict[str, int] = {}
    latency: dict[float, int] = {}
    latency_max_us = None
    socket_errors: dict[str, int] = {}
    statuses: dict[int, int] = {}
    ended = False
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != MARKER:
            continue
        try:
            kind = words[1]
            if kind == "end":
                ended = True
            elif kind in ("requests", "duration_us"):
                fields[kind] = int(words[2])
            elif kind == "latency_us" and words[2] == "max":
                latency_max_us = int(words[3])
            elif kind == "latency_us":
                latency[float(words[2])] = int(words[3])
            elif kind == "socket_errors":
                socket_errors[words[2]] = int(words[3])
            elif kind == "status":
                statuses[int(words[2])] = statuses.get(int(words[2]), 0) + int(words[3])
            else:
                raise WrkOutputError(f"unknown {MARKER} line: {line!r}")
        except (IndexError, ValueError) as error:
            if isinstance(error, WrkOutputError):
                raise
            raise WrkOutputError(f"malformed {MARKER} line: {line!r}") from None
    missing = [name for name in ("requests", "duration_us") if name not in fields]
    missing += [f"p{p:g}" for p in PERCENTILES if p not in latency]
    missing += [f"socket_errors {kind}" for kind in SOCKET_ERROR_KINDS if kind not in socket_errors]
    if latency_max_us is None:
        missing.append("latency max")
    if not ended:
        missing.append("end")
    if missing:
        excerpt = text.strip()[-600:] or "(nothing)"
        raise WrkOutputError(f"wrk output lacks {', '.join(missing)}; it was:\n{excerpt}")
    return WrkResult(
        requests=fields["requests"], duration_s=fields["duration_us"] / 1e6,
        latency_us=tuple((p, latency[p]) for p in PERCENTILES), latency_max_us=latency_max_us,
        socket_errors=tuple((kind, socket_errors[kind]) for kind in SOCKET_ERROR_KINDS),
        statuses=tuple(sorted(statuses.items())))
