"""The trio client: the same operations as the blocking Client, driven over h11 on trio streams.

Theory of operation: operation.py writes each operation once as a generator of HTTP calls; this driver
sends each call with h11 over a keep-alive trio stream per node (one call at a time on a stream, so
concurrent tasks take separate streams from the idle pool), under the same Failover plan and health
memory as the blocking client. Every trio, socket or h11 error becomes a `Failure` and then a
ClientError: none leaks to the caller. Time is trio's clock, so trio.testing.MockClock works.

Why a second driver at all: a trio program (a tool, a test, another service) must not block its loop
on http.client, and with the protocol in operation.py the driver is only the byte moving below.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from typing import Any

import h11
import trio

from dynamo.client.error import ClientError
from dynamo.client.failover import DOWN_S_DEFAULT, Failover, Failure, NodeAddress, Roster
from dynamo.client.operation import Answer, Call, Operation, Operations
from dynamo.client.option import Options
from dynamo.client.result import KVObject, Replicas, Resolver
from dynamo.client.router import REFRESH_S_DEFAULT, Router
from dynamo.client.sync import IDLE_PER_NODE_MAX, REQUEST_TIMEOUT_S_DEFAULT, TIMEOUT_MARGIN_S
from dynamo.http.message import Headers

_RECEIVE_BYTES = 65536
_STREAM_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)


class _Link:
    """One keep-alive stream to a node and its h11 state."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.conn = stream, h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
            return False
        self.conn.start_next_cycle()
        return True

    def still_open(self) -> bool:
        try:
            readable, _, _ = select.select([self.stream.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable  # EOF (the server closed it) or stray bytes: not usable

    async def exchange(self, call: Call, node: NodeAddress) -> Answer:
        conn = self.conn
        headers = [("Host", node.netloc), ("Content-Length", str(len(call.body)))] + list(call.headers)
        data = conn.send(h11.Request(method=call.method, target=call.target, headers=headers))
        data += (conn.send(h11.Data(data=call.body)) if call.body else b"") + conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status, reply_headers, chunks = 0, [], []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(_RECEIVE_BYTES))
            elif isinstance(event, h11.Response):
                status = event.status_code
                reply_headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers.raw_items()]
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, Headers(reply_headers), b"".join(chunks), node.url)
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("connection closed without an answer")


