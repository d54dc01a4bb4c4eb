"""GET /metrics text, read back with a small parser of the Prometheus text format 0.0.4: every sample has
its family's HELP and TYPE first, names and labels are well-formed, every /stats field is there, and the
latencies are summaries with quantile labels, _sum and _count."""

from __future__ import annotations

import math
import re

import pytest

from dynamo.metric import escape_label, metric_name, render, report_families
from dynamo.stats import COUNTERS, PERCENTILES, Stats, prometheus_text

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")


class Family:
    def __init__(self, name: str) -> None:
        self.name, self.help, self.kind = name, None, None
        self.samples: list[tuple[str, dict[str, str], float]] = []


def parse_exposition(text: str) -> dict[str, Family]:
    """Families by name; raises AssertionError on anything the 0.0.4 format does not allow."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, keyword, name, *rest = line.split(" ", 3)
            assert re.fullmatch(NAME, name), line
            family = families.setdefault(name, Family(name))
            if keyword == "HELP":
                assert family.help is None and rest, f"second or empty HELP: {line}"
                family.help = rest[0]
            else:
                assert family.kind is None and not family.samples, f"TYPE twice or after samples: {line}"
                assert rest and rest[0] in ("counter", "gauge", "summary", "histogram", "untyped"), line
                family.kind = rest[0]
            current = family
            continue
        assert line and not line.startswith("#"), f"unexpected line {line!r}"
        found = SAMPLE.match(line)
        assert found, f"malformed sample {line!r}"
        name, value = found.group(1), found.group(found.lastindex)
        labels = dict(re.findall(LABEL, found.group(2) or ""))
        assert current is not None and name in (current.name, current.name + "_sum", current.name + "_count"), \
            f"{name} outside its family"
        assert current.help is not None and current.kind is not None, f"{name} before its HELP/TYPE"
        number = float(value)  # also takes NaN and +Inf
        current.samples.append((name, labels, number))
    return families


def test_every_stats_field_is_exposed_with_help_type_and_the_node_label():
    stats = Stats()
    stats.node_gets += 5
    stats.node_puts += 2
    for latency_us in (1000, 2000, 3000, 40000):
        stats.get_latency.record(latency_us)
    report = stats.to_json({"node": 'n"1\\', "actor": "n1:ab", "keys_stored": 7, "hints_pending": 1,
                            "members_down": ["n3", "n4"], "http_inflight": 0, "rpc_requests": 9,
                            "ratio": 0.25, "flag": True, "demo": {"exchanges": 3, "note": "x"}})
    text = prometheus_text(report, 'n"1\\', {"get": stats.get_latency, "put": stats.put_latency})
    families = parse_exposition(text)
    assert all(name.startswith("dynamo_") for name in families)
    latency = {f"node_{op}_fsm_time_{name}" for op in ("get", "put") for name, _ in PERCENTILES}
    for field, value in report.items():
        if field in latency or field == "latency_ms" or isinstance(value, (str, dict)):
            continue
        family = families[f"dynamo_{field}"]
        assert family.kind == ("counter" if field in COUNTERS or field == "rpc_requests" else "gauge"), field
        [(_, labels, number)] = family.samples
        assert labels == {"node": 'n\\"1\\\\'}  # escaped as the format asks
        expected = len(value) if isinstance(value, list) else float(value)
        assert number == expected, field
    assert families["dynamo_demo_exchanges"].samples[0][2] == 3  # nested numbers flatten
    info = families["dynamo_node_info"].samples[0]
    assert info[1]["actor"] == "n1:ab" and info[2] == 1
    get = families["dynamo_node_get_fsm_time_seconds"]
    assert get.kind == "summary"
    quantiles = {labels["quantile"]: number for name, labels, number in get.samples if "quantile" in labels}
    assert quantiles == {"0.5": 0.002, "0.95": 0.04, "0.99": 0.04, "1.0": 0.04}
    totals = {name: number for name, labels, number in get.samples if "quantile" not in labels}
    assert totals == {"dynamo_node_get_fsm_time_seconds_sum": pytest.approx(0.046),
                      "dynamo_node_get_fsm_time_seconds_count": 4}
    assert families["dynamo_node_put_fsm_time_seconds"].samples[-1][2] == 0  # no put yet


def test_the_parser_refuses_what_the_format_does_not_allow():
    good = "# HELP dynamo_x X\n# TYPE dynamo_x gauge\ndynamo_x{node=\"a\"} 1\n"
    parse_exposition(good)
    for bad in (good.replace("# HELP dynamo_x X\n", ""), good + "dynamo_y 1\n", good.rstrip("\n"),
                good.replace("1\n", "one\n"), good.replace('node="a"', "node=a"), good + good):
        with pytest.raises((AssertionError, ValueError)):
            parse_exposition(bad)


def test_names_labels_and_special_values():
    assert metric_name("a-b.c") == "dynamo_a_b_c" and metric_name("9x") == "dynamo__9x"
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    families = report_families({"nan": math.nan, "inf": math.inf, "x": 1, "x_": 2}, counters=(), helps={})
    text = render(families + families, {"node": "n"})  # a repeated family is written once
    parsed = parse_exposition(text)
    assert math.isnan(parsed["dynamo_nan"].samples[0][2]) and parsed["dynamo_inf"].samples[0][2] == math.inf
    assert text.count("# TYPE dynamo_x gauge") == 1
