"""Child process of test_storage_crash.py: writes through the group committer until it is SIGKILLed.

Usage: python storage_crash_child.py DB_PATH objects|hints WRITERS
Each writer task loops over fresh keys; right after a write is acknowledged it reports it on stdout, one
line per write, with a single unbuffered os.write so the parent sees exactly what was acknowledged.
"""

import itertools
import os
import sys

import trio

from dynamo.storage import HintStore, SqliteBackend, open_group_committer
from dynamo.storage.uring import FsyncRing


def partition_for(name: bytes) -> int:
    return int(name.rsplit(b"-", 1)[1]) % 8  # the parent recomputes it to read the object back


def blob_for(name: bytes) -> bytes:
    return b"blob:" + name * 20  # deterministic: the parent recomputes it to check contents


async def writer(committer, hints, mode, writer_id):
    for i in itertools.count():
        name = b"w%d-%d" % (writer_id, i)
        if mode == "objects":
            await committer.put(partition_for(name), b"crash", name, blob_for(name))
            line = name
        else:
            hint = await hints.add("node-%d" % (writer_id % 3), i % 8, b"crash", name, blob_for(name), i)
            line = b"%d %s" % (hint.hint_id, name)
        os.write(1, line + b"\n")


async def main(path, mode, writers):
    backend = SqliteBackend(path)
    # Flushed in the background as a node does, where io_uring is available (else from the loop).
    async with open_group_committer(backend, fsync_ring=FsyncRing.open()) as committer:
        hints = HintStore(committer)
        async with trio.open_nursery() as nursery:
            for writer_id in range(writers):
                nursery.start_soon(writer, committer, hints, mode, writer_id)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
