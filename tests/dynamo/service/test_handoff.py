"""Handoff of hints whose target is no longer a primary of their key: a key none of whose primaries is up
waits without holding back the rest of its batch, the target's later batches, or the target's backoff."""

from __future__ import annotations

import logging
import types

import trio

from dynamo.object import Content, encode_object, put
from dynamo.service.handoff import Handoff
from dynamo.service.replica import Replica
from dynamo.stats import Stats
from dynamo.storage import GroupCommitter, HintStore, MemoryBackend
from ring.hashing import partition_for_key

PARTITIONS = 8
ME = "fallback"
GONE = "gone"  # the hints' target: force-removed, so no ring names it


class FakeMembership:
    """The routing Handoff asks for: a fixed preference list per partition, and who is alive."""

    def __init__(self, primaries: dict[int, list[str]], alive: set[str]) -> None:
        self.ring = types.SimpleNamespace(partitions=PARTITIONS)
        self.primaries, self.alive = primaries, alive

    def preflist(self, partition: int, n_val: int):
        return types.SimpleNamespace(primaries=tuple(types.SimpleNamespace(node=node)
                                                     for node in self.primaries[partition]))

    def is_alive(self, node: str) -> bool:
        return node in self.alive

    def names(self, node: str) -> bool:
        return any(node in nodes for nodes in self.primaries.values())

    def is_primary(self, partition: int, n_val: int) -> bool:
        return ME in self.primaries[partition]


class FakePool:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list]] = []

    async def call(self, node: str, type_: str, body, timeout_s: float):
        self.calls.append((node, type_, body))
        return len(body)


def _keys_in_two_partitions() -> tuple[bytes, bytes]:
    waiting = b"w0"
    other = next(key for key in (b"d%d" % i for i in range(100))
                 if partition_for_key(b"b", key, PARTITIONS) != partition_for_key(b"b", waiting, PARTITIONS))
    return waiting, other


def test_a_key_without_a_live_primary_waits_and_the_rest_goes_without_backoff():
    waiting_key, deliverable_key = _keys_in_two_partitions()
    committer = GroupCommitter(MemoryBackend(), in_thread=False)
    hints = HintStore(committer)
    replica = Replica(committer, hints, PARTITIONS, Stats())
    membership = FakeMembership({partition_for_key(b"b", waiting_key, PARTITIONS): ["p1", "p2", "p3"],
                                 partition_for_key(b"b", deliverable_key, PARTITIONS): ["p4", "p5", "p6"]},
                                alive={ME, "p5", "p6"})
    pool = FakePool()
    stats = Stats()
    handoff = Handoff(ME, types.SimpleNamespace(may_forget=lambda obj: True), replica, hints, pool, membership,
                      types.SimpleNamespace(get=lambda bucket: types.SimpleNamespace(n_val=3)), stats,
                      interval_s=1.0, batch=2, backoff_max_s=60.0, timeout_s=5.0,
                      logger=logging.LoggerAdapter(logging.getLogger("test"), {}))
    blobs = {key: encode_object(put(None, Content(key, "text/plain", 1), None, "client:1"))
             for key in (waiting_key, deliverable_key)}

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            # Hints in id order: two for the waiting key (a whole first batch), then one for the other key.
            for key in (waiting_key, waiting_key, deliverable_key):
                await replica.merge_in(b"b", key, blobs[key], GONE)

            await handoff.round()
            assert pool.calls == [("p5", "kv.handoff", [[b"b", deliverable_key, blobs[deliverable_key]]]),
                                  ("p6", "kv.handoff", [[b"b", deliverable_key, blobs[deliverable_key]]])]
            assert [hint.key for hint in hints.pending(GONE)] == [waiting_key, waiting_key]
            assert stats.hints_delivered == 1 and stats.handoff_failures == 0
            assert replica.read(b"b", deliverable_key) is None  # handed on: we are no primary of it
            assert replica.read(b"b", waiting_key) == blobs[waiting_key]  # kept: the only copy we know of

            await handoff.round()  # still nobody to take it: nothing sent, nothing counted as failed
            assert len(pool.calls) == 2 and hints.count(GONE) == 2 and stats.handoff_failures == 0

            membership.alive.add("p2")  # a primary is back: the very next round delivers
            await handoff.round()
            assert pool.calls[2:] == [("p2", "kv.handoff", [[b"b", waiting_key, blobs[waiting_key]]])]
            assert hints.count(GONE) == 0 and stats.hints_delivered == 3
            assert replica.read(b"b", waiting_key) is None
            await committer.aclose()

    trio.run(main)
