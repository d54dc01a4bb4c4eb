"""The group committer over each backend: batching, bounds, ordering, failures, cancellation, shutdown."""

import itertools
import threading
import time

import pytest
import trio
import trio.testing

from dynamo.storage import (
    CommitError,
    CommitterClosedError,
    Delete,
    GroupCommitter,
    InvalidOperationError,
    Put,
    SqliteBackend,
    open_group_committer,
)


async def put_all(committer, names, blob=b"v"):
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(committer.put, 0, b"b", name, blob + name)


def test_concurrent_puts_share_fsyncs(make_backend):
    backend = make_backend(recording=True)
    names = [b"k%02d" % i for i in range(50)]

    async def main():
        async with open_group_committer(backend) as committer:
            await put_all(committer, names)
            assert committer.ops_written == 50
            return committer.batches_written

    batches_written = trio.run(main)
    assert len(backend.attempts) == batches_written
    assert len(backend.attempts) < 50  # 50 writers at once did not pay 50 fsyncs
    for name in names:
        assert backend.get(0, b"b", name) == b"v" + name


def test_batches_are_bounded(make_backend):
    backend = make_backend(recording=True)
    names = [b"k%02d" % i for i in range(40)]

    async def main():
        async with open_group_committer(backend, batch_ops_max=4, batch_bytes_max=10_000) as committer:
            await put_all(committer, names[:20])
            await put_all(committer, names[20:], blob=b"x" * 3000)  # ~3 KB each: 3 per batch at most

    trio.run(main)
    assert all(len(ops) <= 4 for ops in backend.attempts)
    assert all(sum(op.size_bytes for op in ops) <= 10_000 for ops in backend.attempts)
    assert sum(len(ops) for ops in backend.attempts) == 40
    assert all(backend.get(0, b"b", name) is not None for name in names)


def test_a_submit_bigger_than_a_batch_still_goes(make_backend):
    backend = make_backend()

    async def main():
        async with open_group_committer(backend, batch_ops_max=2, batch_bytes_max=100) as committer:
            await committer.submit([Put(0, b"b", b"k%d" % i, b"x" * 500) for i in range(5)])

    trio.run(main)
    assert backend.count(0) == 5


def test_failed_batch_raises_in_every_writer_and_writes_nothing(make_backend):
    backend = make_backend(recording=True)
    backend.fail_if = lambda ops: any(op.key == b"poison" for op in ops)
    names = [b"k%02d" % i for i in range(19)] + [b"poison"]
    outcome = {}

    async def writer(committer, name):
        try:
            await committer.put(0, b"b", name, b"v")
            outcome[name] = "ok"
        except CommitError as exc:
            assert "injected write failure" in str(exc)
            outcome[name] = "failed"

    async def main():
        async with open_group_committer(backend) as committer:
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(writer, committer, name)
            await committer.put(0, b"b", b"later", b"v")  # the committer goes on after a failure
            assert committer.batches_failed >= 1

    trio.run(main)
    failed_batches = [ops for ops in backend.attempts if backend.fail_if(ops)]
    in_failed = {op.key for ops in failed_batches for op in ops}
    assert max(len(ops) for ops in failed_batches) > 1  # the failure reached several writers at once
    assert {n for n, o in outcome.items() if o == "failed"} == in_failed
    assert {n for n, o in outcome.items() if o == "ok"} == set(names) - in_failed
    assert all(backend.get(0, b"b", name) is None for name in in_failed)
    assert backend.get(0, b"b", b"later") == b"v"


def test_order_later_submit_wins(make_backend):
    backend = make_backend()

    async def main():
        async with open_group_committer(backend) as committer:
            await committer.submit([Put(0, b"b", b"k", b"1"), Put(0, b"b", b"k", b"2")])
            assert committer.get(0, b"b", b"k") == b"2"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(committer.put, 0, b"b", b"j", b"first")
                await trio.testing.wait_all_tasks_blocked()  # the first put is queued or in flight
                nursery.start_soon(committer.put, 0, b"b", b"j", b"second")
                nursery.start_soon(committer.delete, 0, b"b", b"k")
            assert committer.get(0, b"b", b"j") == b"second"
            assert committer.get(0, b"b", b"k") is None

    trio.run(main)


def test_bad_ops_are_refused_before_queueing(make_backend):
    backend = make_backend()

    async def main():
        async with open_group_committer(backend) as committer:
            with pytest.raises(InvalidOperationError):
                await committer.submit([Put(0, b"b", b"k", b"v"), "junk"])
            with pytest.raises(InvalidOperationError):
                await committer.put(0, b"b", "k", b"v")
            await committer.submit([])

    trio.run(main)
    assert backend.count() == 0


