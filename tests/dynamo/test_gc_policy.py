"""The collector settings of a node process (dynamo/gc_policy.py), applied and undone in this process."""

import gc
import weakref

import pytest

from dynamo import gc_policy
from dynamo.stats import Stats, prometheus_text


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_serving_sets_rarer_young_collections_short_middle_ones_and_rare_full_ones(restore_gc):
    gc.set_threshold(700, 11, 12)
    gc_policy.tune_for_serving()
    young, middle, old = gc.get_threshold()
    assert (young, middle, old) == gc_policy.SERVING_THRESHOLDS
    assert young > 700  # rarer than CPython's
    assert young * middle <= 10_000  # a middle collection scans about this many survivors: a short pause
    assert young * middle * old >= 700_000  # full collections no more often than every 700,000 allocations


def test_freezing_exempts_what_is_alive_and_frees_what_is_not(restore_gc):
    class Cycle:
        pass

    alive, dead = Cycle(), Cycle()
    alive.me, dead.me = alive, dead
    dead_ref = weakref.ref(dead)
    del dead
    gc_policy.freeze_startup_objects()
    assert dead_ref() is None  # the garbage was collected first, not frozen
    assert gc.get_freeze_count() > 0 and not any(obj is alive for obj in gc.get_objects())  # never scanned again


def test_the_report_gives_collections_thresholds_and_frozen_objects_to_stats_and_metrics(restore_gc):
    gc.set_threshold(1234, 5, 6)
    report = gc_policy.gc_report()
    assert report["gc_thresholds"] == {"gen0": 1234, "gen1": 5, "gen2": 6}
    assert set(report["gc_collections"]) == {"gen0", "gen1", "gen2"} and report["gc_frozen_objects"] == 0
    text = prometheus_text(Stats().to_json(report), "n1")
    assert "# TYPE dynamo_gc_collections_gen2 counter" in text and 'dynamo_gc_thresholds_gen0{node="n1"} 1234' in text
