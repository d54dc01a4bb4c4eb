"""Prometheus text exposition (format 0.0.4) of a node's /stats report, for GET /metrics.

Theory of operation: the report (dynamo.stats: one flat JSON object) becomes metric families, one per
field, each written as "# HELP", "# TYPE" and its samples; every sample carries the node label.
- Names: "dynamo_" + the /stats field, characters outside [a-zA-Z0-9_:] turned into "_", so a dashboard
  finds a field under the name /stats shows. Counters keep their Riak names (no "_total": 0.0.4 does not
  ask for it, and the two views stay one vocabulary).
- Values: numbers as they are, booleans as 0/1, a list as its length (members_down -> how many), a
  mapping of numbers as one family per entry (name_entry). Text fields (node, actor) are labels of one
  `dynamo_node_info` gauge of value 1, the usual way to expose text.
- Latency is a summary: quantile samples plus _sum and _count (the caller hands them in), in seconds.
- Fields the caller names in `skip` (derived views such as latency_ms) are left out; a field of any other
  type is left out too, never a malformed line. The first family of a name wins.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable, Mapping

PREFIX = "dynamo_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # the full metric name
    kind: str  # counter | gauge | summary
    help: str
    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]  # (suffix, extra labels, value)


def metric_name(field: str) -> str:
    name = PREFIX + _NAME_BAD.sub("_", field)
    return name if not name[len(PREFIX)].isdigit() else PREFIX + "_" + name[len(PREFIX):]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def report_families(report: Mapping[str, Any], *, counters: Iterable[str], helps: Mapping[str, str],
                    skip: Iterable[str] = ()) -> list[Family]:
    """The families of a /stats report's fields (see the module's rules)."""
    counters, skip = frozenset(counters), frozenset(skip)
    families, info = [], []
    for field, value in sorted(report.items()):
        if field in skip:
            continue
        help_ = helps.get(field, f"/stats field {field}")
        kind = "counter" if field in counters else "gauge"
        if isinstance(value, str):
            info.append((field, value))
        elif isinstance(value, (bool, int, float)):
            number = value if isinstance(value, float) else int(value)  # a bool is 0 or 1
            families.append(Family(metric_name(field), kind, help_, (("", (), number),)))
        elif isinstance(value, (list, tuple)):
            families.append(Family(metric_name(field), "gauge", f"{help_} (how many)", (("", (), len(value)),)))
        elif isinstance(value, Mapping):
            for entry, inner in sorted(value.items()):
                if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                    families.append(Family(metric_name(f"{field}_{entry}"), kind, f"{help_}: {entry}",
                                           (("", (), inner),)))
    if info:
        labels = tuple((_NAME_BAD.sub("_", field), value) for field, value in info)
        families.insert(0, Family(PREFIX + "node_info", "gauge", "The node's text fields, as labels",
                                  (("", labels, 1),)))
    return families


def summary(field: str, help_: str, quantiles: Iterable[tuple[float, float]], count: int,
            sum_: float) -> Family:
    """A summary family: (quantile, value) pairs, then _sum and _count."""
    samples = [("", (("quantile", _number(q)),), value) for q, value in quantiles]
    samples += [("_sum", (), sum_), ("_count", (), count)]
    return Family(metric_name(field), "summary", help_, tuple(samples))


def render(families: Iterable[Family], labels: Mapping[str, str]) -> str:
    """The exposition text: HELP, TYPE and samples per family, each name once, ending in a newline."""
    base = dict(labels)
    seen: set[str] = set()
    lines: list[str] = []
    for family in families:
        if family.name in seen:
            continue
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, extra, value in family.samples:
            merged = {**base, **dict(extra)}  # a family's own label wins over the common one
            pairs = ",".join(f'{name}="{escape_label(str(text))}"' for name, text in merged.items())
            lines.append(f"{family.name}{suffix}{{{pairs}}} {_number(value)}")
    return "\n".join(lines) + "\n"
