"""Ownership report: counts (members owning nothing included), min/max/mean, spacing violations next to
the fewest possible, and a readable table that says when balance is not met."""

from ring.report import ownership_report
from ring.state import Ring


def test_report_numbers():
    ring = Ring.initial([f"node{i}" for i in range(5)], partitions=256)
    report = ownership_report(ring)
    assert sum(count for _, count in report.counts) == 256
    assert [node for node, _ in report.counts] == list(ring.nodes)
    assert (report.minimum, report.maximum, report.mean) == (51, 52, 51.2)
    assert (report.ideal_low, report.ideal_high, report.balanced) == (51, 52, True)
    assert (report.violations, report.violations_min) == (0, 0)
    text = report.format()
    for node, count in report.counts:
        assert node in text and str(count) in text
    assert "256 partitions, 5 nodes" in text and "NOT MET" not in text


def test_three_nodes_show_the_two_unavoidable_violations():
    report = ownership_report(Ring.initial(["a", "b", "c"], partitions=64))
    assert (report.violations, report.violations_min) == (2, 2)
    assert "2 of 64 windows" in report.format()


def test_idle_members_and_an_unbalanced_ring():
    ring = Ring(8, tuple("aaaabbbc"), 4, 3, ("a", "b", "c", "d"))
    report = ownership_report(ring)
    assert report.counts == (("a", 4), ("b", 3), ("c", 1), ("d", 0))
    assert (report.minimum, report.maximum, report.ideal_low, report.ideal_high) == (0, 4, 2, 2)
    assert not report.balanced
    assert report.violations == 7  # every window but b-c-a (positions 6, 7, 0)
    text = report.format()
    assert "NOT MET" in text and "ring v4" in text and "d" in text
