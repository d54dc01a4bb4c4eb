"""Crash durability: a child writes through SqliteBackend + GroupCommitter and reports each acknowledged
write; the parent SIGKILLs it mid-stream, reopens the store and finds every acknowledged write intact.

What this proves: a write is acknowledged only after its transaction committed, and SQLite recovers the
WAL after a kill. A process kill leaves the OS page cache alone, so the fsync itself (synchronous=FULL,
checked in test_storage_sqlite.py) is not exercised here: that would need a power cut.
"""

import os
import pathlib
import signal
import subprocess
import sys
import threading

from dynamo.storage import SqliteBackend

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CHILD = HERE / "storage_crash_child.py"
ACKED_BEFORE_KILL = 200
WATCHDOG_S = 60


def blob_for(name: bytes) -> bytes:
    return b"blob:" + name * 20  # as in storage_crash_child.py


def partition_for(name: bytes) -> int:
    return int(name.rsplit(b"-", 1)[1]) % 8  # as in storage_crash_child.py


def run_and_kill(tmp_path, mode):
    """Start the child, read acknowledgements until ACKED_BEFORE_KILL, SIGKILL it; all acknowledged lines."""
    path = tmp_path / "data" / "store.sqlite3"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(tmp_path / "child.err", "w+b") as err:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(path), mode, "8"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        watchdog = threading.Timer(WATCHDOG_S, proc.kill)  # only guards against a hung child
        watchdog.start()
        try:
            lines = []
            while len(lines) < ACKED_BEFORE_KILL:
                line = proc.stdout.readline()
                if not line:
                    err.seek(0)
                    raise AssertionError(f"child exited early: {err.read().decode(errors='replace')}")
                lines.append(line)
            proc.send_signal(signal.SIGKILL)
            lines += proc.stdout.read().splitlines(keepends=True)  # acknowledged before it died
        finally:
            watchdog.cancel()
            proc.kill()
            proc.stdout.close()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-stream, not finished
    acked = [line[:-1] for line in lines if line.endswith(b"\n")]  # a torn last line was not reported
    assert len(acked) >= ACKED_BEFORE_KILL
    return path, acked


def test_acknowledged_objects_survive_sigkill(tmp_path):
    path, acked = run_and_kill(tmp_path, "objects")
    with SqliteBackend(path) as backend:
        missing = [name for name in acked if backend.get(partition_for(name), b"crash", name) != blob_for(name)]
        assert missing == []
        assert backend.count() >= len(acked)


def test_acknowledged_hints_survive_sigkill(tmp_path):
    path, acked = run_and_kill(tmp_path, "hints")
    with SqliteBackend(path) as backend:
        stored = {hint.hint_id: hint for target in backend.hint_counts() for hint in backend.hints(target)}
    for line in acked:
        hint_id, name = line.split(b" ")
        hint = stored.get(int(hint_id))
        assert hint is not None, f"acknowledged hint {line!r} lost"
        writer_id = int(name[1:].split(b"-")[0])
        assert (hint.target, hint.bucket, hint.key, hint.blob) == (f"node-{writer_id % 3}", b"crash", name,
                                                                   blob_for(name))
