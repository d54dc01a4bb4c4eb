"""A whole cluster in one trio run: real nodes (RPC, gossip, HTTP on 127.0.0.1) over memory stores.

`local_cluster(n, **settings)` binds every node's RPC and HTTP listener first (port 0), so the member list
with real addresses exists before any node starts; then starts each node in its own cancel scope.
`cluster.stop(node)` cancels that scope (a clean stop: listeners close, queued writes are written);
`cluster.start(node)` starts it again on the same ports over the same memory "disk" (`reopened()`).
Gossip and handoff run every 0.1 s so a stopped node is seen down within about a second.

`Client(port)` is a minimal HTTP/1.1 client on h11 (one connection per request) returning
(status, headers as a lower-cased dict, body). Tests use the fixtures `local_cluster` and `client`,
and `run(fn)` (trio.run under fail_after).
"""

from __future__ import annotations

import dataclasses
import pathlib
import urllib.parse
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import h11
import pytest
import trio

from dynamo.config import Member, NodeConfig
from dynamo.node import Node
from dynamo.storage import MemoryBackend
from tools.sim.node_cluster import SimReply as Reply  # the same reply shape as the simulator's client

FAST = dict(gossip_interval_s=0.1, handoff_interval_s=0.1, request_timeout_s=3.0, partitions=64)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      **query: Any) -> Reply:
        if query:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        try:
            conn = h11.Connection(h11.CLIENT)
            head = [("Host", "localhost"), ("Content-Length", str(len(body)))]
            head += list((headers or {}).items())
            data = conn.send(h11.Request(method=method, target=path, headers=head))
            data += conn.send(h11.Data(data=body)) if body else b""
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            status, reply_headers, chunks = 0, {}, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    for name, value in event.headers:
                        key = name.decode("latin-1").lower()
                        value = value.decode("latin-1")
                        reply_headers[key] = f"{reply_headers[key]}, {value}" if key in reply_headers else value
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            return Reply(status, reply_headers, b"".join(chunks))
        finally:
            await stream.aclose()

    async def get(self, bucket: str, key: str, headers: dict[str, str] | None = None, **query: Any) -> Reply:
        return await self.request("GET", obj_path(bucket, key), headers=headers, **query)

    async def put(self, bucket: str, key: str, body: bytes, headers: dict[str, str] | None = None,
                  **query: Any) -> Reply:
        headers = {"Content-Type": "text/plain", **(headers or {})}
        return await self.request("PUT", obj_path(bucket, key), body, headers=headers, **query)

    async def delete(self, bucket: str, key: str, headers: dict[str, str] | None = None, **query: Any) -> Reply:
        return await self.request("DELETE", obj_path(bucket, key), headers=headers, **query)

    async def stats(self) -> dict[str, Any]:
        reply = await self.request("GET", "/stats")
        assert reply.status == 200, reply
        return reply.json()


def obj_path(bucket: str, key: str) -> str:
    return f"/buckets/{urllib.parse.quote(bucket, safe='')}/keys/{urllib.parse.quote(key, safe='')}"


@dataclasses.dataclass
class NodeHandle:
    config: NodeConfig
    backend: MemoryBackend
    node: Node | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None

    @property
    def running(self) -> bool:
        return self.stopped is not None and not self.stopped.is_set()


