"""A bounded, write-through cache of stored values in front of a backend's reads.

Why: every get reads the object on each replica it reaches, and every write reads it before merging; a
hot key's blob served from memory skips an SQLite query (about 15 µs, a few percent of a quorum get).

Theory of operation: least-recently-used entries (partition, bucket, key) -> blob, or None for "not
stored", evicted
beyond a byte budget (blob, names and a fixed per-entry overhead). The backend applies every committed
write to the cache after its COMMIT and before it returns (`written`), and fills it after reading a miss
(`filled`). Reads and writes run on different threads, so one lock guards the entries, and a fill is
dropped when any write committed while its read was running (`generation` taken before the read): the
read may have seen the state before that write, and the write's own update must not be overwritten by it.
A failed write leaves the cache as it was, like the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable

ENTRY_OVERHEAD_BYTES = 120  # the dict slot, the tuple key and the bytes headers, roughly
MISSING = object()  # lookup's answer when the cache does not know the key (None means "not stored")
Name = tuple[int, bytes, bytes]  # (partition, bucket, key)


class ValueCache:
    def __init__(self, bytes_max: int) -> None:
        if bytes_max < 0:
            raise ValueError(f"bytes_max must be >= 0, got {bytes_max}")
        self.bytes_max = bytes_max
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[Name, bytes | None] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # raised by every committed write

    def lookup(self, name: Name) -> tuple[object, int]:
        """(the blob, None for "not stored", or MISSING; the generation to hand to `filled`)."""
        with self._lock:
            value = self._entries.get(name, MISSING)
            if value is MISSING:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(name)
            return value, self._generation

    def filled(self, name: Name, blob: bytes | None, generation: int) -> None:
        """Remember what a read found, unless a write committed since `lookup` gave `generation`."""
        with self._lock:
            if generation == self._generation:
                self._set(name, blob)

    def written(self, changes: Iterable[tuple[Name, bytes | None]]) -> None:
        """Apply a committed batch: (name, blob or None for a delete), in commit order."""
        with self._lock:
            self._generation += 1
            for name, blob in changes:
                self._set(name, blob)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self.bytes = 0

    def _set(self, name: Name, blob: bytes | None) -> None:
        entries = self._entries
        old = entries.pop(name, MISSING)
        if old is not MISSING:
            self.bytes -= _size(name, old)
        size = _size(name, blob)
        if size > self.bytes_max:
            return
        entries[name] = blob
        self.bytes += size
        while self.bytes > self.bytes_max:
            evicted, value = entries.popitem(last=False)
            self.bytes -= _size(evicted, value)

    def __len__(self) -> int:
        return len(self._entries)


def _size(name: Name, blob: bytes | None) -> int:
    return ENTRY_OVERHEAD_BYTES + len(name[1]) + len(name[2]) + (len(blob) if blob is not None else 0)
