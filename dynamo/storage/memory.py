"""The in-memory backend: the storage interface on dicts and sorted dicts, for tests and the simulator.

Theory of operation: `_Disk` holds everything a real backend would keep on disk; `MemoryBackend` is an
open handle on it. write_batch checks every op before touching anything and then applies them in order, so
a batch is all or nothing, and it is "durable" on return because the state outlives the handle. To model a
crash and restart in a simulation, drop the node (its group committer never writes what it had not yet
acknowledged) and give the restarted node `old_backend.reopened()`: a fresh handle on the same disk.

Layout: objects live in one SortedDict per partition, keyed (bucket, key), so a get is two hash
lookups; a running total counts them. Hints live in a SortedDict by id, one per target, plus a
count of pending hints per (bucket, key) for has_hint.
"""

from __future__ import annotations

import collections
from typing import Sequence

from sortedcontainers import SortedDict

from dynamo.storage.backend import (
    Backend,
    Delete,
    Hint,
    HintAdd,
    HintRemove,
    InvalidOperationError,
    Op,
    Put,
    StorageClosedError,
    check_after,
    check_bytes,
    check_count,
    check_ops,
    check_partition,
)

ObjectKey = tuple[bytes, bytes]


class _Disk:
    """What survives a crash."""

    def __init__(self) -> None:
        self.object_count = 0
        self.objects: dict[int, SortedDict] = {}  # partition -> SortedDict[(bucket, key)] -> blob
        self.hints: dict[int, Hint] = {}
        self.hints_by_target: dict[str, SortedDict] = {}  # target -> SortedDict[hint_id] -> Hint
        self.hinted_keys: collections.Counter[ObjectKey] = collections.Counter()


class MemoryBackend(Backend):
    """Storage in process memory. write_batch never blocks, so drivers call it inline."""

    blocking = False

    def __init__(self, _disk: _Disk | None = None) -> None:
        self._disk = _Disk() if _disk is None else _disk
        self._closed = False

    def reopened(self) -> MemoryBackend:
        """A new open handle on this backend's state: what a restarted node finds on its disk."""
        return MemoryBackend(self._disk)

    def _live(self) -> _Disk:
        if self._closed:
            raise StorageClosedError("memory backend is closed")
        return self._disk

    def get(self, partition: int, bucket: bytes, key: bytes) -> bytes | None:
        disk = self._live()
        check_partition(partition)
        check_bytes("bucket", bucket)
        check_bytes("key", key)
        objects = disk.objects.get(partition)
        return None if objects is None else objects.get((bucket, key))

    def write_batch(self, ops: Sequence[Op]) -> None:
        disk = self._live()
        for op in check_ops(ops):  # all checked before the first is applied
            if isinstance(op, Put):
                self._put(disk, op)
            elif isinstance(op, Delete):
                self._delete(disk, op.partition, (op.bucket, op.key))
            elif isinstance(op, HintAdd):
                self._remove_hint(disk, op.hint.hint_id)
                self._add_hint(disk, op.hint)
            else:
                assert isinstance(op, HintRemove)
                self._remove_hint(disk, op.hint_id)

    @staticmethod
    def _put(disk: _Disk, op: Put) -> None:
        objects = disk.objects.setdefault(op.partition, SortedDict())
        size = len(objects)
        objects[op.bucket, op.key] = op.blob
        disk.object_count += len(objects) - size

    @staticmethod
    def _delete(disk: _Disk, partition: int, name: ObjectKey) -> None:
        objects = disk.objects.get(partition)
        if objects is None or objects.pop(name, None) is None:
            return
        disk.object_count -= 1
        if not objects:
            del disk.objects[partition]

    @staticmethod
    def _add_hint(disk: _Disk, hint: Hint) -> None:
        disk.hints[hint.hint_id] = hint
        disk.hints_by_target.setdefault(hint.target, SortedDict())[hint.hint_id] = hint
        disk.hinted_keys[hint.bucket, hint.key] += 1

    @staticmethod
    def _remove_hint(disk: _Disk, hint_id: int) -> None:
        hint = disk.hints.pop(hint_id, None)
        if hint is None:
            return
        by_target = disk.hints_by_target[hint.target]
        del by_target[hint_id]
        if not by_target:
            del disk.hints_by_target[hint.target]
        name = (hint.bucket, hint.key)
        disk.hinted_keys[name] -= 1
        if disk.hinted_keys[name] == 0:
            del disk.hinted_keys[name]

    def scan(self, partition: int, after: tuple[bytes, bytes] | None, limit: int) -> list[tuple[bytes, bytes, bytes]]:
        disk = self._live()
        check_partition(partition)
        check_after(after)
        check_count("limit", limit, allow_none=False)
        objects = disk.objects.get(partition)
        if objects is None or limit == 0:
            return []
        names = objects.irange(minimum=after, inclusive=(False, True))
        page = []
        for name in names:
            page.append((name[0], name[1], objects[name]))
            if len(page) == limit:
                break
        return page

    def count(self, partition: int | None = None) -> int:
        disk = self._live()
        if partition is None:
            return disk.object_count
        check_partition(partition)
        return len(disk.objects.get(partition, ()))

    def partitions(self) -> set[int]:
        return set(self._live().objects)

    def hints(self, target: str, after_id: int | None = None, limit: int | None = None) -> list[Hint]:
        disk = self._live()
        if type(target) is not str:
            raise InvalidOperationError(f"target must be a str node id, not {target!r}")
        check_count("after_id", after_id)
        check_count("limit", limit)
        by_target = disk.hints_by_target.get(target)
        if by_target is None or limit == 0:
            return []
        found = []
        for hint_id in by_target.irange(minimum=after_id, inclusive=(False, True)):
            found.append(by_target[hint_id])
            if len(found) == limit:
                break
        return found

    def hint_counts(self) -> dict[str, int]:
        return {target: len(hints) for target, hints in self._live().hints_by_target.items()}

    def hint_id_max(self) -> int:
        disk = self._live()
        return max(disk.hints, default=0)

    def has_hint(self, bucket: bytes, key: bytes) -> bool:
        disk = self._live()
        check_bytes("bucket", bucket)
        check_bytes("key", key)
        return (bucket, key) in disk.hinted_keys

    def close(self) -> None:
        self._closed = True