def test_cancelled_writer_does_not_cancel_the_write(make_backend):
    backend = make_backend(recording=True)
    backend.gate = threading.Event()

    async def cancel_when_writing(scope):
        await trio.to_thread.run_sync(backend.entered.wait)  # the batch is inside write_batch
        scope.cancel()

    async def main():
        committer = GroupCommitter(backend, in_thread=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            with trio.CancelScope() as scope:
                nursery.start_soon(cancel_when_writing, scope)
                await committer.put(0, b"b", b"k", b"v")
            assert scope.cancelled_caught
            backend.gate.set()
            await committer.aclose()
        assert committer.batches_written == 1

    trio.run(main)
    assert backend.get(0, b"b", b"k") == b"v"  # the write went on without its waiter


def test_stopping_fails_unwritten_writes(make_backend):
    """Cancelling run (a crash) while batch 1 is being written: batch 1 completes and is acknowledged;
    batch 2, still open, fails with CommitterClosedError and is not in the store; later writes fail."""
    backend = make_backend(recording=True)
    backend.gate = threading.Event()
    outcome = {}

    async def writer(committer, name):
        try:
            await committer.put(0, b"b", name, b"v")
            outcome[name] = "ok"
        except CommitterClosedError:
            outcome[name] = "closed"

    async def main():
        committer = GroupCommitter(backend, in_thread=True)
        async with trio.open_nursery() as nursery:
            run_scope = trio.CancelScope()

            async def run():
                with run_scope:
                    await committer.run()

            nursery.start_soon(run)
            nursery.start_soon(writer, committer, b"first")
            await trio.to_thread.run_sync(backend.entered.wait)
            nursery.start_soon(writer, committer, b"second")
            await trio.testing.wait_all_tasks_blocked()
            run_scope.cancel()
            backend.gate.set()
        with pytest.raises(CommitterClosedError):
            await committer.put(0, b"b", b"third", b"v")

    trio.run(main)
    assert outcome == {b"first": "ok", b"second": "closed"}
    assert backend.get(0, b"b", b"first") == b"v"
    assert backend.get(0, b"b", b"second") is None


def test_aclose_writes_everything_queued(make_backend):
    backend = make_backend()
    names = [b"k%02d" % i for i in range(30)]

    async def main():
        committer = GroupCommitter(backend, batch_ops_max=3)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            for name in names:
                nursery.start_soon(committer.put, 0, b"b", name, b"v")
            await trio.testing.wait_all_tasks_blocked()
            await committer.aclose()
            with pytest.raises(CommitterClosedError):
                await committer.put(0, b"b", b"late", b"v")
        with pytest.raises(RuntimeError):
            await committer.run()

    trio.run(main)
    assert backend.count() == 30
    assert backend.get(0, b"b", b"late") is None


def test_writes_queued_before_run_starts_are_written(make_backend):
    backend = make_backend()

    async def main():
        committer = GroupCommitter(backend)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer.put, 0, b"b", b"early", b"v")
            await trio.testing.wait_all_tasks_blocked()
            assert backend.get(0, b"b", b"early") is None
            await nursery.start(committer.run)
            await committer.aclose()
            assert backend.get(0, b"b", b"early") == b"v"

    trio.run(main)


def test_delete_through_committer(make_backend):
    backend = make_backend()

    async def main():
        async with open_group_committer(backend) as committer:
            await committer.put(1, b"b", b"k", b"v")
            await committer.submit([Delete(1, b"b", b"k"), Put(1, b"b", b"k2", b"w")])

    trio.run(main)
    assert backend.get(1, b"b", b"k") is None
    assert list(backend.iterate(1)) == [(b"b", b"k2", b"w")]


def test_write_in_thread_returns_raises_and_outlives_a_cancel():
    from dynamo.storage.commit import write_in_thread

    main_thread = threading.get_ident()
    release = threading.Event()
    finished = []

    def slow(value):
        release.wait(5)
        finished.append(threading.get_ident())
        return value * 2

    def fails():
        raise KeyError("in the thread")

    async def main():
        assert await write_in_thread(lambda: threading.get_ident()) != main_thread
        with pytest.raises(KeyError, match="in the thread"):
            await write_in_thread(fails)
        results = []
        with trio.CancelScope() as scope:
            scope.cancel()  # already cancelled: the call still runs to the end and returns its result
            trio.lowlevel.current_trio_token().run_sync_soon(release.set)
            results.append(await write_in_thread(slow, 21))
            await trio.lowlevel.checkpoint()  # the cancel arrives at the next checkpoint
        assert scope.cancelled_caught and results == [42] and len(finished) == 1

    trio.run(main)


