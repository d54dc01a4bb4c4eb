"""The io_uring fdatasync (storage/uring.py), and the group committer's background flush around it.

The ring's own tests need a kernel that lets this process set one up; where it does not (a seccomp profile
that refuses io_uring, a kernel without it) they skip and say why, and the node falls back to flushing
from the loop, which every other storage test covers. The committer's tests use a stand-in ring whose
flush the test holds and releases, so they run everywhere."""

import errno
import os

import pytest
import trio
import trio.testing

from dynamo.storage import (
    CommitError,
    CommitterClosedError,
    GroupCommitter,
    Put,
    SqliteBackend,
    SyncError,
    open_group_committer,
)
from dynamo.storage import uring
from dynamo.storage.uring import FsyncRing


@pytest.fixture
def ring():
    ring = FsyncRing.open()
    if ring is None:
        pytest.skip(f"io_uring is not available here: {uring.unavailable_reason}")
    yield ring
    ring.close()


def test_the_ring_flushes_and_reports_errors_as_fdatasync_does(ring, tmp_path):
    path = tmp_path / "data"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    async def main():
        for number in range(20):
            os.pwrite(fd, b"%04d" % number, 4 * number)
            await ring.fdatasync(fd)
        with pytest.raises(OSError) as raised:
            await ring.fdatasync(2**30)  # no such descriptor
        assert raised.value.errno == errno.EBADF
        await ring.fdatasync(fd)  # the ring still works after a failed call

    try:
        trio.run(main)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(b"%04d" % number for number in range(20))


def test_the_ring_serves_one_call_at_a_time_and_never_abandons_one(ring, tmp_path):
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT, 0o644)
    seen = []

    async def second_caller():
        with pytest.raises(RuntimeError, match="one fdatasync at a time"):
            await ring.fdatasync(fd)
        seen.append("refused")

    async def main():
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(second_caller)  # runs while the first call waits for its completion
                scope.cancel()
                await ring.fdatasync(fd)  # cancelled before it began, yet it waits for the kernel's answer
                seen.append("flushed")
                await trio.lowlevel.checkpoint()
                seen.append("never: the cancel comes at the next checkpoint")
            seen.append(scope.cancelled_caught)
        await ring.fdatasync(fd)  # free again

    try:
        trio.run(main)
    finally:
        os.close(fd)
    assert seen == ["refused", "flushed", True] or seen == ["flushed", "refused", True]


def test_a_closed_ring_refuses_and_closing_twice_is_harmless(ring):
    ring.close()
    ring.close()
    with pytest.raises(RuntimeError, match="closed"):
        trio.run(ring.fdatasync, 0)


def test_where_io_uring_cannot_be_had_open_says_why(monkeypatch):
    monkeypatch.setattr(uring.sys, "platform", "darwin")
    assert FsyncRing.open() is None
    assert "Linux only" in uring.unavailable_reason


@pytest.fixture
def store(tmp_path):
    store = SqliteBackend(tmp_path / "store.sqlite3")
    yield store
    store.close()  # idempotent: a test may have closed it to reopen the file


class HeldRing:
    """A stand-in FsyncRing: each fdatasync waits until the test releases it, with an outcome."""

    def __init__(self):
        self.calls = []
        self.release = trio.Event()
        self.error = None

    async def fdatasync(self, fd):
        self.calls.append(fd)
        await self.release.wait()
        self.release = trio.Event()
        if self.error is not None:
            raise self.error


