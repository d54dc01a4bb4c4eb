"""fdatasync without stopping the event loop: one Linux io_uring, driven through ctypes, for one caller.

Why: a durable write ends in an fdatasync of SQLite's write-ahead log. Made from the event loop, the call
stops the whole node for as long as the disk takes (0.3-0.6 ms per commit under the bench's puts, a third
of the loop's time at 600 commits a second), and every request on the node waits with it. A worker
thread frees the loop, but in CPython it costs more than it frees: the thread must take the GIL back
from the busy loop to report, and under the put load that made each put dearer and the cluster slower
(see commit.py). io_uring runs the fdatasync in the kernel's own worker: the loop submits it with one
system call, serves requests meanwhile, and wakes on an eventfd (registered with the ring, watched by
trio) when the result is posted. No Python thread, so no GIL round trip.

Theory of operation: `FsyncRing.open()` sets up a small ring (io_uring_setup), maps its submission and
completion queues and its submission entries (mmap), and registers a non-blocking eventfd for
completions. `await ring.fdatasync(fd)` fills one submission entry (IORING_OP_FSYNC with
IORING_FSYNC_DATASYNC), publishes it by advancing the queue's tail and enters the kernel once
(io_uring_enter); it then waits until the eventfd is readable, takes the completion off the queue and
returns, or raises OSError with the call's errno. The kernel reads the tail inside io_uring_enter and
posts completions before it signals the eventfd, so each side sees the other's writes after a system
call, which orders them.

Rules it keeps:
- A kernel that will not take a submission raises SubmitError: nothing was flushed and nothing failed to
  flush, so the caller flushes another way (the group committer then drops the ring).
- One call at a time: the ring belongs to one caller (a node's group committer). A second concurrent call
  raises RuntimeError rather than racing the first for the queues.
- A submitted fdatasync is never abandoned: the wait is shielded from cancellation, because the caller
  must learn whether its data is durable (a cancel is raised at the caller's next checkpoint instead).
- Where io_uring cannot be had (not Linux, a kernel before 5.6, a seccomp profile that refuses it, as
  Docker's default does, or `kernel.io_uring_disabled`), `open()` returns None and says why in
  `unavailable_reason`: the caller falls back to a blocking fdatasync. Nothing else changes.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import sys

import trio

# System call numbers: io_uring came after the architectures' tables were unified, so these hold on
# x86-64, arm64 and the other 64-bit Linux ports alike.
_SYS_SETUP, _SYS_ENTER, _SYS_REGISTER = 425, 426, 427
_OFF_SQ_RING, _OFF_CQ_RING, _OFF_SQES = 0, 0x8000000, 0x10000000  # mmap offsets of the three areas
_OP_FSYNC = 3
_FSYNC_DATASYNC = 1
_REGISTER_EVENTFD = 4
_ENTRIES = 4  # one fsync in flight at a time; the kernel rounds the queues up as it likes

_PARAMS_BYTES = 120  # struct io_uring_params
_U32 = struct.Struct("=I")
_SQE = struct.Struct("=BBHiQQIIQ24x")  # opcode flags ioprio fd off addr len fsync_flags user_data
_CQE = struct.Struct("=QiI")  # user_data res flags

unavailable_reason = ""  # why the last open() returned None


class SubmitError(OSError):
    """The kernel would not take the fdatasync (nothing was flushed, nothing failed to flush): the caller
    should flush another way."""


class FsyncRing:
    """An io_uring that runs one fdatasync at a time in the kernel; see the module docstring."""

    def __init__(self, fd: int, params: bytearray, libc: ctypes.CDLL) -> None:
        self._fd = fd
        self._libc = libc
        self._maps: list[mmap.mmap] = []
        self._eventfd = -1
        self._busy = False
        self._next_id = 1
        try:
            sq_entries, cq_entries = struct.unpack_from("=II", params, 0)
            # struct io_sqring_offsets at byte 40: head tail ring_mask ring_entries flags dropped array
            # (the head is not needed: with one call in flight the queue never fills)
            _, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("=7I", params, 40)
            # struct io_cqring_offsets at byte 80: head tail ring_mask ring_entries overflow cqes
            cq_head, cq_tail, cq_mask, _, _, cqes = struct.unpack_from("=6I", params, 80)
            shared = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            self._sq = self._map(sq_array + sq_entries * _U32.size, shared, _OFF_SQ_RING)
            self._cq = self._map(cqes + cq_entries * _CQE.size, shared, _OFF_CQ_RING)
            self._sqes = self._map(sq_entries * _SQE.size, shared, _OFF_SQES)
            self._sq_tail, self._sq_array = sq_tail, sq_array
            self._sq_mask = _U32.unpack_from(self._sq, sq_mask)[0]
            self._cq_head, self._cq_tail, self._cqes = cq_head, cq_tail, cqes
            self._cq_mask = _U32.unpack_from(self._cq, cq_mask)[0]
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            event_fd = ctypes.c_int32(self._eventfd)
            if libc.syscall(_SYS_REGISTER, fd, _REGISTER_EVENTFD, ctypes.byref(event_fd), 1) < 0:
                raise OSError(ctypes.get_errno(), "io_uring_register(EVENTFD) failed")
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls) -> FsyncRing | None:
        """A ring, or None where io_uring is not available (the reason is in `unavailable_reason`)."""
        global unavailable_reason
        if not sys.platform.startswith("linux"):
            unavailable_reason = f"io_uring is Linux only (this is {sys.platform})"
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            params = bytearray(_PARAMS_BYTES)
            fd = libc.syscall(_SYS_SETUP, _ENTRIES, (ctypes.c_char * _PARAMS_BYTES).from_buffer(params))
            if fd < 0:
                code = ctypes.get_errno()
                unavailable_reason = f"io_uring_setup failed: {os.strerror(code)} ({errno.errorcode.get(code, code)})"
                return None
            return cls(fd, params, libc)
        except (OSError, AttributeError, ValueError) as exc:
            unavailable_reason = f"io_uring could not be set up: {exc}"
            return None

    def _map(self, length: int, flags: int, offset: int) -> mmap.mmap:
        area = mmap.mmap(self._fd, length, flags, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self._maps.append(area)
        return area

    async def fdatasync(self, fd: int) -> None:
        """fdatasync(fd) in the kernel's worker while the loop goes on; raises OSError as os.fdatasync
        does, or SubmitError when the ring would not take the call."""
        if self._busy:
            raise RuntimeError("FsyncRing serves one fdatasync at a time")
        if self._fd < 0:
            raise RuntimeError("FsyncRing is closed")
        self._busy = True
        try:
            user_data = self._submit(fd)
            with trio.CancelScope(shield=True):  # never abandon a submitted sync: see the module docstring
                while True:
                    result = self._reap(user_data)
                    if result is not None:
                        break
                    await trio.lowlevel.wait_readable(self._eventfd)
                    try:
                        os.eventfd_read(self._eventfd)
                    except BlockingIOError:
                        pass
            if result < 0:
                raise OSError(-result, f"fdatasync: {os.strerror(-result)}")
        finally:
            self._busy = False

    def _submit(self, fd: int) -> int:
        user_data, self._next_id = self._next_id, self._next_id + 1
        sq = self._sq
        tail = _U32.unpack_from(sq, self._sq_tail)[0]
        index = tail & self._sq_mask
        _SQE.pack_into(self._sqes, index * _SQE.size, _OP_FSYNC, 0, 0, fd, 0, 0, 0, _FSYNC_DATASYNC, user_data)
        _U32.pack_into(sq, self._sq_array + index * _U32.size, index)
        _U32.pack_into(sq, self._sq_tail, (tail + 1) & 0xFFFFFFFF)
        while True:
            submitted = self._libc.syscall(_SYS_ENTER, self._fd, 1, 0, 0, None, 0)
            if submitted == 1:
                return user_data
            code = ctypes.get_errno()
            if submitted < 0 and code == errno.EINTR:
                continue
            # Not taken: withdraw the entry so the queue is as it was, and report.
            _U32.pack_into(sq, self._sq_tail, tail)
            raise SubmitError(code or errno.EIO, f"io_uring_enter did not take the fdatasync ({submitted})")

    def _reap(self, user_data: int) -> int | None:
        """The result of `user_data` if posted (completions of no one else can be there), else None."""
        cq = self._cq
        head = _U32.unpack_from(cq, self._cq_head)[0]
        if head == _U32.unpack_from(cq, self._cq_tail)[0]:
            return None
        posted, result, _flags = _CQE.unpack_from(cq, self._cqes + (head & self._cq_mask) * _CQE.size)
        _U32.pack_into(cq, self._cq_head, (head + 1) & 0xFFFFFFFF)
        if posted != user_data:
            raise RuntimeError(f"io_uring posted completion {posted}, expected {user_data}")
        return result

    def close(self) -> None:
        """Release the ring (call it when no fdatasync is in flight)."""
        for area in self._maps:
            area.close()
        self._maps = []
        if self._eventfd >= 0:
            try:
                trio.lowlevel.notify_closing(self._eventfd)  # trio may still have it registered
            except RuntimeError:
                pass  # outside trio: nothing registered
            os.close(self._eventfd)
            self._eventfd = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
