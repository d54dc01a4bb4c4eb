"""Whole `dynamo.node.Node`s on a simulated network, in one trio run: the harness for node scenarios.

Theory of operation
- `open_cluster(seed, nodes=5)` builds N nodes (node1..nodeN) on one SimNetwork (trio_network.py), each
  a real Node with a memory store, no TCP and no HTTP listener, seeded from the cluster's Random, with a
  wall clock that is trio's (virtual) clock plus a fixed epoch. Run it under
  tools.sim.trio_run (MockClock, deterministic scheduler) so the run is a function of the seed.
- A node's disk is its MemoryBackend state plus its data_dir (node.json: incarnation and generation, in
  a temporary directory). `crash` first makes the node's store refuse writes (`CrashableBackend`), so
  writes queued but not yet committed fail and are never acknowledged, detaches it from the network so
  nothing it does while unwinding escapes, then cancels its tasks, and puts the data_dir back as it was
  at the crash (a killed process writes no clean-stop mark). `stop` is a clean stop: the node's own
  shutdown commits what is queued. `start` (or restart) makes a new Node on the same disk: a new
  generation, and the same incarnation unless the store is empty.
- Clients speak HTTP semantics without sockets: `request` hands a dynamo.http Request to the node's
  `Api` in a task of that node (a crash cancels it) and returns a `SimReply` with the status, headers and
  body a real client would get. A node that is down raises `Refused`; a request cut off by a crash or
  the client's timeout raises `Lost` (its outcome is unknown). An exception out of the Api is a 500, as
  the HTTP server makes it, and is recorded in `errors`.
- Everything observable is recorded in the network's trace (`digest()`), so two runs of a seed compare.

Writing a scenario (see tests/sim/test_sim_node_*.py):

    async def scenario(cluster):
        assert (await cluster.put("node1", "b", "k", b"v", w=3)).status == 204
        await cluster.crash("node2")
        await cluster.wait_seen_down("node2")
        ...
    run_simulation(seed, scenario, nodes=5)   # tools.sim.trio_run

Faults: `cluster.network.partition({...}, {...})`, `.heal()`, `.clog(a, b, s)`, `.set_faults(NetworkConfig)`.
Time: `await cluster.sleep(s)` or `await cluster.wait_for(predicate, timeout_s, what)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import hashlib
import logging
import os
import pathlib
import random
import tempfile
import urllib.parse
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

import trio

from dynamo.api import Api
from dynamo.config import Member, NodeConfig
from dynamo.http.message import Response, make_request
from dynamo.http.multipart import decode_multipart
from dynamo.node import Node
from dynamo.object import StoredObject, decode_object
from dynamo.storage import Backend, MemoryBackend, StorageClosedError
from ring.hashing import partition_for_key
from ring.preflist import preference_list
from tools.sim.network import NetworkConfig
from tools.sim.trio_network import SimNetwork

log = logging.getLogger("sim.cluster")

EPOCH_NS = 1_700_000_000 * 10**9  # the simulated Unix time at virtual time 0
SIM_SETTINGS = {"partitions": 64, "gossip_interval_s": 0.5, "handoff_interval_s": 0.5, "request_timeout_s": 5.0,
                "log_level": "WARNING"}
QUIET = NetworkConfig(latency_s=0.0005, jitter_s=0.0005)


def wall_clock_ns() -> int:
    """The simulated wall clock: trio's virtual clock after EPOCH_NS."""
    return EPOCH_NS + round(trio.current_time() * 1e9)


class ClientError(Exception):
    """A simulated HTTP request got no response."""


class Refused(ClientError):
    """The node was down: the request never reached it."""


class Lost(ClientError):
    """The node crashed (or the client gave up) before answering: the outcome is unknown."""


@dataclasses.dataclass(frozen=True)
class SimReply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def vclock(self) -> str | None:
        return self.headers.get("x-riak-vclock")

    def values(self) -> list[bytes]:
        """The live values of a 200 or 300 (multipart/mixed) reply; [] for a 404."""
        if self.status == 404:
            return []
        if self.status == 200:
            return [self.body]
        assert self.status == 300, (self.status, self.text)
        parts = decode_multipart(self.headers["content-type"], self.body)
        return [part.value for part in parts if not part.deleted]


