"""The blocking client: the shared operations driven over http.client with keep-alive per node.

Theory of operation: each public method builds its operation (operation.py: a generator of HTTP calls)
and `_run` drives it. A call goes through a Failover plan (failover.py) over the roster: a connection
is taken from the node's idle pool (or opened), the request sent, the answer read whole, and the
connection put back unless either side asked to close. Every socket error is turned into a `Failure`
(connect failures are "not sent") and then into a ClientError by the plan, so no http.client or socket
exception reaches the caller. With `token_aware`, the ring is fetched from any node when due and keyed
calls prefer the key's primaries.

Thread safety: a connection is used by one thread at a time (taken out of the pool for the call); the
pool, the roster and the router guard their state with locks. One Client can serve many threads.
An idle connection that the server already closed is noticed before reuse (its socket reads as ready:
EOF) and dropped, so a stale keep-alive never eats a write.
"""

from __future__ import annotations

import http.client
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dynamo.client.error import ClientError
from dynamo.client.failover import DOWN_S_DEFAULT, Failover, Failure, NodeAddress, Roster
from dynamo.client.operation import Answer, Call, Operation, Operations
from dynamo.client.option import Options
from dynamo.client.result import KVObject, Replicas, Resolver
from dynamo.client.router import REFRESH_S_DEFAULT, Router
from dynamo.http.message import Headers

REQUEST_TIMEOUT_S_DEFAULT = 10.0  # when the caller sets no timeout_s: the server's own default
TIMEOUT_MARGIN_S = 1.0  # the socket waits this much longer than the server was told, to hear its 504
IDLE_PER_NODE_MAX = 8


