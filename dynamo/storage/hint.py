"""The durable hint store: writes a fallback holds for a primary that was down, until it hands them back.

Theory of operation: a hint is (target node id, partition, bucket, key, blob, created_us) plus an id. Hints
live in the backend next to the objects (SQLite: the `hint` table of the same file) and are written
through the same group committer, so `add` returns only once the hint is durable: a fallback that crashes
right after acknowledging a write still hands it over after restart. Handoff reads a target's hints in id
order with `pending` (resumable with after_id), sends them, and `remove`s the ones the target acknowledged.

Rules it keeps:
- Ids are assigned here, in the order `make`/`add` is called, counting up from the largest id on disk, so
  they only grow within a process and never collide with a stored hint. One HintStore per backend.
- Hints are never merged or coalesced: two hints for one key may hold concurrent siblings, and the target
  merges them (DVV merge is idempotent, so delivering a hint twice after a crash is harmless).
- To store an object and a hint atomically, `make` the hint and submit [Put(...), HintAdd(hint)] together.
- The in-memory variant for tests and simulations is this class over a MemoryBackend: no separate code.
"""

from __future__ import annotations

from typing import Iterable

from dynamo.storage.backend import Hint, HintAdd, HintRemove
from dynamo.storage.commit import GroupCommitter


class HintStore:
    """Hints kept durable through `committer` (and its backend)."""

    def __init__(self, committer: GroupCommitter) -> None:
        self.committer = committer
        self.backend = committer.backend
        self._next_id = self.backend.hint_id_max() + 1

    def make(self, target: str, partition: int, bucket: bytes, key: bytes, blob: bytes,
             created_us: int) -> Hint:
        """A new hint with a fresh id, not yet stored (for callers that batch it with other ops)."""
        hint = Hint(self._next_id, target, partition, bucket, key, blob, created_us)
        self._next_id += 1
        return hint

    async def add(self, target: str, partition: int, bucket: bytes, key: bytes, blob: bytes,
                  created_us: int) -> Hint:
        """Store a hint for `target`; returns it once durable."""
        hint = self.make(target, partition, bucket, key, blob, created_us)
        await self.committer.submit([HintAdd(hint)])
        return hint

    def pending(self, target: str, limit: int | None = None, after_id: int | None = None) -> list[Hint]:
        """Up to `limit` hints for `target` with id > after_id, oldest first."""
        return self.backend.hints(target, after_id=after_id, limit=limit)

    async def remove(self, hint_ids: Iterable[int]) -> None:
        """Drop delivered hints (durably; unknown ids are ignored)."""
        ops = [HintRemove(hint_id) for hint_id in hint_ids]
        if ops:
            await self.committer.submit(ops)

    def count(self, target: str | None = None) -> int:
        """Pending hints for `target`, or in all."""
        counts = self.backend.hint_counts()
        return sum(counts.values()) if target is None else counts.get(target, 0)

    def counts(self) -> dict[str, int]:
        """Pending hints per target (for /stats `hints_pending` and gossip)."""
        return self.backend.hint_counts()

    def targets(self) -> set[str]:
        """Targets with at least one pending hint: the nodes handoff should visit."""
        return set(self.backend.hint_counts())

    def has_hint(self, bucket: bytes, key: bytes) -> bool:
        """Whether a hint for (bucket, key) is pending (a tombstone of it must not be reaped yet)."""
        return self.backend.has_hint(bucket, key)

