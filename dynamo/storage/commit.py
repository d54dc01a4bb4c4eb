"""Group commit: the trio driver that turns many concurrent writes into few durable batches.

Theory of operation: writers append their ops to the *open* batch and sleep until that batch is written.
One loop (`run`) takes the open batch, puts a fresh empty one in its place, and hands the taken batch to
`backend.write_batch` (in a worker thread when the backend blocks on disk). While that fsync runs, new
writes gather in the new open batch, so under load one fsync acknowledges many writers; alone, a writer
pays one fsync and no added delay (there is no timer: batching comes only from writers arriving while the
disk is busy).

Rules it keeps:
- A write returns only after the batch holding it is durable. If write_batch fails, every writer of that
  batch raises CommitError (the backend applied none of it); the loop goes on with the next batch. A
  failed flush is the exception: see the last rule.
- The ops of one `submit` call land in one batch, in order; batches are written in the order they opened,
  so a later submit of a key wins over an earlier one, in a batch or across batches.
- Memory is bounded: at most one batch in flight and one open batch of up to `batch_ops_max` ops and
  `batch_bytes_max` bytes (a single submit bigger than that still goes, alone). When the open batch is
  full, writers wait for room: back-pressure from the disk.
- A writer cancelled while it waits gives up waiting, not the write: its ops may still land.
- `enqueue` is `submit` cut in two: it returns as soon as the ops are in a batch (a `Queued`), so a
  caller can act on the fact that they will be written (the coordinator sends a new version to the other
  replicas while its own copy is being committed) and `await queued.wait()` for the outcome later.
- Without a task: `enqueue_nowait` queues only if that needs no wait (else None: the caller takes the
  waiting path), and `Queued.on_settled(callback)` hears the outcome instead of `wait`, called exactly
  once as the batch settles. The RPC reader answers a replica write this way (replica.py).
- `aclose` refuses new submits but writes every write submitted before it, including writers still
  waiting for room. When `run` stops otherwise (cancelled: the node crashed), writes not yet written fail
  with CommitterClosedError. Nothing is ever silently dropped.
- A failed flush is fatal (fail-stop, as in PostgreSQL after a failed fsync): the backend raises SyncError
  and takes no more writes, since what it committed since its last good flush may be gone from the disk
  whatever later flushes say. The batch's writers get CommitError, and `run` raises the SyncError, which
  stops the node; writes queued behind fail with CommitterClosedError.
Reads do not queue: `get` goes straight to the backend (SQLite's WAL readers never wait for a commit). A
read may see a batch that is committed and not yet flushed (below); its writers are not yet answered.

Where a batch is written (`in_thread`). A blocking backend (SQLite) is written either from the event loop
itself or from a worker thread, chosen per batch:
- In the loop, when the batch is small (at most INLINE_OPS_MAX ops and INLINE_BYTES_MAX bytes: a put's
  worth of writers, not a handoff batch) and the disk has been fast. The loop then stops for the write and
  its fsync (0.2 ms on this project's test VM). What that saves: a worker thread must take the GIL back
  from a busy loop after every SQLite call of the batch, and wake the loop when done. With the thread, a
  put cost 1.13-1.22x the CPU (`tools.cpubench --ops put --compare`, four rounds), and under the bench's
  put load a commit took 3.3 ms on average from the thread's start to its writers' release, where the
  fsync alone takes 0.2 ms.
- In the worker thread otherwise: big batches, and every batch for THREAD_SPELL_S after the disk showed
  itself slow from the loop, in either of two ways. After the spell the next small batch tries the loop
  again.
  - A stall: one write took over SLOW_LOOP_WRITE_S. It costs the loop that one write; then requests go on
    while the thread waits on the disk.
  - A slow disk: the median of the last SLOW_DISK_WINDOW writes is over SLOW_DISK_MEDIAN_S (network
    storage, whose every fsync takes ms: the loop would stop that long per batch, and every request with
    it).
  Both marks are above a healthy write: under the bench's put load, with three nodes on two cores, writes
  from the loop took 1.9 ms at the median, 4.0-4.6 ms at p90 and 9-13 ms at most, preemption included.
How a batch written from the loop is flushed (`fsync_ring`). Without a ring, `write_batch` commits and
flushes (fdatasync) with the loop stopped meanwhile. With one (a uring.FsyncRing: the node opens it when
`fsync_in_background` is on and the kernel offers io_uring), the loop commits with `write_batch_unsynced`
and the flush of the backend's `sync_fd()` runs in the kernel's worker while the loop serves on; this
task waits for it, then releases the batch's writers. Writes that arrive meanwhile gather in the open
batch, so batches grow. Under the bench's puts (three nodes on two cores, A/B pairs against the same
code flushing from the loop): at w=quorum 3-11% more puts/s (five pairs) and a lower p99, with 6.0 ops
per batch against 5.2; at w=all 0-2% more; at w=1 5% fewer (two pairs), whose only wait is the
coordinator's own flush, which the handoff makes longer. CPU per put rose 0-16%: the kernel's worker
and the extra wake-ups. A worker thread for the flush alone measured worse than the loop: it must take
the GIL back from the busy loop to report. Batches written from the thread flush there.
The node setting `commit_from_loop = false` (`in_thread=True`) writes every batch from the thread.
`in_thread=False` writes every batch from the loop (tests; the memory backend always, which keeps
simulations deterministic).

Latency between fsyncs is what a durable put waits for (twice: coordinator, then replicas), so the loop
keeps it short: a batch goes to its worker thread through `trio.lowlevel.start_thread_soon`
(`write_in_thread`), without the extras of `trio.to_thread.run_sync` (a capacity limiter, a context copy,
naming the OS thread twice); the batch's writers are released straight from the thread's delivery, not
one scheduler pass later; and a batch that filled up meanwhile goes out at once.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Iterable

import trio

from dynamo.storage.backend import Backend, Delete, Op, Put, StorageError, SyncError, check_count, check_ops
from dynamo.storage.uring import FsyncRing, SubmitError

log = logging.getLogger("dynamo.commit")

BATCH_OPS_MAX_DEFAULT = 2048
BATCH_BYTES_MAX_DEFAULT = 8 * 1024 * 1024
INLINE_OPS_MAX = 128  # a batch written from the event loop holds at most this many ops
INLINE_BYTES_MAX = 256 * 1024  # and this many bytes
SLOW_LOOP_WRITE_S = 0.05  # a write from the loop that took longer: the disk stalls, use the thread
SLOW_DISK_WINDOW = 32  # writes from the loop whose median is checked, every this many writes
SLOW_DISK_MEDIAN_S = 0.005  # a median above it: the disk is slow, use the thread
THREAD_SPELL_S = 10.0  # for this long, then try the loop again


async def write_in_thread(fn, *args, on_outcome=None):
    """`fn(*args)` in a worker thread; return its result or raise its exception. The thread is never
    abandoned: a cancel is deferred until the call returns, so the caller always learns the outcome.
    `on_outcome(error)` (None on success), if given, runs in the trio thread as soon as the call is
    back, in the same scheduler pass that wakes the caller: whoever it wakes runs a pass sooner."""
    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()

    def back_in_trio(result) -> None:
        if on_outcome is not None:
            on_outcome(getattr(result, "error", None))  # an outcome.Error carries .error, a Value none
        trio.lowlevel.reschedule(task, result)

    def deliver(result) -> None:  # in the worker thread: hand the outcome back to the trio thread
        token.run_sync_soon(back_in_trio, result)

    trio.lowlevel.start_thread_soon(lambda: fn(*args), deliver)
    return await trio.lowlevel.wait_task_rescheduled(lambda _raise_cancel: trio.lowlevel.Abort.FAILED)


class CommitError(StorageError):
    """The batch holding this write failed; none of it was written."""


class CommitterClosedError(StorageError):
    """The group committer is stopped (or stopped before writing this batch)."""


class _Batch:
    """Ops gathered for one write_batch call, and the writers waiting on it."""

    __slots__ = ("ops", "size_bytes", "ready", "done", "error", "callbacks")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.size_bytes = 0
        self.ready = trio.Event()  # set when the first op arrives (or to wake the loop for closing)
        self.done = trio.Event()  # set once written or failed; `error` tells which
        self.error: BaseException | None = None
        self.callbacks: list[Callable[[StorageError | None], None]] | None = None  # Queued.on_settled's

    def finish(self) -> None:
        """Mark the batch settled (`error` already set or not) and run its callbacks, once."""
        self.done.set()
        callbacks, self.callbacks = self.callbacks, None
        for callback in callbacks or ():
            try:
                callback(_error_for_writer(self))
            except Exception:  # one caller's bug must not keep the others of the batch from hearing
                log.exception("a commit callback failed")


def _error_for_writer(batch: _Batch | None) -> StorageError | None:
    """What a writer of a settled batch learns: None (durable), CommitError or CommitterClosedError."""
    if batch is None or batch.error is None:
        return None
    if isinstance(batch.error, CommitterClosedError):
        return CommitterClosedError(str(batch.error))
    error = CommitError(f"batch of {len(batch.ops)} ops failed: {batch.error}")
    error.__cause__ = batch.error
    return error


class Queued:
    """Ops placed in a batch by `GroupCommitter.enqueue`: `await wait()` returns once they are durable,
    or raises CommitError / CommitterClosedError when their batch failed (then none of it was written)."""

    __slots__ = ("_batch",)

    def __init__(self, batch: _Batch | None) -> None:
        self._batch = batch  # None: nothing to write

    @property
    def settled(self) -> bool:
        return self._batch is None or self._batch.done.is_set()

    async def wait(self) -> None:
        batch = self._batch
        if batch is None:
            return
        await batch.done.wait()
        error = _error_for_writer(batch)
        if error is not None:
            raise error

    async def wait_shielded(self) -> None:
        """`wait`, shielded from cancellation: it returns (or raises the batch's error) only once the batch
        settled, and a cancel that comes meanwhile is raised at the caller's next checkpoint. The same as
        `wait` inside `trio.CancelScope(shield=True)`, without the scope: entering and leaving one was 3% of
        a node's CPU under the bench's puts, where every coordinated write waits this way."""
        batch = self._batch
        if batch is not None and not batch.done.is_set():
            task = trio.lowlevel.current_task()
            self.on_settled(lambda _error: trio.lowlevel.reschedule(task))
            await trio.lowlevel.wait_task_rescheduled(lambda _raise_cancel: trio.lowlevel.Abort.FAILED)
        error = _error_for_writer(batch)
        if error is not None:
            raise error

    def on_settled(self, callback: Callable[[StorageError | None], None]) -> None:
        """`wait` without a task: `callback(None)` once the ops are durable, or `callback(error)` with the
        error `wait` would raise. Called exactly once, in the trio thread: at once when the outcome is
        already known, else from the committer as the batch settles (so it must not block)."""
        batch = self._batch
        if batch is None or batch.done.is_set():
            callback(_error_for_writer(batch))
        elif batch.callbacks is None:
            batch.callbacks = [callback]
        else:
            batch.callbacks.append(callback)


class GroupCommitter:
    """Batches writes to `backend` so one durable write_batch covers many concurrent writers.

    Start `run` in a nursery (`await nursery.start(committer.run)`), or use `open_group_committer`.
    `in_thread`: True writes every batch from a worker thread, False every batch from the event loop;
    None (the default) chooses per batch for a blocking backend (see the module docstring) and writes a
    non-blocking one from the loop.
    """

    def __init__(self, backend: Backend, *, batch_ops_max: int = BATCH_OPS_MAX_DEFAULT,
                 batch_bytes_max: int = BATCH_BYTES_MAX_DEFAULT, in_thread: bool | None = None,
                 fsync_ring: FsyncRing | None = None) -> None:
        check_count("batch_ops_max", batch_ops_max, allow_none=False)
        check_count("batch_bytes_max", batch_bytes_max, allow_none=False)
        if batch_ops_max == 0 or batch_bytes_max == 0:
            raise ValueError("batch_ops_max and batch_bytes_max must be positive")
        self.backend = backend
        self.batch_ops_max = batch_ops_max
        self.batch_bytes_max = batch_bytes_max
        self.in_thread = in_thread if in_thread is not None or backend.blocking else False
        self.fsync_ring = fsync_ring  # flushes a batch written from the loop, the loop free meanwhile
        self.batches_written = 0
        self.batches_in_loop = 0  # of batches_written
        self.background_syncs = 0  # of batches_in_loop: flushed through fsync_ring
        self.thread_spells = 0  # thread spells begun: a stalled write, or a slow median (module docstring)
        self._loop_write_s: list[float] = []  # durations of the writes from the loop since the last median
        self._thread_until_s = -math.inf  # trio time before which batches go to the thread
        self.ops_written = 0
        self.batches_failed = 0
        self._open = _Batch()
        self._room = trio.lowlevel.ParkingLot()  # writers waiting for room in the open batch
        self._room_waiters = 0  # writers parked there: submitted before any aclose, so still owed a write
        self._state = "new"  # new -> running -> closing -> closed
        self._stopped = trio.Event()
        self._unsettled_at_stop = 0  # ops dropped or of unknown outcome when the loop stopped

    # -- writers -------------------------------------------------------------------------------------

    async def put(self, partition: int, bucket: bytes, key: bytes, blob: bytes) -> None:
        """Store blob under (bucket, key); returns once durable."""
        await self.submit([Put(partition, bucket, key, blob)])

    async def delete(self, partition: int, bucket: bytes, key: bytes) -> None:
        """Remove (bucket, key) of `partition`; returns once durable."""
        await self.submit([Delete(partition, bucket, key)])

    async def submit(self, ops: Iterable[Op]) -> None:
        """Write ops atomically, in order, in one batch; return once that batch is durable."""
        queued = await self.enqueue(ops)
        await queued.wait()

    async def enqueue(self, ops: Iterable[Op]) -> "Queued":
        """Put ops in the open batch (waiting for room while it is full) and return at once, before the
        batch is written. From then on the ops *will* be offered to the backend: cancelling the caller
        no longer stops them; `Queued.wait()` says whether they became durable. Raises like `submit`
        when the ops never made it into a batch (committer closed, caller cancelled while waiting)."""
        ops = check_ops(ops)
        size_bytes = sum(op.size_bytes for op in ops)
        await trio.lowlevel.checkpoint_if_cancelled()
        if not ops:
            return Queued(None)
        self._check_accepting()
        while True:
            batch = self._open
            if not batch.ops or (len(batch.ops) + len(ops) <= self.batch_ops_max
                                 and batch.size_bytes + size_bytes <= self.batch_bytes_max):
                break
            self._room_waiters += 1
            try:
                await self._room.park()
            finally:
                self._room_waiters -= 1
                if self._state == "closing":
                    self._open.ready.set()  # a closing loop re-checks whether anyone is left
            if self._state == "closed":
                raise CommitterClosedError("group committer stopped before this write was queued")
        return self._add(batch, ops, size_bytes)

    def enqueue_nowait(self, ops: Iterable[Op]) -> "Queued | None":
        """`enqueue` for a caller that cannot wait (a callback, an RPC reader): the Queued, or None when
        the ops would have to wait for room (the open batch is full, or writers already wait for room and
        must not be overtaken). Raises CommitterClosedError when closed."""
        ops = check_ops(ops)
        if not ops:
            return Queued(None)
        self._check_accepting()
        size_bytes = sum(op.size_bytes for op in ops)
        batch = self._open
        if self._room_waiters or (batch.ops and (len(batch.ops) + len(ops) > self.batch_ops_max
                                                 or batch.size_bytes + size_bytes > self.batch_bytes_max)):
            return None
        return self._add(batch, ops, size_bytes)

    @staticmethod
    def _add(batch: _Batch, ops: list[Op], size_bytes: int) -> "Queued":
        batch.ops.extend(ops)
        batch.size_bytes += size_bytes
        batch.ready.set()
        return Queued(batch)

    def _check_accepting(self) -> None:
        if self._state in ("closing", "closed"):
            raise CommitterClosedError("group committer is closed")

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, partition: int, bucket: bytes, key: bytes) -> bytes | None:
        """The durable blob of (bucket, key) in `partition`, or None: a direct backend read."""
        return self.backend.get(partition, bucket, key)

    @property
    def mean_batch_ops(self) -> float:
        return self.ops_written / self.batches_written if self.batches_written else math.nan

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until aclose(); on exit, fail whatever was not written."""
        if self._state != "new":
            raise RuntimeError("GroupCommitter.run() can only be called once")
        self._state = "running"
        task_status.started()
        try:
            while True:
                batch = self._open
                if not batch.ops and self._state == "closing" and not self._room_waiters:
                    return
                if batch.ops:
                    # Writers queued while the last batch was written: go on at once, without a pass
                    # round the scheduler (the wait for the worker thread is this loop's yield), unless
                    # the loop was cancelled meanwhile.
                    await trio.lowlevel.checkpoint_if_cancelled()
                else:
                    await batch.ready.wait()
                    if not batch.ops:
                        continue  # woken by aclose with nothing to write
                self._open = _Batch()
                if self._room:  # nobody waits for room, the usual case: skip unpark_all's own cost
                    self._room.unpark_all()
                await self._write(batch)
        finally:
            self._stop()

    @property
    def closed_cleanly(self) -> bool:
        """Stopped by `aclose` with every submitted write written: no batch failed, none was dropped or
        interrupted. (The node's clean-stop mark depends on it: see node.py.)"""
        return self._state == "closed" and self.batches_failed == 0 and self._unsettled_at_stop == 0

    def _stop(self) -> None:
        self._unsettled_at_stop += len(self._open.ops)
        self._state = "closed"
        self._open.error = CommitterClosedError("group committer stopped before writing this batch")
        self._open.finish()
        self._room.unpark_all()
        self._stopped.set()

    def _in_loop(self, batch: _Batch) -> bool:
        """Whether to write `batch` from the event loop (see the module docstring)."""
        if self.in_thread is not None:
            return not self.in_thread
        return (len(batch.ops) <= INLINE_OPS_MAX and batch.size_bytes <= INLINE_BYTES_MAX
                and trio.current_time() >= self._thread_until_s)

    async def _write(self, batch: _Batch) -> None:
        in_loop = self._in_loop(batch)
        ring = self.fsync_ring
        try:
            if in_loop:
                started_s = time.perf_counter()
                if ring is None:
                    self.backend.write_batch(batch.ops)
                else:
                    self.backend.write_batch_unsynced(batch.ops)
                if self.in_thread is None:
                    self._note_loop_write(time.perf_counter() - started_s)
                fd = self.backend.sync_fd() if ring is not None else None
                if fd is not None:
                    await self._flush(ring, fd)
            else:
                # Not abandoned on cancel: the thread finishes the transaction and we learn its outcome.
                # The writers are released from the thread's delivery, not after this task resumes.
                await write_in_thread(self.backend.write_batch, batch.ops,
                                      on_outcome=lambda error: self._settle(batch, error))
        except SyncError as exc:  # fail-stop: nothing written since the last good flush is known durable
            self._settle(batch, exc)
            log.critical("stopping the group committer: %s", exc)
            raise
        except Exception as exc:
            self._settle(batch, exc)
        except BaseException as exc:
            self._settle(batch, exc)
            raise
        else:
            self._settle(batch, None)
        if in_loop:
            if batch.error is None:
                self.batches_in_loop += 1
            await trio.lowlevel.checkpoint()  # let the writers just released (and others) run

    async def _flush(self, ring: FsyncRing, fd: int) -> None:
        """fdatasync(fd) through the ring (the loop serving on); from the loop if the ring refuses it, and
        from then on without the ring. A failed flush raises the backend's SyncError."""
        try:
            try:
                await ring.fdatasync(fd)  # shielded inside: the outcome is always learnt
                self.background_syncs += 1
            except SubmitError as exc:
                log.warning("io_uring would not take a flush (%s): flushing from the event loop from now on", exc)
                self.fsync_ring = None
                os.fdatasync(fd)
        except OSError as exc:
            raise self.backend.sync_failed(exc) from exc

    def _note_loop_write(self, duration_s: float) -> None:
        """Begin a thread spell when this write stalled, or when the median of the window is slow."""
        durations = self._loop_write_s
        durations.append(duration_s)
        full = len(durations) >= SLOW_DISK_WINDOW
        median_s = sorted(durations)[len(durations) // 2] if full else 0.0
        slow = duration_s > SLOW_LOOP_WRITE_S or median_s > SLOW_DISK_MEDIAN_S
        if full or slow:
            durations.clear()  # a new window after each median, and after each spell begun
        if slow:
            self.thread_spells += 1
            self._thread_until_s = trio.current_time() + THREAD_SPELL_S

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        """Record a batch's outcome and wake its writers, once."""
        if batch.done.is_set():
            return
        if error is None:
            self.batches_written += 1
            self.ops_written += len(batch.ops)
        elif isinstance(error, Exception):
            batch.error = error
            self.batches_failed += 1
        else:  # the writing itself was interrupted (cancelled, interrupted thread): we cannot know
            self._unsettled_at_stop += len(batch.ops)
            batch.error = CommitterClosedError("group committer stopped while writing; outcome unknown")
        batch.finish()

    async def aclose(self) -> None:
        """Stop accepting writes, write what is queued, and wait for `run` to return."""
        if self._state == "new":
            self._stop()
        if self._state == "running":
            self._state = "closing"
            self._open.ready.set()
        await self._stopped.wait()


@asynccontextmanager
async def open_group_committer(backend: Backend, **options) -> AsyncIterator[GroupCommitter]:
    """`async with open_group_committer(backend) as committer:` runs the loop for the block's lifetime
    and, on a normal exit, writes everything queued before returning."""
    committer = GroupCommitter(backend, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        try:
            yield committer
        finally:
            await committer.aclose()