class ConnectionPool:
    """Idle keep-alive connections per node, newest first. Thread-safe."""

    def __init__(self, idle_per_node_max: int = IDLE_PER_NODE_MAX) -> None:
        self.idle_per_node_max = idle_per_node_max
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, node: NodeAddress, timeout_s: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                idle = self._idle.get(node.url)
                conn = idle.pop() if idle else None
            if conn is None:
                return http.client.HTTPConnection(node.host, node.port, timeout=timeout_s)
            if _still_open(conn):
                conn.timeout = timeout_s
                conn.sock.settimeout(timeout_s)
                return conn
            conn.close()

    def give(self, node: NodeAddress, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(node.url, [])
            if not self._closed and len(idle) < self.idle_per_node_max:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [conn for idle in self._idle.values() for conn in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle connection is usable if nothing is waiting to be read on it (EOF or stray bytes are)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def exchange(pool: ConnectionPool, node: NodeAddress, call: Call, timeout_s: float) -> Answer | Failure:
    """Send one call to one node and read the whole answer, or say how it failed."""
    conn = pool.take(node, timeout_s)
    if conn.sock is None:
        try:
            conn.connect()
        except OSError as error:
            conn.close()
            return Failure(f"connect: {_describe(error)}", sent=False, timed_out=isinstance(error, TimeoutError))
    try:
        conn.request(call.method, call.target, body=call.body if call.body or call.method in ("PUT", "POST")
                     else None, headers=dict(call.headers))
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        conn.close()
        return Failure(_describe(error), sent=True, timed_out=isinstance(error, TimeoutError))
    if response.will_close:
        conn.close()
    else:
        pool.give(node, conn)
    return Answer(response.status, Headers(response.getheaders()), body, node.url)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text


class Client:
    """A blocking client for the store's Riak-compatible HTTP API (see the package docstring)."""

    def __init__(self, nodes: Sequence[str] = ("http://127.0.0.1:8001",), *, n_val: int | None = None,
                 r: int | str | None = None, w: int | str | None = None, dw: int | str | None = None,
                 pr: int | str | None = None, pw: int | str | None = None, rw: int | str | None = None,
                 timeout_s: float | None = None, basic_quorum: bool | None = None,
                 notfound_ok: bool | None = None, returnbody: bool | None = None,
                 resolver: Resolver | None = None, read_your_writes: bool = False, strict: bool = False,
                 token_aware: bool = False, down_s: float = DOWN_S_DEFAULT,
                 ring_refresh_s: float = REFRESH_S_DEFAULT, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        defaults = Options(n_val=n_val, r=r, w=w, dw=dw, pr=pr, pw=pw, rw=rw, timeout_s=timeout_s,
                           basic_quorum=basic_quorum, notfound_ok=notfound_ok, returnbody=returnbody)
        self._ops = Operations(defaults, resolver, read_your_writes=read_your_writes, strict=strict)
        self.roster = Roster(nodes, down_s)
        self.router = Router(ring_refresh_s) if token_aware else None
        self._pool = ConnectionPool()
        self._clock, self._sleep = clock, sleep

    # ---- the driver ---------------------------------------------------------------------------------

    def _run(self, operation: Operation) -> Any:
        try:
            call = next(operation)
            while True:
                call = operation.send(self._perform(call))
        except StopIteration as stop:
            return stop.value

    def _perform(self, call: Call) -> Answer:
        preferred = self._preferred(call)
        timeout_s = (call.timeout_s or REQUEST_TIMEOUT_S_DEFAULT) + TIMEOUT_MARGIN_S
        now_s = self._clock()
        plan = Failover(self.roster, safe=call.safe, now_s=now_s, deadline_s=now_s + timeout_s, preferred=preferred)
        while (step := plan.next_step(self._clock())) is not None:
            if isinstance(step, float):
                self._sleep(step)
                continue
            result = exchange(self._pool, step, call, timeout_s)
            if isinstance(result, Failure):
                if preferred and step.netloc == preferred[0] and self.router is not None:
                    self.router.invalidate()
                plan.failed(step, result, self._clock())
            else:
                plan.answered(step, result.status, result.headers.get("Retry-After"), result, self._clock())
        return plan.outcome()

    def _preferred(self, call: Call) -> list[str]:
        router = self.router
        if router is None or call.route is None:
            return []
        if router.claim_refresh(self._clock()):
            try:
                router.update(self._run(self._ops.ring()))
            except ClientError:
                pass  # no view this time: any node coordinates any key
        return router.preferred(call.route)

    # ---- objects ------------------------------------------------------------------------------------

    def get(self, bucket: str | bytes, key: str | bytes, *, resolver: Resolver | None = None,
            vtag: str | None = None, **options: Any) -> KVObject:
        """The object (exists False when missing); siblings narrowed by the resolver if one is set."""
        return self._run(self._ops.get(bucket, key, resolver=resolver, vtag=vtag, **options))

    def put(self, bucket: str | bytes, key: str | bytes, value: bytes | str, *, context: Any = None,
            content_type: str | None = None, meta: Any = None, if_none_match: bool = False,
            if_match: str | None = None, **options: Any) -> KVObject | None:
        """Store a value; send the context of the read it replaces. The object if returnbody, else None."""
        return self._run(self._ops.put(bucket, key, value, context=context, content_type=content_type, meta=meta,
                                       if_none_match=if_none_match, if_match=if_match, **options))

    def put_new(self, bucket: str | bytes, value: bytes | str, *, content_type: str | None = None,
                meta: Any = None, **options: Any) -> str:
        """Store a value under a key the server makes (POST); returns the key."""
        return self._run(self._ops.put_new(bucket, value, content_type=content_type, meta=meta, **options))

    def delete(self, bucket: str | bytes, key: str | bytes, *, context: Any = None,
               **options: Any) -> Replicas | None:
        """Write a tombstone (over what `context` saw, or else over what the coordinator holds)."""
        return self._run(self._ops.delete(bucket, key, context=context, **options))

    def update(self, bucket: str | bytes, key: str | bytes, fn: Callable[[bytes | None], Any], *,
               resolver: Resolver | None = None, retries: int = 3, content_type: str | None = None,
               **options: Any) -> KVObject:
        """Read-modify-write: fn(current value or None) -> new value (None: leave it); retried on a race."""
        return self._run(self._ops.update(bucket, key, fn, resolver=resolver, retries=retries,
                                          content_type=content_type, **options))

    # ---- buckets and nodes --------------------------------------------------------------------------

    def get_bucket_props(self, bucket: str | bytes) -> dict[str, Any]:
        return self._run(self._ops.get_bucket_props(bucket))

    def set_bucket_props(self, bucket: str | bytes, props: dict[str, Any] | None = None, **more: Any) -> None:
        props = {**(props or {}), **more}
        self._run(self._ops.set_bucket_props(bucket, props))

    def keys(self, bucket: str | bytes) -> list[str]:
        """The bucket's keys, sorted (Riak's list keys: every partition is read; not for big buckets)."""
        return self._run(self._ops.keys(bucket))

    def buckets(self) -> list[str]:
        """The buckets that hold a key, sorted (reads every partition, as `keys`)."""
        return self._run(self._ops.buckets())

    def ping(self) -> bool:
        """True if a node answers /ping (the first that does, in failover order)."""
        try:
            return self._run(self._ops.ping())
        except ClientError:
            return False

    def stats(self) -> dict[str, Any]:
        return self._run(self._ops.stats())

    def ring(self) -> dict[str, Any]:
        return self._run(self._ops.ring())

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

