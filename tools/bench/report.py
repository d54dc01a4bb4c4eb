"""The Markdown table the benchmark prints, so a run pastes straight into a note.

One row per cell in the order run. ops/s counts successes only (result.py says what succeeds per
operation), so a node that fails fast with 503s cannot look faster than one that answers. Latencies are
in milliseconds. "CPU ms/req" is the CPU the cluster's node processes spent per completed request (user +
system, every thread; "n/a" when the bench did not start the cluster and so cannot see its processes): on
a machine shared with the load generator it moves less than ops/s. The errors column lists each non-success
status and each kind of socket error with its count, or "none".
"""

from __future__ import annotations

from typing import Iterable, Sequence

from tools.bench.result import CellResult

COLUMNS = ("operation", "consistency", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "requests", "CPU ms/req",
           "errors")
_RIGHT_ALIGNED = frozenset({"ops/s", "p50 ms", "p99 ms", "p99.9 ms", "requests", "CPU ms/req"})


def format_errors(errors: Iterable[tuple[str, int]]) -> str:
    text = ", ".join(f"{label}: {count}" for label, count in errors)
    return text or "none"


def _milliseconds(value_us: int) -> str:
    return f"{value_us / 1000:.2f}"


def row_cells(result: CellResult) -> tuple[str, ...]:
    wrk = result.wrk
    return (result.operation, result.consistency, f"{result.ok_per_s:.0f}",
            _milliseconds(wrk.percentile_us(50.0)), _milliseconds(wrk.percentile_us(99.0)),
            _milliseconds(wrk.percentile_us(99.9)), str(wrk.requests), _cpu(result.node_cpu_ms_per_request),
            format_errors(result.errors))


def _cpu(ms_per_request: float | None) -> str:
    return "n/a" if ms_per_request is None else f"{ms_per_request:.3f}"


def format_table(results: Sequence[CellResult]) -> str:
    """A Markdown table, columns padded so it also reads well as plain text."""
    rows = [COLUMNS] + [row_cells(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
                  for cell, width, name in zip(cells, widths, COLUMNS)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (width - 1) + ":" if name in _RIGHT_ALIGNED else "-" * width
            for width, name in zip(widths, COLUMNS)]
    return "\n".join([line(COLUMNS), line(rule)] + [line(row) for row in rows[1:]])
