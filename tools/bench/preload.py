"""Writes the keys the get cells read: keys <run>-load-0 .. <run>-load-(keyspace-1), before any get cell.

Not measured, so plain Python is enough: `connections` threads, each with one keep-alive http.client
connection to a target (spread round-robin like wrk's threads), each writing every connections-th key.
Writes default to w=all so that a get at r=one finds the key on whichever replica answers first. A key
whose write fails (503, a socket error) is tried again up to `attempts` times, so a moment of overload
does not turn into 404s in the get rows later; what still failed is reported by status.
With `api="etcd"` the same keys and values go to etcd's v3 JSON gateway (`POST /v3/kv/put`, base64).
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json
import http.client
import time
import urllib.parse
from collections import Counter
from typing import Callable, Sequence

from tools.bench.script import load_key_prefix

OK_STATUSES = frozenset({200, 201, 204})
SOCKET_ERROR = "socket"


def bench_value(size_bytes: int) -> bytes:
    """The value every benchmark write carries: the same bytes the Lua script builds."""
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size_bytes // len(pattern) + 1))[:size_bytes]


@dataclasses.dataclass(frozen=True)
class PreloadResult:
    keys: int
    written: int  # keys whose last attempt succeeded
    failures: tuple[tuple[str, int], ...]  # (status or "socket", count) of keys that never succeeded
    duration_s: float


def preload(urls: Sequence[str], run_id: str, keyspace: int, value_size_bytes: int, *, bucket: str = "bench",
            connections: int = 16, consistency: str = "all", timeout_s: float = 10.0,
            attempts: int = 3, api: str = "riak") -> PreloadResult:
    """Write the keyspace; returns how many keys made it."""
    if not urls or keyspace < 1 or connections < 1 or attempts < 1:
        raise ValueError("preload needs urls, keyspace >= 1, connections >= 1 and attempts >= 1")
    value = bench_value(value_size_bytes)
    if api == "etcd":
        request_for = _etcd_put(load_key_prefix(run_id), value)
    else:
        prefix = f"/buckets/{urllib.parse.quote(bucket, safe='')}/keys/{load_key_prefix(run_id)}"
        request_for = _riak_put(prefix, value, f"?w={consistency}")
    workers = min(connections, keyspace)
    started_s = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(_write_keys, urls[worker % len(urls)], range(worker, keyspace, workers), request_for,
                            timeout_s, attempts) for worker in range(workers)]
        outcomes = Counter()
        for job in jobs:
            outcomes.update(job.result())
    written = sum(count for outcome, count in outcomes.items() if outcome in OK_STATUSES)
    failures = tuple(sorted((str(outcome), count) for outcome, count in outcomes.items()
                            if outcome not in OK_STATUSES))
    return PreloadResult(keys=keyspace, written=written, failures=failures,
                         duration_s=time.monotonic() - started_s)


Put = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


def _riak_put(prefix: str, value: bytes, query: str) -> Callable[[int], Put]:
    headers = {"Content-Type": "application/octet-stream"}
    return lambda index: ("PUT", f"{prefix}{index}{query}", value, headers)


def _etcd_put(key_prefix: str, value: bytes) -> Callable[[int], Put]:
    headers = {"Content-Type": "application/json"}
    value64 = base64.b64encode(value).decode("ascii")

    def put(index: int) -> Put:
        key64 = base64.b64encode(f"{key_prefix}{index}".encode("ascii")).decode("ascii")
        return "POST", "/v3/kv/put", json.dumps({"key": key64, "value": value64}).encode("ascii"), headers
    return put


def _write_keys(url: str, indices: range, request_for: Callable[[int], Put], timeout_s: float,
                attempts: int) -> Counter:
    """One worker: write each key over one keep-alive connection; the outcome of each key's last try."""
    parts = urllib.parse.urlsplit(url)
    outcomes: Counter = Counter()
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        for index in indices:
            method, path, body, headers = request_for(index)
            for attempt in range(attempts):
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    outcome: int | str = response.status
                except (OSError, http.client.HTTPException):
                    connection.close()  # http.client reconnects on the next request
                    outcome = SOCKET_ERROR
                if outcome in OK_STATUSES or (outcome != SOCKET_ERROR and outcome < 500):
                    break  # success, or a 4xx that another try will not change
            outcomes[outcome] += 1
    finally:
        connection.close()
    return outcomes
