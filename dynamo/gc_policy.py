"""How a node process sets CPython's cyclic garbage collector, and why.

The collector runs a young collection whenever the container objects allocated since the last one, less
those freed, pass 700, and every so often a full collection over every tracked object. A node allocates
a lot per request and keeps a good part of it for a while (the decoded-object cache, the trees, the
requests in flight), so with the defaults it keeps re-examining what it keeps, and a full collection
stops the event loop for tens of ms: the puts' p99.9 of the bench (50-74 ms, against 24-30 ms with this
policy, in alternated `tools.bench` runs). Measured on a node process under quorum puts (perf, sampling
the native stack), the collector took 2.7% of its CPU. In `tools.cpubench`, whose one process holds all
three nodes' objects, it took 100-130 us of a put's 800-1,100 us (`--python-gc`) against 5-8 us.

What a node process does (`dynamo node` calls these; a node run inside another program, such as a test,
leaves that program's collector alone):
- `tune_for_serving`: a young collection every 10,000 net allocations instead of 700. Cycles are still
  found and freed, only in bigger, rarer batches (a few ms each): the garbage waiting for one is a few MB.
- `freeze_startup_objects`, once the node serves: collect, then `gc.freeze()`. What exists then (modules,
  classes, the configuration, the key set loaded from storage, ...) lives as long as the process, so
  full collections stop rescanning it. Objects made later are collected as before.
`gc_report` puts the collector's state in /stats (and so in /metrics).
"""

from __future__ import annotations

import gc
from typing import Any

YOUNG_COLLECTION_ALLOCATIONS = 10_000


def tune_for_serving() -> None:
    """Young collections every YOUNG_COLLECTION_ALLOCATIONS net allocations; the older generations'
    thresholds stay CPython's."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, middle, old)


def freeze_startup_objects() -> None:
    """Free what start-up left as garbage, then exempt everything alive from later collections."""
    gc.collect()
    gc.freeze()


def gc_report() -> dict[str, Any]:
    """The collector's state for /stats: collections per generation, thresholds, objects frozen."""
    generations = {f"gen{number}": stats["collections"] for number, stats in enumerate(gc.get_stats())}
    thresholds = {f"gen{number}": value for number, value in enumerate(gc.get_threshold())}
    return {"gc_collections": generations, "gc_thresholds": thresholds, "gc_frozen_objects": gc.get_freeze_count()}