def test_enqueue_returns_before_the_write_and_its_ops_land_even_if_the_caller_goes(make_backend):
    """The coordinator's use: act once the ops are in a batch (send them on), learn the outcome later."""
    backend = make_backend(recording=True)

    async def main():
        committer = GroupCommitter(backend)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            queued = await committer.enqueue([Put(0, b"b", b"k", b"v1")])
            assert backend.get(0, b"b", b"k") is None  # in a batch, not yet written
            with trio.CancelScope() as scope:
                scope.cancel()
                await queued.wait()  # the waiter goes; the write stays
            again = await committer.enqueue([Put(0, b"b", b"k2", b"v2")])
            await again.wait()
            assert queued.settled and again.settled
            assert (await committer.enqueue([])).settled  # nothing to write: settled at once
            await committer.aclose()
        assert committer.closed_cleanly

    trio.run(main)
    assert backend.get(0, b"b", b"k") == b"v1" and backend.get(0, b"b", b"k2") == b"v2"


def test_wait_shielded_outlasts_a_cancel_and_raises_it_at_the_next_checkpoint(make_backend):
    """The coordinator's wait for its own copy: a cancel that comes while the batch is being written
    neither cuts the wait short nor is lost; the batch's error still reaches the waiter; a settled
    batch answers at once."""
    backend = make_backend(recording=True)
    backend.fail_if = lambda ops: any(op.key == b"poison" for op in ops)
    seen = []

    async def main():
        async with open_group_committer(backend) as committer:
            queued = await committer.enqueue([Put(0, b"b", b"k", b"v1")])
            with trio.CancelScope() as scope:
                scope.cancel()
                await queued.wait_shielded()
                seen.append(("settled", queued.settled, backend.get(0, b"b", b"k")))
                await trio.lowlevel.checkpoint()
                seen.append("not cancelled")  # never reached: the cancel was only put off
            seen.append(("cancelled", scope.cancelled_caught))
            await queued.wait_shielded()  # settled already: at once
            poison = await committer.enqueue([Put(0, b"b", b"poison", b"v")])
            with pytest.raises(CommitError, match="injected"):
                await poison.wait_shielded()
            await (await committer.enqueue([])).wait_shielded()  # nothing to write

    trio.run(main)
    assert seen == [("settled", True, b"v1"), ("cancelled", True)]


def test_enqueue_reports_a_failed_batch_and_the_committer_is_then_not_clean(make_backend):
    backend = make_backend(recording=True)
    backend.fail_if = lambda ops: any(op.key == b"poison" for op in ops)

    async def main():
        async with open_group_committer(backend) as committer:
            queued = await committer.enqueue([Put(0, b"b", b"poison", b"v")])
            with pytest.raises(CommitError, match="injected"):
                await queued.wait()
        assert not committer.closed_cleanly
        with pytest.raises(CommitterClosedError):
            await committer.enqueue([Put(0, b"b", b"late", b"v")])

    trio.run(main)
    assert backend.get(0, b"b", b"poison") is None


def test_enqueue_nowait_and_on_settled_hear_each_outcome_exactly_once(make_backend):
    """The task-free path: queue without waiting, hear the outcome from the batch's settling: success,
    a failed batch, and a committer stopped with the batch still open. A callback that raises does not
    keep the others of its batch from hearing."""
    backend = make_backend(recording=True)
    backend.fail_if = lambda ops: any(op.key == b"poison" for op in ops)
    heard: list = []

    def hear(name):
        return lambda error: heard.append((name, type(error).__name__ if error else None))

    async def main():
        committer = GroupCommitter(backend)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            ok = committer.enqueue_nowait([Put(0, b"b", b"k", b"v")])
            ok.on_settled(lambda error: 1 / 0)  # a broken callback, logged
            ok.on_settled(hear("ok"))
            assert heard == [] and backend.get(0, b"b", b"k") is None  # queued, not yet durable
            await ok.wait()
            assert heard == [("ok", None)]
            ok.on_settled(hear("late"))  # already settled: heard at once
            assert heard[-1] == ("late", None)
            bad = committer.enqueue_nowait([Put(0, b"b", b"poison", b"v")])
            bad.on_settled(hear("bad"))
            with pytest.raises(CommitError):
                await bad.wait()
            assert heard[-1] == ("bad", "CommitError")
            committer.enqueue_nowait([]).on_settled(hear("empty"))
            assert heard[-1] == ("empty", None)
            nursery.cancel_scope.cancel()  # a crash: the next open batch is never written
        stopped = committer.enqueue_nowait  # closed now
        with pytest.raises(CommitterClosedError):
            stopped([Put(0, b"b", b"x", b"v")])

    trio.run(main)
    assert [name for name, _ in heard] == ["ok", "late", "bad", "empty"]

    backend2 = make_backend()
    heard.clear()

    async def open_batch_at_stop():
        committer = GroupCommitter(backend2)
        committer.enqueue_nowait([Put(0, b"b", b"k", b"v")]).on_settled(hear("unwritten"))
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.cancel()
            await nursery.start(committer.run)  # cancelled at once: the open batch fails, closed

    trio.run(open_batch_at_stop)
    assert heard == [("unwritten", "CommitterClosedError")]