class LocalCluster:
    def __init__(self, nursery: trio.Nursery, handles: dict[str, NodeHandle]) -> None:
        self.nursery = nursery
        self.handles = handles

    @property
    def ids(self) -> list[str]:
        return sorted(self.handles)

    def node(self, node_id: str) -> Node:
        node = self.handles[node_id].node
        assert node is not None
        return node

    def client(self, node_id: str) -> Client:
        return Client(self.handles[node_id].config.http_port)

    async def start(self, node_id: str, *, listeners: tuple | None = None) -> Node:
        handle = self.handles[node_id]
        assert not handle.running, f"{node_id} is running"
        config = handle.config
        if listeners is None:
            listeners = (await trio.open_tcp_listeners(config.rpc_port, host="127.0.0.1"),
                         await trio.open_tcp_listeners(config.http_port, host="127.0.0.1"))
        handle.backend = handle.backend.reopened() if handle.node is not None else handle.backend
        handle.node = Node(config, backend=handle.backend)
        handle.stopped = trio.Event()
        handle.scope = trio.CancelScope()
        await self.nursery.start(self._run, handle, listeners)
        return handle.node

    async def _run(self, handle: NodeHandle, listeners: tuple, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with handle.scope:
                await handle.node.run(rpc_listeners=listeners[0], http_listeners=listeners[1],
                                      task_status=task_status)
        finally:
            handle.stopped.set()

    async def stop(self, node_id: str) -> None:
        handle = self.handles[node_id]
        handle.scope.cancel()
        await handle.stopped.wait()

    async def wait_until(self, predicate, timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
        """Poll `predicate` (sync or async) until it is true; fail after timeout_s."""
        with trio.fail_after(timeout_s):
            while True:
                result = predicate()
                if hasattr(result, "__await__"):
                    result = await result
                if result:
                    return
                await trio.sleep(interval_s)

    async def wait_down(self, node_id: str, timeout_s: float = 10.0) -> None:
        """Until every running node's failure detector has convicted `node_id`."""
        others = [self.node(n) for n in self.ids if n != node_id and self.handles[n].running]
        await self.wait_until(lambda: all(node_id in node.membership.down for node in others), timeout_s)

    async def wait_up(self, node_id: str, timeout_s: float = 10.0) -> None:
        others = [self.node(n) for n in self.ids if n != node_id and self.handles[n].running]
        await self.wait_until(lambda: all(node.membership.is_alive(node_id) for node in others), timeout_s)

    def primaries(self, bucket: str, key: str, n_val: int = 3) -> list[str]:
        from ring.hashing import partition_for_key
        membership = self.node(self.ids[0]).membership
        partition = partition_for_key(bucket.encode(), key.encode(), membership.ring.partitions)
        return [r.node for r in membership.preflist(partition, n_val).primaries]


@asynccontextmanager
async def _local_cluster(size: int, data_root: pathlib.Path, **settings: Any) -> AsyncIterator[LocalCluster]:
    ids = [f"n{i}" for i in range(1, size + 1)]
    listeners = {}
    for node_id in ids:
        listeners[node_id] = (await trio.open_tcp_listeners(0, host="127.0.0.1"),
                              await trio.open_tcp_listeners(0, host="127.0.0.1"))
    port = {node_id: (pair[0][0].socket.getsockname()[1], pair[1][0].socket.getsockname()[1])
            for node_id, pair in listeners.items()}
    members = tuple(Member(n, f"127.0.0.1:{port[n][0]}", f"127.0.0.1:{port[n][1]}") for n in ids)
    options = {**FAST, **settings}
    handles = {}
    for node_id in ids:
        config = NodeConfig(node_id=node_id, cluster="test", secret="test-secret", rpc_port=port[node_id][0],
                            http_port=port[node_id][1], data_dir=str(data_root / node_id), backend="memory",
                            members=members, **options)
        handles[node_id] = NodeHandle(config, MemoryBackend())
    async with trio.open_nursery() as nursery:
        cluster = LocalCluster(nursery, handles)
        for node_id in ids:
            await cluster.start(node_id, listeners=listeners[node_id])
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
def local_cluster(tmp_path):
    """`async with local_cluster(5, **config_settings) as cluster:`"""
    def factory(size: int, **settings: Any):
        return _local_cluster(size, tmp_path, **settings)
    return factory


def run(fn, timeout_s: float = 30.0) -> None:
    async def main():
        with trio.fail_after(timeout_s):
            await fn()
    trio.run(main)


@pytest.fixture
def trio_run():
    return run
