"""Storage: a durable map (bucket, key) → opaque blob with per-partition iteration, plus durable hints.

Layers, bottom up: backend.py (the interface, ops and errors), memory.py and sqlite.py (the two backends),
commit.py (the trio group committer every write goes through; uring.py flushes its batches without
stopping the event loop), hint.py (the hint store on top of it).
A node opens `SqliteBackend(data_dir / "store.sqlite3")`, runs a `GroupCommitter` over it in its nursery,
writes through the committer and reads from the backend directly.
"""

from dynamo.storage.backend import (
    Backend,
    Delete,
    Hint,
    HintAdd,
    HintRemove,
    InvalidOperationError,
    Op,
    Put,
    SchemaVersionError,
    StorageClosedError,
    StorageError,
    StorageOpenError,
    SyncError,
)
from dynamo.storage.commit import CommitError, CommitterClosedError, GroupCommitter, open_group_committer
from dynamo.storage.hint import HintStore
from dynamo.storage.memory import MemoryBackend
from dynamo.storage.sqlite import SCHEMA_VERSION, SqliteBackend

__all__ = [
    "Backend", "CommitError", "CommitterClosedError", "Delete", "GroupCommitter", "Hint", "HintAdd",
    "HintRemove", "HintStore", "InvalidOperationError", "MemoryBackend", "Op", "Put", "SCHEMA_VERSION",
    "SchemaVersionError", "SqliteBackend", "StorageClosedError", "StorageError", "StorageOpenError",
    "SyncError", "open_group_committer",
]