def test_enqueue_nowait_refuses_rather_than_waits_for_room(make_backend):
    backend = make_backend()

    async def main():
        committer = GroupCommitter(backend, batch_ops_max=2)
        assert committer.enqueue_nowait([Put(0, b"b", b"a", b"v")]) is not None
        assert committer.enqueue_nowait([Put(0, b"b", b"b", b"v")]) is not None
        assert committer.enqueue_nowait([Put(0, b"b", b"c", b"v")]) is None  # full: the caller must wait
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            await committer.submit([Put(0, b"b", b"c", b"v")])  # the waiting path goes through
            await committer.aclose()

    trio.run(main)
    assert [backend.get(0, b"b", k) for k in (b"a", b"b", b"c")] == [b"v", b"v", b"v"]


class _ThreadNotingSqlite(SqliteBackend):
    """Notes the thread of each write_batch; `delay_s` makes a write slow (a stalling disk)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = []
        self.delay_s = 0.0

    def write_batch(self, ops):
        self.threads.append(threading.get_ident())
        time.sleep(self.delay_s)
        super().write_batch(ops)


def test_where_a_blocking_backend_is_written(tmp_path, monkeypatch):
    """Small batches from the event loop, big ones from a worker thread; after a write from the loop slower
    than the stall mark, or a window of writes whose median is over the slow-disk mark, every batch from
    the thread for a spell, then the loop again. in_thread forces one way."""
    from dynamo.storage import commit

    monkeypatch.setattr(commit, "SLOW_LOOP_WRITE_S", 0.5)  # far above any real write of the test's disk
    monkeypatch.setattr(commit, "SLOW_DISK_MEDIAN_S", 0.25)
    monkeypatch.setattr(commit, "SLOW_DISK_WINDOW", 3)

    backend = _ThreadNotingSqlite(tmp_path / "store.sqlite3")
    loop_thread = threading.get_ident()
    clock = trio.testing.MockClock()  # the spell is in trio time: the test moves it by hand
    names = (b"k%04d" % i for i in itertools.count())

    def small():
        return [Put(0, b"b", next(names), b"v")]

    async def written_from_loop(committer, ops) -> bool:
        await committer.submit(ops)
        return backend.threads[-1] == loop_thread

    async def main():
        async with open_group_committer(backend) as committer:
            assert await written_from_loop(committer, small())
            big = [Put(0, b"b", next(names), b"v") for _ in range(commit.INLINE_OPS_MAX + 1)]
            assert not await written_from_loop(committer, big)
            assert not await written_from_loop(committer, [Put(0, b"b", next(names), b"x" * commit.INLINE_BYTES_MAX)])
            assert committer.thread_spells == 0
            backend.delay_s = commit.SLOW_LOOP_WRITE_S * 1.5
            assert await written_from_loop(committer, small())  # the stall: from the loop, once
            backend.delay_s = 0.0
            assert committer.thread_spells == 1
            assert not await written_from_loop(committer, small())  # the spell: the thread
            clock.jump(commit.THREAD_SPELL_S / 2)
            assert not await written_from_loop(committer, small())
            clock.jump(commit.THREAD_SPELL_S / 2)
            assert await written_from_loop(committer, small())  # spell over: the loop again
            assert committer.batches_written == 7 and committer.batches_in_loop == 3
            # A slow disk: no write stalls, but the median of a window of them is over the mark.
            backend.delay_s = commit.SLOW_DISK_MEDIAN_S * 1.2
            slow_writes = 0
            while committer.thread_spells == 1:  # within one window (the last fast write is in the first)
                assert await written_from_loop(committer, small())
                slow_writes += 1
                assert slow_writes <= commit.SLOW_DISK_WINDOW
            backend.delay_s = 0.0
            assert committer.thread_spells == 2 and slow_writes >= 2  # a median, not one slow write
            assert not await written_from_loop(committer, small())
            clock.jump(commit.THREAD_SPELL_S)
            assert await written_from_loop(committer, small())
        async with open_group_committer(backend, in_thread=True) as committer:
            assert not await written_from_loop(committer, small())
        async with open_group_committer(backend, in_thread=False) as committer:
            assert await written_from_loop(committer, big)
            backend.delay_s = commit.SLOW_LOOP_WRITE_S * 1.5
            assert await written_from_loop(committer, small())
            assert await written_from_loop(committer, small())  # forced: no spell
            backend.delay_s = 0.0

    try:
        trio.run(main, clock=clock)
    finally:
        backend.close()


def test_a_memory_backend_is_always_written_from_the_loop():
    from dynamo.storage import MemoryBackend

    backend = MemoryBackend()
    assert GroupCommitter(backend).in_thread is False
