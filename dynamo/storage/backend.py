"""The storage interface: what every backend offers, the operations it applies, and its errors.

Theory of operation: a backend is a durable map (partition, bucket, key) → blob, where the blob is opaque
bytes (an object encoded by dynamo/object.py), plus a durable queue of hints. The partition is the key's
ring partition, a function of (bucket, key) that callers compute (ring.hashing.partition_for_key) and pass
to every get, put and delete of the key: keying by it lets a whole partition be walked in (bucket, key)
order for handoff and anti-entropy with no second index to keep up on every write. Every change goes
through `write_batch(ops)`: the ops of one call are applied in order, as one atomic transaction, and are
durable when the call returns. That single entry point is what lets the group committer (commit.py) cover
many concurrent writers with one fsync.

Rules every backend keeps (the shared tests in tests/dynamo/storage check them against each one):
- Buckets, keys and blobs are `bytes`; any bytes, including empty ones and NULs. Validation of what a
  user may name (non-empty keys, size limits) belongs to the API layer, not here.
- Within a batch a later op wins: two puts of one key leave the second blob.
- The same (bucket, key) under two partitions is two objects; the node never does that (one ring, one Q).
- Reads are synchronous. `get`, `has_hint` and one page of `scan` or `hints` are index lookups, cheap
  enough for the event loop; `count`, `partitions`, `hint_counts` and a whole `iterate` grow with the data
  (run them in a thread on a big store). `write_batch` may wait on the disk: when `blocking` is true a
  driver runs it in a worker thread.
- Order is bytewise (bucket first, then key), the same in Python (`bytes` comparison) and SQLite (memcmp).
- Deleting or removing what is absent is a no-op; adding a hint with an id already stored replaces it.

A backend may also split a write from its disk flush (`write_batch_unsynced`, then an fdatasync of
`sync_fd()`), so that a driver can wait for the flush without stopping its event loop (commit.py). A
backend that cannot (the default) has no sync_fd, and its write_batch_unsynced is write_batch.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, Iterator, Sequence

INT64_LIMIT = 2**63  # partitions, hint ids and times are stored as SQLite INTEGERs (signed 64 bit)
PAGE_ROWS_DEFAULT = 256  # rows fetched per page by iterate(); bounds memory and lock hold time
OP_OVERHEAD_BYTES = 64  # rough per-op cost on top of the payload, for batch size accounting


class StorageError(Exception):
    """Base of every storage error."""


class InvalidOperationError(StorageError, ValueError):
    """An op, key or argument of the wrong type or range."""


class StorageOpenError(StorageError, ValueError):
    """The path cannot hold a store: a directory, not a database, or another program's database."""


class SchemaVersionError(StorageOpenError):
    """The database was written by a different schema version of this store."""


class StorageClosedError(StorageError):
    """The backend was used after close()."""


class SyncError(StorageError):
    """An fdatasync failed: writes since the last good one may be lost, and the store takes no more."""