class CrashableBackend(Backend):
    """A handle on a memory store that refuses every write once `crash` is called (reads still work: a
    dead process does nothing with them, and its unwinding code stays quiet)."""

    blocking = False

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.crashed = False

    def crash(self) -> None:
        self.crashed = True

    def write_batch(self, ops):
        if self.crashed:
            raise StorageClosedError("the node crashed")
        self.inner.write_batch(ops)

    def get(self, partition, bucket, key):
        return self.inner.get(partition, bucket, key)

    def scan(self, partition, after, limit):
        return self.inner.scan(partition, after, limit)

    def count(self, partition=None):
        return self.inner.count(partition)

    def partitions(self):
        return self.inner.partitions()

    def hints(self, target, after_id=None, limit=None):
        return self.inner.hints(target, after_id, limit)

    def hint_counts(self):
        return self.inner.hint_counts()

    def hint_id_max(self):
        return self.inner.hint_id_max()

    def has_hint(self, bucket, key):
        return self.inner.has_hint(bucket, key)

    def close(self) -> None:
        self.inner.close()


@dataclasses.dataclass(eq=False)
class _Slot:
    config: NodeConfig
    disk: MemoryBackend  # a handle kept for reading the store while the node is down
    node: Node | None = None
    api: Api | None = None
    backend: CrashableBackend | None = None
    scope: trio.CancelScope | None = None
    nursery: trio.Nursery | None = None
    stopped: trio.Event | None = None
    crashing: bool = False
    starts: int = 0


def object_path(bucket: str, key: str, **query: Any) -> str:
    path = f"/buckets/{urllib.parse.quote(bucket, safe='')}/keys/{urllib.parse.quote(key, safe='')}"
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