def test_the_committer_releases_writers_only_after_the_background_flush(store):
    """A batch from the loop is committed unflushed, then flushed through the ring while the loop serves
    on: its writers wait for the flush, and writes made meanwhile gather into the next batch."""
    ring = HeldRing()

    async def main():
        committer = GroupCommitter(store, in_thread=False, fsync_ring=ring)
        done = []

        async def put(name):
            await committer.put(0, b"b", name, b"v")
            done.append(name)

        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            nursery.start_soon(put, b"k1")
            await trio.testing.wait_all_tasks_blocked()
            assert ring.calls == [store.sync_fd()] and done == []  # committed, visible, not yet durable
            assert store.get(0, b"b", b"k1") == b"v"
            nursery.start_soon(put, b"k2")
            nursery.start_soon(put, b"k3")
            await trio.testing.wait_all_tasks_blocked()
            assert done == [] and store.get(0, b"b", b"k2") is None  # waiting for the flush to end
            ring.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert done == [b"k1"] and len(ring.calls) == 2  # k2 and k3: one batch, one flush
            ring.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(done) == [b"k1", b"k2", b"k3"]
            await committer.aclose()
        assert committer.closed_cleanly and committer.background_syncs == 2 == committer.batches_written

    trio.run(main)


def test_a_failed_background_flush_stops_the_committer_and_the_store(store):
    """Fail-stop: the batch's writers hear CommitError, the committer's run raises SyncError (a node
    stops on it), writes queued behind fail with CommitterClosedError, and the store takes no more."""
    ring = HeldRing()
    heard = {}

    async def main():
        committer = GroupCommitter(store, in_thread=False, fsync_ring=ring)

        async def put(name):
            try:
                await committer.put(0, b"b", name, b"v")
                heard[name] = None
            except Exception as exc:
                heard[name] = exc

        with trio.fail_after(30), pytest.raises(ExceptionGroup) as raised:  # from the committer's run
            async with trio.open_nursery() as nursery:
                await nursery.start(committer.run)
                nursery.start_soon(put, b"first")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(put, b"behind")
                await trio.testing.wait_all_tasks_blocked()
                ring.error = OSError(errno.EIO, "Input/output error")
                ring.release.set()
        [error] = raised.value.exceptions
        assert isinstance(error, SyncError) and "Input/output error" in str(error)
        assert not committer.closed_cleanly

    trio.run(main)
    assert isinstance(heard[b"first"], CommitError) and isinstance(heard[b"first"].__cause__, SyncError)
    assert isinstance(heard[b"behind"], CommitterClosedError)
    with pytest.raises(SyncError):
        store.write_batch([Put(0, b"b", b"later", b"v")])


def test_a_ring_that_refuses_a_flush_is_dropped_and_the_loop_flushes(store, monkeypatch):
    """SubmitError (the kernel would not take the call) is not a failed flush: the committer flushes that
    batch with a plain fdatasync, drops the ring, and goes on."""
    ring = HeldRing()
    ring.error = uring.SubmitError(errno.EPERM, "refused")
    ring.release.set()
    flushed = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushed.append(fd), real_fdatasync(fd)))

    async def main():
        async with open_group_committer(store, in_thread=False, fsync_ring=ring) as committer:
            await committer.put(0, b"b", b"k1", b"v")
            assert committer.fsync_ring is None and flushed == [store.sync_fd()]
            await committer.put(0, b"b", b"k2", b"v")
        return committer

    committer = trio.run(main)
    assert committer.closed_cleanly and committer.background_syncs == 0
    assert len(ring.calls) == 1 and len(flushed) == 2  # the second batch: write_batch's own flush


def test_the_committer_flushes_through_a_real_ring(ring, store, tmp_path):
    names = [b"k%03d" % number for number in range(100)]

    async def main():
        committer = GroupCommitter(store, in_thread=False, fsync_ring=ring)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            async with trio.open_nursery() as writers:
                for name in names:
                    writers.start_soon(committer.put, 0, b"b", name, b"v" + name)
            await committer.aclose()
        return committer

    committer = trio.run(main)
    store.close()
    assert committer.closed_cleanly and committer.ops_written == 100
    assert 1 <= committer.background_syncs == committer.batches_written < 100
    with SqliteBackend(tmp_path / "store.sqlite3") as reopened:
        assert all(reopened.get(0, b"b", name) == b"v" + name for name in names)
