"""A replica write without a task (`merge_in_nowait`, the RPC reader's kv.replicate): the same stored
result as `merge_in`, the key locked until the commit settled, and a decline (nothing done) whenever it
would have to wait."""

from __future__ import annotations

import trio
import trio.testing

from dynamo.object import Content, encode_object, merge, put
from dynamo.service.replica import BULK_MERGES_MAX, OBJECTS, Replica
from dynamo.stats import Stats
from dynamo.storage import GroupCommitter, HintStore, MemoryBackend, Put

PARTITIONS = 8


def _blob(value: bytes, actor: str) -> bytes:
    return encode_object(put(None, Content(value, "text/plain", 1_000_000, ()), None, actor))


def _replica(batch_ops_max: int = 2048) -> tuple[Replica, GroupCommitter, list]:
    committer = GroupCommitter(MemoryBackend(), in_thread=False, batch_ops_max=batch_ops_max)
    replica = Replica(committer, HintStore(committer), PARTITIONS, Stats())
    stored: list = []
    replica.on_stored = lambda partition, bucket, key, blob, obj: stored.append((key, blob))
    return replica, committer, stored


def test_a_write_without_a_task_stores_what_merge_in_stores_and_answers_once_durable():
    replica, committer, stored = _replica()
    first, second = _blob(b"one", "a:1"), _blob(b"two", "b:1")
    done: list = []

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            assert replica.merge_in_nowait(b"bk", b"k", first, done.append)
            assert done == [] and replica.read(b"bk", b"k") is None  # queued, not yet durable
            assert replica.locks.locked((b"bk", b"k"))  # held until the commit settles
            assert not replica.merge_in_nowait(b"bk", b"k", second, done.append)  # busy key: declined
            while not done:
                await trio.sleep(0)
            assert done == [None] and not replica.locks.locked((b"bk", b"k"))
            assert replica.merge_in_nowait(b"bk", b"k", second, done.append)  # concurrent: siblings
            while len(done) < 2:
                await trio.sleep(0)
            assert replica.merge_in_nowait(b"bk", b"k", second, done.append)  # already there: no write
            assert done == [None, None, None]  # answered at once
            await committer.aclose()

    trio.run(main)
    expected = merge(OBJECTS.decode(first), OBJECTS.decode(second))
    assert OBJECTS.decode(replica.read(b"bk", b"k")) == expected
    assert [key for key, _ in stored] == [b"k", b"k"] and OBJECTS.decode(stored[-1][1]) == expected
    assert replica.stats.vnode_puts == 3


def test_a_write_that_would_wait_for_room_or_carries_a_hint_is_declined_untouched():
    replica, committer, _ = _replica(batch_ops_max=1)
    done: list = []
    committer.enqueue_nowait([Put(0, b"bk", b"filler", b"x")])  # the open batch is full (not running)
    assert not replica.merge_in_nowait(b"bk", b"k", _blob(b"v", "a:1"), done.append)
    assert not replica.locks.locked((b"bk", b"k")) and done == []
    assert not replica.rpc_replicate_nowait([b"bk", b"j", _blob(b"v", "a:1"), "node9"], done.append)
    assert not replica.locks.locked((b"bk", b"j")) and replica.stats.hints_written == 0


def test_a_failed_commit_reaches_the_caller_and_frees_the_key():
    replica, committer, stored = _replica()
    done: list = []

    async def main():
        async with trio.open_nursery() as nursery:
            assert replica.merge_in_nowait(b"bk", b"k", _blob(b"v", "a:1"), done.append)
            nursery.cancel_scope.cancel()
            await nursery.start(committer.run)  # stopped before writing: the open batch fails

    trio.run(main)
    assert len(done) == 1 and type(done[0]).__name__ == "CommitterClosedError"
    assert not replica.locks.locked((b"bk", b"k")) and stored == [] and replica.stats.vnode_puts == 0


def test_bulk_merges_beyond_the_limit_wait_without_locking_their_keys():
    """Handoff batches queued behind others must not hold their keys: a client write of one of them
    goes ahead while the batches wait (BULK_MERGES_MAX of them are applied at a time)."""
    replica, committer, _ = _replica()
    release = trio.Event()
    real_submit = committer.submit

    async def slow_submit(ops):  # a commit that takes as long as the test says
        await release.wait()
        await real_submit(ops)
    committer.submit = slow_submit
    batches = [[(b"bk", b"b%d-%d" % (i, j), _blob(b"v", f"a{i}:1")) for j in range(3)]
               for i in range(BULK_MERGES_MAX + 2)]

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            async with trio.open_nursery() as merges:
                for batch in batches:
                    merges.start_soon(replica.merge_many, batch)
                await trio.testing.wait_all_tasks_blocked()
                # trio starts the tasks in no set order: any BULK_MERGES_MAX of them hold all their keys,
                # and the others hold none.
                applying = [batch for batch in batches if all(replica.locks.locked((b, k)) for b, k, _ in batch)]
                waiting = [batch for batch in batches if not any(replica.locks.locked((b, k)) for b, k, _ in batch)]
                assert (len(applying), len(waiting)) == (BULK_MERGES_MAX, 2)
                waiting_key = waiting[0][0][1]
                committer.submit = real_submit  # the client's write commits at once
                await replica.coordinate(b"bk", waiting_key, lambda o: put(o, Content(b"client"), None, "c:1"),
                                         None)
                committer.submit = slow_submit
                release.set()
            await committer.aclose()
        for batch in batches:
            for bucket, key, _ in batch:
                assert replica.read(bucket, key) is not None
        return waiting_key

    waiting_key = trio.run(main)
    values = sorted(c.value for c in OBJECTS.decode(replica.read(b"bk", waiting_key)).siblings)
    assert values == [b"client", b"v"]
