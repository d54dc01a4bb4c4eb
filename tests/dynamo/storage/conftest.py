"""Fixtures shared by the storage tests: every backend test runs once per backend.

`make_backend()` opens a fresh backend of the parametrised kind (closed at teardown); `reopen(b)` closes it
and returns what a restarted process would find; `recording=True` gives a backend that records each
write_batch and can be made to fail or to block (to test the group committer around it).
"""

import itertools
import threading

import pytest

from dynamo.storage import MemoryBackend, SqliteBackend, StorageError


class Recording:
    """Mixin: records batches, fails a batch when `fail_if(ops)` is true, waits on `gate` when set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attempts = []  # every batch handed to write_batch, failed or not
        self.fail_if = None
        self.gate = None  # a threading.Event: write_batch waits for it (thread mode only)
        self.entered = threading.Event()

    def write_batch(self, ops):
        ops = list(ops)
        self.attempts.append(ops)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test gate never opened"
        if self.fail_if is not None and self.fail_if(ops):
            raise StorageError("injected write failure")
        super().write_batch(ops)


class RecordingMemoryBackend(Recording, MemoryBackend):
    pass


class RecordingSqliteBackend(Recording, SqliteBackend):
    pass


@pytest.fixture(params=["memory", "sqlite"])
def backend_kind(request):
    return request.param


@pytest.fixture
def make_backend(backend_kind, tmp_path):
    opened = []
    numbers = itertools.count()

    def make(recording=False):
        if backend_kind == "memory":
            backend = RecordingMemoryBackend() if recording else MemoryBackend()
        else:
            cls = RecordingSqliteBackend if recording else SqliteBackend
            backend = cls(tmp_path / f"store{next(numbers)}" / "store.sqlite3")
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(make_backend):
    return make_backend()


@pytest.fixture
def reopen():
    reopened = []

    def reopen(backend):
        backend.close()
        if isinstance(backend, MemoryBackend):
            fresh = backend.reopened()
        else:
            fresh = SqliteBackend(backend.path)
        reopened.append(fresh)
        return fresh

    yield reopen
    for backend in reopened:
        backend.close()
