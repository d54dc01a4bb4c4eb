"""What only the SQLite backend has: files, schema versions, durability settings, threads, rollback."""

import errno
import os
import sqlite3
import threading

import pytest

from dynamo.storage import (
    SCHEMA_VERSION,
    Put,
    SchemaVersionError,
    SqliteBackend,
    StorageError,
    StorageOpenError,
    SyncError,
)


def test_missing_directories_are_created_and_data_persists(tmp_path):
    path = tmp_path / "a" / "b" / "store.sqlite3"
    with SqliteBackend(path) as backend:
        backend.write_batch([Put(7, b"b", b"k", b"v")])
    assert path.is_file()
    with SqliteBackend(path) as backend:
        assert backend.get(7, b"b", b"k") == b"v"
        assert backend.partitions() == {7}


def test_durability_settings(tmp_path, monkeypatch):
    """WAL with synchronous=NORMAL, and the log's flush is ours: write_batch fdatasyncs the write-ahead
    log once per batch, write_batch_unsynced leaves it to the caller, through sync_fd."""
    flushed, directories = [], []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushed.append(os.fstat(fd).st_ino), real_fdatasync(fd)))
    monkeypatch.setattr(os, "fsync", lambda fd: (directories.append(os.fstat(fd).st_ino), real_fsync(fd)))
    with SqliteBackend(tmp_path / "s.db") as backend:
        writer = backend._writer
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: COMMIT does not flush
        wal_inode = os.stat(tmp_path / "s.db-wal").st_ino
        backend.write_batch([Put(1, b"b", b"k1", b"v")])
        assert flushed == [wal_inode]
        assert directories == [tmp_path.stat().st_ino]  # the new log's directory entry, flushed once
        backend.write_batch_unsynced([Put(1, b"b", b"k2", b"v"), Put(1, b"b", b"k3", b"v")])
        assert flushed == [wal_inode] and backend.get(1, b"b", b"k3") == b"v"  # applied, not flushed
        assert os.fstat(backend.sync_fd()).st_ino == wal_inode
        backend._wal_inode = (0, 0)  # as if the log had been replaced: the descriptor is opened anew
        old_fd = backend._wal_fd
        assert os.fstat(backend.sync_fd()).st_ino == wal_inode and backend._wal_fd != old_fd
        assert len(directories) == 2 and len(flushed) == 1
    with SqliteBackend(tmp_path / "s.db") as backend:
        assert [backend.get(1, b"b", k) for k in (b"k1", b"k2", b"k3")] == [b"v", b"v", b"v"]


def test_a_failed_flush_stops_all_writing(tmp_path, monkeypatch):
    """After a failed fdatasync nothing committed since the last good one is known to be on disk: that
    batch and every later write raise SyncError; reads go on; a reopened store takes writes again."""
    path = tmp_path / "s.db"
    with SqliteBackend(path) as backend:
        backend.write_batch([Put(1, b"b", b"before", b"v")])

        def failing(fd):
            raise OSError(errno.EIO, "Input/output error")
        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(SyncError, match="Input/output error.*no more writes"):
            backend.write_batch([Put(1, b"b", b"k", b"v")])
        monkeypatch.undo()
        for write in (backend.write_batch, backend.write_batch_unsynced):
            with pytest.raises(SyncError, match="Input/output error"):
                write([Put(1, b"b", b"later", b"v")])
        with pytest.raises(SyncError):
            backend.sync_fd()
        assert backend.get(1, b"b", b"before") == b"v" and backend.get(1, b"b", b"later") is None
        error = backend.sync_failed(OSError(errno.ENOSPC, "later"))  # the first reason is kept
        assert "Input/output error" in str(error)
    with SqliteBackend(path) as backend:
        backend.write_batch([Put(1, b"b", b"after", b"v")])
        assert backend.get(1, b"b", b"before") == b"v" and backend.get(1, b"b", b"after") == b"v"