class AsyncClient:
    """The trio flavour of `Client`: same options, same results, every call awaited."""

    def __init__(self, nodes: Sequence[str] = ("http://127.0.0.1:8001",), *, n_val: int | None = None,
                 r: int | str | None = None, w: int | str | None = None, dw: int | str | None = None,
                 pr: int | str | None = None, pw: int | str | None = None, rw: int | str | None = None,
                 timeout_s: float | None = None, basic_quorum: bool | None = None,
                 notfound_ok: bool | None = None, returnbody: bool | None = None,
                 resolver: Resolver | None = None, read_your_writes: bool = False, strict: bool = False,
                 token_aware: bool = False, down_s: float = DOWN_S_DEFAULT,
                 ring_refresh_s: float = REFRESH_S_DEFAULT) -> None:
        defaults = Options(n_val=n_val, r=r, w=w, dw=dw, pr=pr, pw=pw, rw=rw, timeout_s=timeout_s,
                           basic_quorum=basic_quorum, notfound_ok=notfound_ok, returnbody=returnbody)
        self._ops = Operations(defaults, resolver, read_your_writes=read_your_writes, strict=strict)
        self.roster = Roster(nodes, down_s)
        self.router = Router(ring_refresh_s) if token_aware else None
        self._idle: dict[str, list[_Link]] = {}

    # ---- the driver ---------------------------------------------------------------------------------

    async def _run(self, operation: Operation) -> Any:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._perform(call))
        except StopIteration as stop:
            return stop.value

    async def _perform(self, call: Call) -> Answer:
        preferred = await self._preferred(call)
        timeout_s = (call.timeout_s or REQUEST_TIMEOUT_S_DEFAULT) + TIMEOUT_MARGIN_S
        now_s = trio.current_time()
        plan = Failover(self.roster, safe=call.safe, now_s=now_s, deadline_s=now_s + timeout_s, preferred=preferred)
        while (step := plan.next_step(trio.current_time())) is not None:
            if isinstance(step, float):
                await trio.sleep(step)
                continue
            result = await self._exchange(step, call, timeout_s)
            if isinstance(result, Failure):
                if preferred and step.netloc == preferred[0] and self.router is not None:
                    self.router.invalidate()
                plan.failed(step, result, trio.current_time())
            else:
                plan.answered(step, result.status, result.headers.get("Retry-After"), result, trio.current_time())
        return plan.outcome()

    async def _exchange(self, node: NodeAddress, call: Call, timeout_s: float) -> Answer | Failure:
        link = self._take(node)
        with trio.move_on_after(timeout_s) as scope:
            if link is None:
                try:
                    link = _Link(await trio.open_tcp_stream(node.host, node.port))
                except OSError as error:
                    return Failure(f"connect: {error.strerror or error}", sent=False)
            try:
                answer = await link.exchange(call, node)
            except _STREAM_ERRORS as error:
                await link.stream.aclose()
                return Failure(str(error) or type(error).__name__, sent=True)
        if scope.cancelled_caught:
            if link is not None:
                await link.stream.aclose()
            return Failure("timed out" if link is not None else "connect: timed out", sent=link is not None,
                           timed_out=True)
        idle = self._idle.setdefault(node.url, [])
        if link.reusable() and len(idle) < IDLE_PER_NODE_MAX:
            idle.append(link)
        else:
            await link.stream.aclose()
        return answer

    def _take(self, node: NodeAddress) -> _Link | None:
        idle = self._idle.get(node.url)
        while idle:
            link = idle.pop()
            if link.still_open():
                return link
            link.stream.socket.close()
        return None

    async def _preferred(self, call: Call) -> list[str]:
        router = self.router
        if router is None or call.route is None:
            return []
        if router.claim_refresh(trio.current_time()):
            try:
                router.update(await self._run(self._ops.ring()))
            except ClientError:
                pass  # no view this time: any node coordinates any key
        return router.preferred(call.route)

    # ---- the operations (documented on Client) -------------------------------------------------------

    async def get(self, bucket: str | bytes, key: str | bytes, *, resolver: Resolver | None = None,
                  vtag: str | None = None, **options: Any) -> KVObject:
        return await self._run(self._ops.get(bucket, key, resolver=resolver, vtag=vtag, **options))

    async def put(self, bucket: str | bytes, key: str | bytes, value: bytes | str, *, context: Any = None,
                  content_type: str | None = None, meta: Any = None, if_none_match: bool = False,
                  if_match: str | None = None, **options: Any) -> KVObject | None:
        return await self._run(self._ops.put(bucket, key, value, context=context, content_type=content_type,
                                             meta=meta, if_none_match=if_none_match, if_match=if_match, **options))

    async def put_new(self, bucket: str | bytes, value: bytes | str, *, content_type: str | None = None,
                      meta: Any = None, **options: Any) -> str:
        return await self._run(self._ops.put_new(bucket, value, content_type=content_type, meta=meta, **options))

    async def delete(self, bucket: str | bytes, key: str | bytes, *, context: Any = None,
                     **options: Any) -> Replicas | None:
        return await self._run(self._ops.delete(bucket, key, context=context, **options))

    async def update(self, bucket: str | bytes, key: str | bytes, fn: Callable[[bytes | None], Any], *,
                     resolver: Resolver | None = None, retries: int = 3, content_type: str | None = None,
                     **options: Any) -> KVObject:
        return await self._run(self._ops.update(bucket, key, fn, resolver=resolver, retries=retries,
                                                content_type=content_type, **options))

    async def get_bucket_props(self, bucket: str | bytes) -> dict[str, Any]:
        return await self._run(self._ops.get_bucket_props(bucket))

    async def set_bucket_props(self, bucket: str | bytes, props: dict[str, Any] | None = None, **more: Any) -> None:
        await self._run(self._ops.set_bucket_props(bucket, {**(props or {}), **more}))

    async def keys(self, bucket: str | bytes) -> list[str]:
        """The bucket's keys, sorted (Riak's list keys: every partition is read; not for big buckets)."""
        return await self._run(self._ops.keys(bucket))

    async def buckets(self) -> list[str]:
        """The buckets that hold a key, sorted (reads every partition, as `keys`)."""
        return await self._run(self._ops.buckets())

    async def ping(self) -> bool:
        try:
            return await self._run(self._ops.ping())
        except ClientError:
            return False

    async def stats(self) -> dict[str, Any]:
        return await self._run(self._ops.stats())

    async def ring(self) -> dict[str, Any]:
        return await self._run(self._ops.ring())

    async def aclose(self) -> None:
        links = [link for idle in self._idle.values() for link in idle]
        self._idle.clear()
        for link in links:
            await link.stream.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
