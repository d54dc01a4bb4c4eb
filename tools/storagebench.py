"""Measure the storage layer: durable puts/s through the group committer on SQLite, and gets/s.

    python -m tools.storagebench [--value-bytes 100] [--dir PATH]

For 1 and 16 concurrent writers (trio tasks) it puts fresh keys through GroupCommitter over a
SqliteBackend in a temporary directory (or --dir) and prints puts/s, fsync'd batches and the mean batch
size; then it reads every key back in random order from the event loop and prints gets/s. Each put is
acknowledged only once durable (WAL, synchronous=FULL), so puts/s at one writer is about 1 / fsync time.
Prints results; asserts nothing (a benchmark, not a test).
"""

import argparse
import pathlib
import random
import tempfile
import time

import trio

from dynamo.storage import GroupCommitter, SqliteBackend
from ring.hashing import partition_for_key

RUNS = ((1, 2000), (16, 20000), (64, 20000))  # (writers, puts)
PARTITIONS = 256


async def put_many(committer: GroupCommitter, writers: int, puts: int, value: bytes, tag: bytes) -> list[bytes]:
    keys = [b"%s-%08d" % (tag, i) for i in range(puts)]

    async def writer(mine: list[bytes]) -> None:
        for key in mine:
            await committer.put(partition_for_key(b"bench", key, PARTITIONS), b"bench", key, value)

    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, keys[w::writers])
    return keys


async def bench(path: pathlib.Path, value_bytes: int) -> None:
    value = random.Random(1).randbytes(value_bytes)
    backend = SqliteBackend(path)
    all_keys: list[bytes] = []
    print(f"SQLite at {path}, value {value_bytes} bytes, WAL + synchronous=FULL")
    print(f"{'writers':>8} {'puts':>7} {'seconds':>8} {'puts/s':>9} {'batches':>8} {'mean batch':>11}")
    for writers, puts in RUNS:
        committer = GroupCommitter(backend)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            start = time.perf_counter()
            all_keys += await put_many(committer, writers, puts, value, b"w%d" % writers)
            elapsed = time.perf_counter() - start
            await committer.aclose()
        print(f"{writers:>8} {puts:>7} {elapsed:>8.2f} {puts / elapsed:>9.0f} {committer.batches_written:>8}"
              f" {committer.mean_batch_ops:>11.1f}")
    random.Random(2).shuffle(all_keys)
    named = [(partition_for_key(b"bench", key, PARTITIONS), b"bench", key) for key in all_keys]
    cache_bytes = backend.values.bytes_max
    for label in ("from SQLite", "from the value cache"):
        backend.values.clear()
        backend.values.bytes_max = 0 if label == "from SQLite" else cache_bytes
        for _ in range(1 if label == "from SQLite" else 2):  # the cache's first pass fills it
            start = time.perf_counter()
            for name in named:
                assert backend.get(*name) == value
            elapsed = time.perf_counter() - start
        print(f"gets {label}: {len(named)} in {elapsed:.2f} s = {len(named) / elapsed:.0f} gets/s"
              f" (random order, {backend.count()} keys stored)")
    start = time.perf_counter()
    rows = sum(1 for p in backend.partitions() for _ in backend.iterate(p))
    elapsed = time.perf_counter() - start
    print(f"iterate: {rows} rows over {len(backend.partitions())} partitions in {elapsed:.2f} s"
          f" = {rows / elapsed:.0f} rows/s")
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--dir", type=pathlib.Path, help="directory for the database (default: a temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        trio.run(bench, args.dir / "storagebench.sqlite3", args.value_bytes)
        return
    with tempfile.TemporaryDirectory(prefix="storagebench-") as tmp:
        trio.run(bench, pathlib.Path(tmp) / "store.sqlite3", args.value_bytes)


if __name__ == "__main__":
    main()