def test_schema_version_mismatch_fails_clearly(tmp_path):
    path = tmp_path / "s.db"
    SqliteBackend(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteBackend(path)
    with pytest.raises(ValueError):  # callers may catch it as bad input
        SqliteBackend(path)


VERSION_1_SCHEMA = (  # the layout of stores written before schema version 2, verbatim
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE object (id INTEGER PRIMARY KEY, bucket BLOB NOT NULL, key BLOB NOT NULL,"
    " partition INTEGER NOT NULL, blob BLOB NOT NULL, UNIQUE (bucket, key))",
    "CREATE INDEX object_partition ON object (partition, bucket, key)",
    "CREATE TABLE hint (id INTEGER PRIMARY KEY, target TEXT NOT NULL, partition INTEGER NOT NULL,"
    " bucket BLOB NOT NULL, key BLOB NOT NULL, blob BLOB NOT NULL, created_us INTEGER NOT NULL)",
    "CREATE INDEX hint_target ON hint (target, id)",
    "CREATE INDEX hint_key ON hint (bucket, key)",
)


def test_a_version_1_store_is_migrated_when_opened(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in VERSION_1_SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', 1)")
    rows = [(b"b", b"k%03d" % i, i % 5, b"v%d" % i) for i in range(200)]
    conn.executemany("INSERT INTO object (bucket, key, partition, blob) VALUES (?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO hint VALUES (7, 'n2', 3, x'62', x'6b', x'76', 123)")
    conn.commit()
    conn.close()
    with SqliteBackend(path) as backend:
        assert all(backend.get(p, b, k) == v for b, k, p, v in rows)
        assert backend.count() == 200 and backend.partitions() == set(range(5))
        assert [k for _, k, _ in backend.iterate(2)] == [k for _, k, p, _ in sorted(rows) if p == 2]
        assert backend.hint_counts() == {"n2": 1} and backend.hint_id_max() == 7
        backend.write_batch([Put(1, b"b", b"k001", b"new")])  # an upsert on the new unique key
        assert backend.get(1, b"b", b"k001") == b"new" and backend.count() == 200
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "object_partition" not in indexes
    conn.close()


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StorageOpenError, match="another program"):
        SqliteBackend(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with pytest.raises(StorageOpenError, match="not a database"):
        SqliteBackend(path)
    assert path.read_bytes().startswith(b"this is not a database")  # left untouched


def test_bad_paths_are_refused(tmp_path):
    with pytest.raises(StorageOpenError, match="is a directory"):
        SqliteBackend(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageOpenError):
        SqliteBackend(blocker / "sub" / "store.sqlite3")


def test_one_open_store_per_file(tmp_path):
    path = tmp_path / "s.db"
    first = SqliteBackend(path)
    with pytest.raises(StorageOpenError, match="already open"):
        SqliteBackend(path)
    first.close()
    SqliteBackend(path).close()


def test_failed_transaction_rolls_back_whole_batch(tmp_path):
    with SqliteBackend(tmp_path / "s.db") as backend:
        backend.write_batch([Put(0, b"b", b"kept", b"old")])
        # Make SQLite itself fail half way through the transaction: blobs over 1000 bytes are refused.
        backend._writer.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        with pytest.raises(StorageError, match="failed"):
            backend.write_batch([Put(0, b"b", b"kept", b"new"), Put(0, b"b", b"first", b"x"),
                                 Put(0, b"b", b"big", b"x" * 2000)])
        assert backend.get(0, b"b", b"kept") == b"old"
        assert backend.get(0, b"b", b"first") is None
        backend.write_batch([Put(0, b"b", b"after", b"y")])  # the connection is usable again
        assert backend.get(0, b"b", b"after") == b"y"


def test_reads_from_threads_while_committing(tmp_path):
    """A writer thread commits batches while reader threads read: no errors, and every write a reader
    learns has returned is visible to it (read-your-writes across connections)."""
    backend = SqliteBackend(tmp_path / "s.db")
    written = []  # keys whose write_batch returned, appended by the writer
    errors = []
    stop = threading.Event()

    def writer():
        try:
            for i in range(60):
                backend.write_batch([Put(i % 4, b"b", b"%04d" % i, b"v%d" % i)])
                written.append(i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader():
        try:
            while not stop.is_set():
                done = list(written)
                for i in done[-5:]:
                    assert backend.get(i % 4, b"b", b"%04d" % i) == b"v%d" % i
                seen = [k for p in range(4) for _, k, _ in backend.iterate(p, page_rows=4)]
                assert len(seen) >= len(done)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    backend.close()
    assert errors == []
    assert len(written) == 60