class SimCluster:
    """The nodes of one simulation and the client's view of them. Made by `open_cluster`."""

    def __init__(self, seed: int, nursery: trio.Nursery, data_root: str, ids: Sequence[str],
                 settings: dict[str, Any], faults: NetworkConfig) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = SimNetwork(random.Random(self.rng.getrandbits(64)), faults)
        self.ids = list(ids)
        self.partitions = settings["partitions"]
        self.errors: list[str] = []
        self._nursery = nursery
        members = tuple(Member(node_id, f"{node_id}.sim:7000", f"{node_id}.sim:8000") for node_id in ids)
        self._slots: dict[str, _Slot] = {}
        for member in members:
            config = NodeConfig(node_id=member.node_id, backend="memory", data_dir=f"{data_root}/{member.node_id}",
                                members=members, rpc_host=f"{member.node_id}.sim", rpc_port=7000,
                                http_host=f"{member.node_id}.sim", http_port=8000, **settings)
            self._slots[member.node_id] = _Slot(config, MemoryBackend())
            self.network.add_host(member.node_id, member.rpc)

    # ---- nodes ----------------------------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        node = self._slots[node_id].node
        if node is None:
            raise ValueError(f"{node_id} is not running")
        return node

    def is_running(self, node_id: str) -> bool:
        return self._slots[node_id].node is not None

    def alive(self) -> list[str]:
        return [node_id for node_id in self.ids if self.is_running(node_id)]

    async def start(self, node_id: str) -> Node:
        """Start (or restart) a node on its disk; returns once it serves."""
        slot = self._slots[node_id]
        if slot.node is not None:
            raise ValueError(f"{node_id} is already running")
        backend = CrashableBackend(slot.disk.reopened())
        node = Node(slot.config, backend=backend, transport=self.network, serve_http=False,
                    rng=random.Random(self.rng.getrandbits(64)), wall_clock_ns=wall_clock_ns)
        slot.crashing = False
        await self._nursery.start(self._host, slot, node, backend)
        slot.starts += 1
        self.record("start", node_id, node.actor, node.identity.generation)
        return node

    async def _host(self, slot: _Slot, node: Node, backend: CrashableBackend, *,
                    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        slot.stopped = stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    slot.scope, slot.nursery = scope, nursery

                    async def run_node(*, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
                        await node.run(task_status=task_status)
                        # The node stopped by itself (it left): the requests it was serving end with it, as
                        # a real node's HTTP connections do. A stopped pool answers nothing still waiting.
                        scope.cancel()
                    await nursery.start(run_node)
                    slot.node, slot.api, slot.backend = node, Api(node), backend
                    task_status.started()
        except Exception as error:  # a crashed node's unwinding may trip over its refused writes
            if not slot.crashing:
                raise
            self.record("unwound", node.config.node_id, type(error).__name__)
        finally:
            slot.node = slot.api = slot.backend = slot.scope = slot.nursery = None
            stopped.set()

    async def crash(self, node_id: str) -> None:
        """Kill the node: nothing that was not committed survives, nothing it does after escapes."""
        slot = self._slots[node_id]
        if slot.node is None:
            raise ValueError(f"{node_id} is not running")
        assert slot.backend is not None and slot.scope is not None and slot.stopped is not None
        slot.crashing = True
        slot.backend.crash()
        self.network.detach(node_id)
        files = _snapshot(slot.config.data_dir)
        self.record("crash", node_id)
        slot.scope.cancel()
        await slot.stopped.wait()
        _restore(slot.config.data_dir, files)  # what the node wrote while unwinding never reached the disk

    async def stop(self, node_id: str) -> None:
        """Stop the node cleanly (its shutdown commits what is queued)."""
        slot = self._slots[node_id]
        if slot.node is None:
            raise ValueError(f"{node_id} is not running")
        assert slot.scope is not None and slot.stopped is not None
        self.record("stop", node_id)
        slot.scope.cancel()
        await slot.stopped.wait()

    # ---- clients --------------------------------------------------------------------------------------

    async def request(self, node_id: str, method: str, target: str, body: bytes = b"",
                      headers: Iterable[tuple[str, str]] = (), *, timeout_s: float = 60.0) -> SimReply:
        slot = self._slots[node_id]
        self.record("http", node_id, method, target, _digest(body))
        if slot.nursery is None or slot.api is None:
            self.record("refused", node_id)
            raise Refused(f"{node_id} is down")
        request = make_request(method, target, tuple(headers), body)
        answer: list[Response] = []
        done = trio.Event()
        slot.nursery.start_soon(self._serve_http, node_id, slot.api, request, answer, done)
        with trio.move_on_after(timeout_s):
            await done.wait()
        if not answer:
            self.record("lost", node_id)
            raise Lost(f"{method} {target} on {node_id}: no response")
        response = answer[0]
        reply = SimReply(response.status, {name.lower(): value for name, value in response.headers}, response.body)
        self.record("response", node_id, reply.status, _digest(reply.body), reply.headers.get("x-dynamo-replicas"))
        return reply

    async def _serve_http(self, node_id: str, api: Api, request: Any, answer: list, done: trio.Event) -> None:
        try:
            response = await api(request)
            if response.stream is not None:  # the HTTP server would send it chunked: here, the whole of it
                chunks: list[bytes] = []

                async def write(chunk: bytes) -> None:
                    chunks.append(chunk)
                await response.stream(write)
                response = Response(response.status, response.headers, b"".join(chunks))
            answer.append(response)
        except Exception as error:  # the HTTP server answers 500 and logs; here it is also a recorded bug
            log.exception("%s: %s %s failed", node_id, request.method, request.path)
            self.errors.append(f"{node_id}: {request.method} {request.path} raised {error!r}")
            answer.append(Response(500, (("Content-Type", "text/plain"),), b"internal error\n"))
        finally:
            done.set()

    async def get(self, node_id: str, bucket: str, key: str, **query: Any) -> SimReply:
        return await self.request(node_id, "GET", object_path(bucket, key, **query),
                                  headers=(("Accept", "multipart/mixed, */*;q=0.5"),))

    async def put(self, node_id: str, bucket: str, key: str, value: bytes, vclock: str | None = None, *,
                  content_type: str = "text/plain", **query: Any) -> SimReply:
        headers = [("Content-Type", content_type)] + ([("X-Riak-Vclock", vclock)] if vclock else [])
        return await self.request(node_id, "PUT", object_path(bucket, key, **query), value, headers)

    async def delete(self, node_id: str, bucket: str, key: str, vclock: str | None = None, **query: Any) -> SimReply:
        headers = [("X-Riak-Vclock", vclock)] if vclock else []
        return await self.request(node_id, "DELETE", object_path(bucket, key, **query), headers=headers)

    # ---- what the nodes know --------------------------------------------------------------------------

    def primaries(self, bucket: str, key: str, n_val: int = 3) -> list[str]:
        """The key's primaries by the ring of the first running node."""
        ring = self.node(self.alive()[0]).membership.ring
        partition = partition_for_key(bucket.encode(), key.encode(), ring.partitions)
        return [r.node for r in preference_list(ring, partition, n_val).primaries]

    def status_seen_by(self, observer: str, node_id: str) -> str:
        return self.node(observer).membership.member_status(node_id)

    def hints_pending(self) -> dict[str, int]:
        """Pending hints per node, running or not (a stopped node's hints are on its disk)."""
        return {node_id: sum(self._slots[node_id].disk.hint_counts().values()) for node_id in self.ids}

    def disk(self, node_id: str) -> MemoryBackend:
        """A handle on the node's store that works while it is down (tests may tamper with it)."""
        return self._slots[node_id].disk

    def partition_of(self, bucket: str, key: str) -> int:
        return partition_for_key(bucket.encode(), key.encode(), self.partitions)

    def stored(self, node_id: str, bucket: str, key: str) -> bytes | None:
        """The node's local copy (its disk: readable while it is down)."""
        return self._slots[node_id].disk.get(self.partition_of(bucket, key), bucket.encode(), key.encode())

    def stored_object(self, node_id: str, bucket: str, key: str) -> StoredObject | None:
        blob = self.stored(node_id, bucket, key)
        return None if blob is None else decode_object(blob)

    def rings(self) -> dict[str, tuple[int, str]]:
        """Each running node's ring as (version, digest)."""
        return {n: (self.node(n).membership.ring.version, self.node(n).membership.ring.digest())
                for n in self.alive()}

    # ---- time -----------------------------------------------------------------------------------------

    async def sleep(self, duration_s: float) -> None:
        await trio.sleep(duration_s)

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str,
                       interval_s: float = 0.1) -> Any:
        """Poll `predicate` every interval_s of simulated time; AssertionError naming `what` at the deadline."""
        deadline_s = trio.current_time() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if trio.current_time() >= deadline_s:
                raise AssertionError(f"gave up waiting {timeout_s:g} s (simulated) for {what}")
            await trio.sleep(interval_s)

    async def wait_all_up(self, ids: Iterable[str] | None = None, timeout_s: float = 30.0) -> None:
        """Until every running node sees every node of ids (default: the running ones) as up."""
        ids = list(self.alive() if ids is None else ids)
        await self.wait_for(lambda: all(self.status_seen_by(o, n) == "up" for o in self.alive() for n in ids),
                            timeout_s, f"every node to see {ids} up")

    async def wait_seen_down(self, node_id: str, timeout_s: float = 30.0) -> None:
        await self.wait_for(lambda: all(self.status_seen_by(o, node_id) == "down" for o in self.alive()),
                            timeout_s, f"every running node to see {node_id} down")

    # ---- trace ----------------------------------------------------------------------------------------

    def record(self, kind: str, *details: Any) -> None:
        self.network.record(kind, *details)

    def digest(self) -> str:
        return self.network.digest()

    def report(self, lines: int = 40) -> str:
        """The tail of the trace, for a failing test's message."""
        return "\n".join(list(self.network.recent)[-lines:])


def _snapshot(directory: str | None) -> dict[str, bytes]:
    if directory is None or not os.path.isdir(directory):
        return {}
    return {name: pathlib.Path(directory, name).read_bytes() for name in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, name))}


def _restore(directory: str | None, files: dict[str, bytes]) -> None:
    if directory is None or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name not in files and os.path.isfile(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    for name, data in files.items():
        pathlib.Path(directory, name).write_bytes(data)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=6).hexdigest()


@contextlib.asynccontextmanager
async def open_cluster(seed: int, nodes: int = 5, *, settings: dict[str, Any] | None = None,
                       faults: NetworkConfig = QUIET, start: bool = True) -> AsyncIterator[SimCluster]:
    """A cluster of `nodes` nodes on a simulated network; all started and seeing each other up unless
    start=False. On exit every node stops (cleanly) and the temporary data directory goes."""
    with tempfile.TemporaryDirectory(prefix="dynamo-sim-") as data_root:
        async with trio.open_nursery() as nursery:
            ids = [f"node{i}" for i in range(1, nodes + 1)]
            cluster = SimCluster(seed, nursery, data_root, ids, {**SIM_SETTINGS, **(settings or {})}, faults)
            await nursery.start(cluster.network.run)
            if start:
                for node_id in ids:
                    await cluster.start(node_id)
                await cluster.wait_all_up()
            try:
                yield cluster
            finally:
                nursery.cancel_scope.cancel()
