"""How a node process sets CPython's cyclic garbage collector, and why.

The collector runs a young collection whenever the container objects allocated since the last one, less
those freed, pass 700, and every so often a full collection over every tracked object. A node allocates
a lot per request and keeps a good part of it for a while (the decoded-object cache, the trees, the
requests in flight), so with the defaults it keeps re-examining what it keeps, and a full collection
stops the event loop for tens of ms: the puts' p99.9 of the bench (50-74 ms, against 24-30 ms with the
first tuned policy, in alternated `tools.bench` runs). Measured on a node process under quorum puts (perf,
sampling the native stack), the collector took 2.7% of its CPU. In `tools.cpubench`, whose one process holds all
three nodes' objects, it took 100-130 us of a put's 800-1,100 us (`--python-gc`) against 5-8 us.

What a node process does (`dynamo node` calls these; a node run inside another program, such as a test,
leaves that program's collector alone):
- `tune_for_serving`: thresholds (3,000, 3, 100) instead of (700, 10, 10). A young collection every 3,000
  net allocations, a middle one every 3 young ones, a full one considered every 100 middle ones.
  - Why not CPython's: the young collections came too often, and every 100 of them a full collection
    over the whole heap ran.
  - Why the middle and old thresholds matter too: a node's caches (the decoded-object cache above all)
    keep most of what a write allocates for a while, so nearly every young survivor reaches the middle
    generation, and a middle collection scans about young threshold x middle threshold objects. With
    (10,000, 10, 10), the setting of the previous release, those scans stopped the loop for 51-79 ms
    (gc.callbacks timing, three nodes under 30 s of bench puts); with (3,000, 3, 100) for at most 11 ms,
    and the young ones for at most 7 ms instead of 17. The young and middle collections' time over those
    runs fell from 134-160 ms to 107-124 ms per node.
  - A full collection is still considered about as often as before: every 900,000 net allocations,
    against 1,000,000 with (10,000, 10, 10). It scans every object made since start-up (a full
    decoded-object cache alone takes 27 ms; the handoff bench's nodes logged 40-48 ms), so it stays rare.
- `freeze_startup_objects`, once the node serves: collect, then `gc.freeze()`. What exists then (modules,
  classes, the configuration, the key set loaded from storage, ...) lives as long as the process, so
  full collections stop rescanning it. Objects made later are collected as before.
`gc_report` puts the collector's state in /stats (and so in /metrics).
"""

from __future__ import annotations

import gc
from typing import Any

YOUNG_COLLECTION_ALLOCATIONS = 3_000
MIDDLE_COLLECTION_YOUNG_ONES = 3
FULL_COLLECTION_MIDDLE_ONES = 100
SERVING_THRESHOLDS = (YOUNG_COLLECTION_ALLOCATIONS, MIDDLE_COLLECTION_YOUNG_ONES, FULL_COLLECTION_MIDDLE_ONES)


def tune_for_serving() -> None:
    """Set the collector's thresholds to SERVING_THRESHOLDS (see the module docstring)."""
    gc.set_threshold(*SERVING_THRESHOLDS)


def freeze_startup_objects() -> None:
    """Free what start-up left as garbage, then exempt everything alive from later collections."""
    gc.collect()
    gc.freeze()


def gc_report() -> dict[str, Any]:
    """The collector's state for /stats: collections per generation, thresholds, objects frozen."""
    generations = {f"gen{number}": stats["collections"] for number, stats in enumerate(gc.get_stats())}
    thresholds = {f"gen{number}": value for number, value in enumerate(gc.get_threshold())}
    return {"gc_collections": generations, "gc_thresholds": thresholds, "gc_frozen_objects": gc.get_freeze_count()}