def check_bytes(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise InvalidOperationError(f"{name} must be bytes, not {type(value).__name__}")


def check_partition(partition: object) -> None:
    if type(partition) is not int or not 0 <= partition < INT64_LIMIT:
        raise InvalidOperationError(f"partition must be an int in [0, 2**63), not {partition!r}")


def check_count(name: str, value: object, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if type(value) is not int or value < 0:
        raise InvalidOperationError(f"{name} must be a non-negative int, not {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    """Store `blob` under (bucket, key), replacing what was there; `partition` is the key's ring partition."""

    partition: int
    bucket: bytes
    key: bytes
    blob: bytes

    def __post_init__(self) -> None:
        check_partition(self.partition)
        check_bytes("bucket", self.bucket)
        check_bytes("key", self.key)
        check_bytes("blob", self.blob)

    @property
    def size_bytes(self) -> int:
        return OP_OVERHEAD_BYTES + len(self.bucket) + len(self.key) + len(self.blob)


@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    """Remove (bucket, key) of `partition` for good. Not a user delete: a tombstone is written with Put."""

    partition: int
    bucket: bytes
    key: bytes

    def __post_init__(self) -> None:
        check_partition(self.partition)
        check_bytes("bucket", self.bucket)
        check_bytes("key", self.key)

    @property
    def size_bytes(self) -> int:
        return OP_OVERHEAD_BYTES + len(self.bucket) + len(self.key)


@dataclasses.dataclass(frozen=True, slots=True)
class Hint:
    """A write a fallback holds for `target` (a node id) until it can hand it back.

    `hint_id` orders a target's hints (oldest first) and names the hint for removal; hint.py assigns it.
    `created_us` is the caller's clock in microseconds: storage never reads a clock itself.
    """

    hint_id: int
    target: str
    partition: int
    bucket: bytes
    key: bytes
    blob: bytes
    created_us: int

    def __post_init__(self) -> None:
        if type(self.hint_id) is not int or not 0 < self.hint_id < INT64_LIMIT:
            raise InvalidOperationError(f"hint_id must be a positive int, not {self.hint_id!r}")
        if type(self.target) is not str or not self.target or not self.target.isprintable():
            raise InvalidOperationError(f"target must be a non-empty printable str node id, not {self.target!r}")
        check_partition(self.partition)
        check_bytes("bucket", self.bucket)
        check_bytes("key", self.key)
        check_bytes("blob", self.blob)
        if type(self.created_us) is not int or not -INT64_LIMIT <= self.created_us < INT64_LIMIT:
            raise InvalidOperationError(f"created_us must be a 64-bit int, not {self.created_us!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class HintAdd:
    """Store a hint durably."""

    hint: Hint

    def __post_init__(self) -> None:
        if not isinstance(self.hint, Hint):
            raise InvalidOperationError(f"HintAdd needs a Hint, not {type(self.hint).__name__}")

    @property
    def size_bytes(self) -> int:
        hint = self.hint
        return OP_OVERHEAD_BYTES + len(hint.target) + len(hint.bucket) + len(hint.key) + len(hint.blob)


@dataclasses.dataclass(frozen=True, slots=True)
class HintRemove:
    """Drop a hint once its target has acknowledged it."""

    hint_id: int

    def __post_init__(self) -> None:
        check_count("hint_id", self.hint_id, allow_none=False)

    @property
    def size_bytes(self) -> int:
        return OP_OVERHEAD_BYTES


Op = Put | Delete | HintAdd | HintRemove
OP_TYPES = (Put, Delete, HintAdd, HintRemove)


def check_ops(ops: Sequence[Op]) -> list[Op]:
    """The ops as a list, or InvalidOperationError before anything is applied (keeps batches atomic)."""
    if isinstance(ops, (bytes, str)) or not hasattr(ops, "__iter__"):
        raise InvalidOperationError(f"ops must be a sequence of Put/Delete/HintAdd/HintRemove, not {ops!r}")
    ops = list(ops)
    for op in ops:
        if not isinstance(op, OP_TYPES):
            raise InvalidOperationError(f"not a storage op: {op!r}")
    return ops


def check_after(after: object) -> None:
    if after is None:
        return
    if not (isinstance(after, tuple) and len(after) == 2):
        raise InvalidOperationError(f"after must be None or a (bucket, key) tuple, not {after!r}")
    check_bytes("after bucket", after[0])
    check_bytes("after key", after[1])


class Backend(abc.ABC):
    """A durable store of objects and hints. Subclasses implement the abstract methods."""

    # True when write_batch may block on the disk, so a trio driver must run it in a worker thread.
    blocking: ClassVar[bool] = True

    @abc.abstractmethod
    def get(self, partition: int, bucket: bytes, key: bytes) -> bytes | None:
        """The blob stored under (bucket, key) in `partition`, or None."""

    @abc.abstractmethod
    def write_batch(self, ops: Sequence[Op]) -> None:
        """Apply ops in order, atomically; durable on return. Raises StorageError (nothing applied)."""

    def sync_fd(self) -> int | None:
        """A file descriptor whose fdatasync makes everything `write_batch_unsynced` applied durable, or
        None when this backend cannot split a write from its flush. Raises StorageError if it cannot be
        had now; may change between calls (ask again before each flush)."""
        return None

    def sync_failed(self, error: OSError) -> SyncError:
        """Record that an fdatasync of `sync_fd()` failed and return the SyncError to raise. A backend
        with a sync_fd must then make every later write raise SyncError (what it committed since the last
        good flush may be lost); this default, for backends without one, only builds the error."""
        return SyncError(f"fdatasync failed: {error}")

    def write_batch_unsynced(self, ops: Sequence[Op]) -> None:
        """`write_batch` that may return before the disk flush: applied (readers may see it) on return,
        durable once an fdatasync of `sync_fd()` taken after it has succeeded. Same errors as write_batch.
        A backend without a sync_fd writes durably here."""
        self.write_batch(ops)

    @abc.abstractmethod
    def scan(self, partition: int, after: tuple[bytes, bytes] | None, limit: int) -> list[tuple[bytes, bytes, bytes]]:
        """One page: up to `limit` (bucket, key, blob) of `partition` after `after`, in (bucket, key) order."""

    @abc.abstractmethod
    def count(self, partition: int | None = None) -> int:
        """Number of objects in `partition`, or in the whole store."""

    @abc.abstractmethod
    def partitions(self) -> set[int]:
        """The partitions holding at least one object."""

    @abc.abstractmethod
    def hints(self, target: str, after_id: int | None = None, limit: int | None = None) -> list[Hint]:
        """Hints for `target` with id > after_id, oldest first."""

    @abc.abstractmethod
    def hint_counts(self) -> dict[str, int]:
        """Pending hints per target (targets with none are absent)."""

    @abc.abstractmethod
    def hint_id_max(self) -> int:
        """The largest stored hint id, 0 when there are none."""

    @abc.abstractmethod
    def has_hint(self, bucket: bytes, key: bytes) -> bool:
        """Whether any pending hint carries (bucket, key): tombstones must not be reaped while one does."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release files; later calls raise StorageClosedError. Idempotent."""

    def iterate(self, partition: int, after: tuple[bytes, bytes] | None = None, limit: int | None = None,
                *, page_rows: int = PAGE_ROWS_DEFAULT) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(bucket, key, blob) of `partition` after `after`, in order, fetched a page at a time.

        Resumable: pass the last (bucket, key) seen as `after`. No lock or read transaction is held between
        pages, so writes made meanwhile may or may not show, but order holds and no row shows twice.
        """
        check_partition(partition)
        check_after(after)
        check_count("limit", limit)
        check_count("page_rows", page_rows, allow_none=False)
        if page_rows == 0:
            raise InvalidOperationError("page_rows must be positive")
        return self._pages(partition, after, limit, page_rows)

    def _pages(self, partition: int, after: tuple[bytes, bytes] | None, limit: int | None,
               page_rows: int) -> Iterator[tuple[bytes, bytes, bytes]]:
        left = limit
        while left is None or left > 0:
            want = page_rows if left is None else min(page_rows, left)
            page = self.scan(partition, after, want)
            yield from page
            if len(page) < want:
                return
            if left is not None:
                left -= len(page)
            after = page[-1][0], page[-1][1]

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
