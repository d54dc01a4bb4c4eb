"""The SQLite backend: the default, durable store, on the standard library's sqlite3.

Theory of operation: one database file in WAL mode. write_batch is one BEGIN IMMEDIATE … COMMIT (all ops
or none) followed by one fdatasync of the write-ahead log, so it is durable on return. SQLite runs with
synchronous=NORMAL, where a COMMIT does not flush the log itself; the flush is ours, which is what lets
`write_batch_unsynced` commit without it and leave the flush (`sync_fd`) to a caller that can wait for it
without stopping its event loop (commit.py, uring.py). Together they are exactly as durable as FULL: the
log holds every committed frame, and its fdatasync covers all of them, the header included; checkpoints
flush the log and then the database themselves, as they do under FULL. What differs is the window
between COMMIT and the flush: readers (and the value cache) see a write before it is durable. The store
never acknowledges such a write (its writers wait for the flush); a power loss inside that window can
lose it, as it could any write that was never acknowledged.

A failed fdatasync stops all writing (SyncError, and every later write refuses): after it the kernel may
have dropped the dirty pages, so nothing committed since the last good flush is known to be on disk, and
a later flush that succeeds would not say otherwise. Reopening the store (a restart) starts again from
what SQLite recovers from the file.

One process owns a store: an exclusive flock on `<file>.lock` refuses a second open (hint ids and the
single-writer design assume it); the kernel releases it when the process dies, even by SIGKILL.

Two connections, each guarded by its own lock because trio's worker threads differ from call to call:
- the writer, used by write_batch (in practice only the group committer, from the event loop or its
  worker thread: commit.py);
- the reader, used by every read. WAL lets it read the last committed state while a commit is running,
  so a read never waits on SQLite for an fsync (the loop only does while it writes a small batch itself,
  commit.py). Reads run in autocommit and fetch whole pages, so no read transaction stays open to pin
  the WAL.

Schema (version in `meta`): `object` is a rowid table with UNIQUE (partition, bucket, key): one index
serves gets (the caller passes the key's partition) and partition walks in (bucket, key) order. Version 1
had UNIQUE (bucket, key) plus an index on (partition, bucket, key), one more B-tree to update per write:
replaying batches of 16 upserts of 160-byte blobs into 100,000 rows, version 2 costs 35 us of CPU per put
against 73 and commits a batch in 1.2 ms against 2.9 (version 1 stores are migrated when opened). A
WITHOUT ROWID table keyed (partition, bucket, key) measured in between (49 us), and slower than both at
2 KiB blobs, as SQLite's docs warn for rows that are not small. `hint` is keyed by id with indexes on
(target, id) and (bucket, key).

Gets first ask the KeySet (key_set.py) whether the key may be stored at all (a new key's read then costs
no query), then a write-through ValueCache (value_cache.py) of recently read and written blobs.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sqlite3
import threading
from typing import Sequence

try:
    import fcntl
except ImportError:  # Windows has no flock: there the lock file is created but not locked
    fcntl = None

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
    check_after,
    check_bytes,
    check_count,
    check_ops,
    check_partition,
)
from dynamo.storage.key_set import KeySet
from dynamo.storage.value_cache import MISSING, ValueCache

SCHEMA_VERSION = 2
CACHE_KIB_DEFAULT = 16 * 1024
VALUE_CACHE_BYTES_DEFAULT = 32 * 1024 * 1024
BUSY_TIMEOUT_MS = 10_000

SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE object (id INTEGER PRIMARY KEY, partition INTEGER NOT NULL, bucket BLOB NOT NULL,"
    " key BLOB NOT NULL, blob BLOB NOT NULL, UNIQUE (partition, bucket, key))",
    "CREATE TABLE hint (id INTEGER PRIMARY KEY, target TEXT NOT NULL, partition INTEGER NOT NULL,"
    " bucket BLOB NOT NULL, key BLOB NOT NULL, blob BLOB NOT NULL, created_us INTEGER NOT NULL)",
    "CREATE INDEX hint_target ON hint (target, id)",
    "CREATE INDEX hint_key ON hint (bucket, key)",
)

SQL_PUT = ("INSERT INTO object (partition, bucket, key, blob) VALUES (?, ?, ?, ?)"
           " ON CONFLICT (partition, bucket, key) DO UPDATE SET blob = excluded.blob")
SQL_DELETE = "DELETE FROM object WHERE partition = ? AND bucket = ? AND key = ?"
SQL_HINT_ADD = ("INSERT OR REPLACE INTO hint (id, target, partition, bucket, key, blob, created_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)")
SQL_HINT_REMOVE = "DELETE FROM hint WHERE id = ?"
SQL_GET = "SELECT blob FROM object WHERE partition = ? AND bucket = ? AND key = ?"
SQL_NAMES = "SELECT partition, bucket, key FROM object"
SQL_SCAN_FIRST = "SELECT bucket, key, blob FROM object WHERE partition = ? ORDER BY bucket, key LIMIT ?"
SQL_SCAN_AFTER = ("SELECT bucket, key, blob FROM object WHERE partition = ? AND (bucket, key) > (?, ?)"
                  " ORDER BY bucket, key LIMIT ?")
SQL_HAS_HINT = "SELECT EXISTS (SELECT 1 FROM hint WHERE bucket = ? AND key = ?)"
SQL_HINTS = ("SELECT id, target, partition, bucket, key, blob, created_us FROM hint"
             " WHERE target = ? AND id > ? ORDER BY id LIMIT ?")


def _put_row(op: Put) -> tuple:
    return op.partition, op.bucket, op.key, op.blob


def _hint_row(op: HintAdd) -> tuple:
    h = op.hint
    return h.hint_id, h.target, h.partition, h.bucket, h.key, h.blob, h.created_us


# op type -> (statement, row of parameters); consecutive ops of one type go to one executemany
_STATEMENTS = {
    Put: (SQL_PUT, _put_row),
    Delete: (SQL_DELETE, lambda op: (op.partition, op.bucket, op.key)),
    HintAdd: (SQL_HINT_ADD, _hint_row),
    HintRemove: (SQL_HINT_REMOVE, lambda op: (op.hint_id,)),
}


class SqliteBackend(Backend):
    """A store in one SQLite file at `path`; missing parent directories are created."""

    blocking = True

    def __init__(self, path: str | os.PathLike, *, cache_kib: int = CACHE_KIB_DEFAULT,
                 value_cache_bytes: int = VALUE_CACHE_BYTES_DEFAULT) -> None:
        self.path = pathlib.Path(path)
        self._closed = False
        self.values = ValueCache(value_cache_bytes)
        self.keys = KeySet()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._wal_fd: int | None = None  # opened at the first flush, when SQLite has made the log
        self._wal_inode: tuple[int, int] | None = None
        self._sync_failed: str | None = None  # why writing stopped, after a failed fdatasync
        _prepare_path(self.path)
        self._lock_fd = _lock_file(self.path)
        try:
            self._writer = _connect(self.path, cache_kib)
            try:
                _check_wal(self._writer, self.path)
                _ensure_schema(self._writer, self.path)
                self.keys.load(self._writer.execute(SQL_NAMES))
                self._reader = _connect(self.path, cache_kib)
                self._reader.execute("PRAGMA query_only = ON")
            except BaseException:
                self._writer.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- writes --------------------------------------------------------------------------------------

    def write_batch(self, ops: Sequence[Op]) -> None:
        self._apply(ops, flush=True)

    def write_batch_unsynced(self, ops: Sequence[Op]) -> None:
        self._apply(ops, flush=False)

    def sync_fd(self) -> int:
        """The write-ahead log's descriptor (see the module docstring), reopened if the log was replaced."""
        self._check_open()
        self._check_not_failed()
        try:
            stat = os.stat(self._wal_path)
            if self._wal_fd is None or self._wal_inode != (stat.st_dev, stat.st_ino):
                fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
                if self._wal_fd is not None:
                    os.close(self._wal_fd)
                self._wal_fd, self._wal_inode = fd, (stat.st_dev, stat.st_ino)
                # A log SQLite has just created is found through its directory entry, which its
                # fdatasync does not flush (under FULL, SQLite flushes the directory at the log's first
                # sync; under NORMAL not before a checkpoint): flush it once, before the first flush.
                directory = os.open(self._wal_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except OSError as exc:
            raise StorageError(f"cannot open the write-ahead log {self._wal_path}: {exc}") from exc
        return self._wal_fd

    def sync_failed(self, error: OSError) -> SyncError:
        """Record that an fdatasync of `sync_fd()` failed (made here or by a caller): writing stops for
        good. Returns the SyncError to raise."""
        if self._sync_failed is None:
            self._sync_failed = f"fdatasync of {self._wal_path} failed: {error}"
        return self._sync_error()

    def _sync_error(self) -> SyncError:
        return SyncError(f"{self._sync_failed}; writes since the last good flush may be lost, and this "
                         "store takes no more writes until it is reopened")

    def _check_not_failed(self) -> None:
        if self._sync_failed is not None:
            raise self._sync_error()

    def _apply(self, ops: Sequence[Op], flush: bool) -> None:
        ops = check_ops(ops)
        if not ops:
            self._check_open()
            return
        with self._write_lock:
            self._check_open()
            self._check_not_failed()
            conn = self._writer
            keys = self.keys
            for op in ops:  # before the commit: the key set must cover every key a reader could find
                if type(op) is Put:
                    keys.add((op.partition, op.bucket, op.key))
            try:
                conn.execute("BEGIN IMMEDIATE")
                for op_type, group in itertools.groupby(ops, type):
                    sql, row = _STATEMENTS[op_type]
                    conn.executemany(sql, [row(op) for op in group])
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"write of {len(ops)} ops to {self.path} failed: {exc}") from exc
                raise
            self.values.written(((op.partition, op.bucket, op.key), op.blob if type(op) is Put else None)
                                for op in ops if type(op) is Put or type(op) is Delete)
            if flush:
                fd = self.sync_fd()
                try:
                    os.fdatasync(fd)
                except OSError as exc:
                    raise self.sync_failed(exc) from exc

    # -- reads ---------------------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        with self._read_lock:
            self._check_open()
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"read from {self.path} failed: {exc}") from exc

    def get(self, partition: int, bucket: bytes, key: bytes) -> bytes | None:
        check_partition(partition)
        check_bytes("bucket", bucket)
        check_bytes("key", key)
        name = (partition, bucket, key)
        if not self.keys.may_hold(name):
            self._check_open()
            return None
        blob, generation = self.values.lookup(name)
        if blob is not MISSING:
            self._check_open()
            return blob  # type: ignore[return-value]
        rows = self._read(SQL_GET, name)
        blob = rows[0][0] if rows else None
        self.values.filled(name, blob, generation)
        return blob

    def scan(self, partition: int, after: tuple[bytes, bytes] | None, limit: int) -> list[tuple[bytes, bytes, bytes]]:
        check_partition(partition)
        check_after(after)
        check_count("limit", limit, allow_none=False)
        if after is None:
            return self._read(SQL_SCAN_FIRST, (partition, limit))
        return self._read(SQL_SCAN_AFTER, (partition, after[0], after[1], limit))

    def count(self, partition: int | None = None) -> int:
        if partition is None:
            return self._read("SELECT count(*) FROM object", ())[0][0]
        check_partition(partition)
        return self._read("SELECT count(*) FROM object WHERE partition = ?", (partition,))[0][0]

    def partitions(self) -> set[int]:
        # Hop from one partition to the next through the index: O(P log n) instead of scanning every row.
        found: set[int] = set()
        partition = self._read("SELECT min(partition) FROM object", ())[0][0]
        while partition is not None:
            found.add(partition)
            partition = self._read("SELECT min(partition) FROM object WHERE partition > ?", (partition,))[0][0]
        return found

    def hints(self, target: str, after_id: int | None = None, limit: int | None = None) -> list[Hint]:
        if type(target) is not str:
            raise InvalidOperationError(f"target must be a str node id, not {target!r}")
        check_count("after_id", after_id)
        check_count("limit", limit)
        rows = self._read(SQL_HINTS, (target, after_id or 0, -1 if limit is None else limit))
        return [Hint(*row) for row in rows]

    def hint_counts(self) -> dict[str, int]:
        return dict(self._read("SELECT target, count(*) FROM hint GROUP BY target", ()))

    def hint_id_max(self) -> int:
        return self._read("SELECT coalesce(max(id), 0) FROM hint", ())[0][0]

    def has_hint(self, bucket: bytes, key: bytes) -> bool:
        check_bytes("bucket", bucket)
        check_bytes("key", key)
        return bool(self._read(SQL_HAS_HINT, (bucket, key))[0][0])

    # -- life cycle ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError(f"SQLite backend {self.path} is closed")

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self.values.clear()
            self.keys.clear()
            self._reader.close()
            self._writer.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            os.close(self._lock_fd)  # releases the flock


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back after a failure; a failing rollback must not hide the error that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _prepare_path(path: pathlib.Path) -> None:
    if path.is_dir():
        raise StorageOpenError(f"{path} is a directory; give the path of the database file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageOpenError(f"cannot create the directory of {path}: {exc}") from exc


def _lock_file(path: pathlib.Path) -> int:
    """Hold an exclusive flock on `<path>.lock` so two processes never write one store (hint ids and
    the single-writer design assume one owner). The kernel drops it when the process dies, even by SIGKILL."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageOpenError(f"cannot create the lock file {lock_path}: {exc}") from exc
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StorageOpenError(f"{path} is already open (by this or another process): {exc}") from exc
    return fd


def _connect(path: pathlib.Path, cache_kib: int) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # the log's flush is ours: see the module docstring
    except sqlite3.Error as exc:
        raise StorageOpenError(f"cannot open {path} as a SQLite database: {exc}") from exc
    return conn


def _check_wal(conn: sqlite3.Connection, path: pathlib.Path) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.Error as exc:
        raise StorageOpenError(f"cannot open {path} as a SQLite database: {exc}") from exc
    if mode.lower() != "wal":
        raise StorageOpenError(f"{path}: SQLite refused WAL mode (journal_mode is {mode})")


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2, inside the caller's transaction: rebuild `object` keyed (partition, bucket, key).
    Version 1 kept one row per (bucket, key), so the copy cannot collide."""
    conn.execute("ALTER TABLE object RENAME TO object_v1")
    conn.execute("DROP INDEX object_partition")
    conn.execute(SCHEMA[1])
    conn.execute("INSERT INTO object (partition, bucket, key, blob)"
                 " SELECT partition, bucket, key, blob FROM object_v1 ORDER BY partition, bucket, key")
    conn.execute("DROP TABLE object_v1")
    conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (SCHEMA_VERSION,))


def _ensure_schema(conn: sqlite3.Connection, path: pathlib.Path) -> None:
    """Create the schema in an empty database, or check the version of an existing one."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute("INSERT INTO meta (name, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                version = SCHEMA_VERSION
            elif "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
                version = None if row is None else row[0]
                if version == 1:
                    _migrate_from_1(conn)
                    version = SCHEMA_VERSION
            else:
                raise StorageOpenError(f"{path} is a SQLite database of another program (no meta table)")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    except sqlite3.Error as exc:
        raise StorageOpenError(f"cannot open {path} as a store: {exc}") from exc
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(f"{path} has schema version {version!r}; this code reads version {SCHEMA_VERSION}")
