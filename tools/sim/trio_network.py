"""A simulated network for whole trio nodes: seeded latency and faults, and a stand-in for PeerPool.

Theory of operation
- One `SimNetwork` per simulated cluster, inside one trio run under MockClock. Everything that crosses
  it (connection set-up, request, reply, one-way cast, reset, request deadline) is an entry in one heap
  ordered by (time, sequence number), and one pump task (`run`) acts on them in that order. A message's
  fate is decided when it is sent, by tools.sim.network.Network (the fault model the gossip simulator
  uses too: latency plus jitter, drop, duplicate, reorder, partitions as node groups, clogged links),
  drawing from one seeded Random in the order messages are sent. A partition also loses what is in
  flight across it when it arrives.
- Messages are real RPC frames (dynamo.rpc.frame: CBOR, size limit, validation on the way in), so no
  object is shared between nodes and a body the wire cannot carry fails as it would over TCP.
- `SimPool` (trio_pool.py) has PeerPool's interface and failure rules on top of this network.
- Beyond TCP: `drop_p`, `duplicate_p` and `reorder_p` act per message, and latency jitter reorders
  messages of one connection, which TCP would not. A duplicated request runs its handler twice (the
  second reply is dropped as late). Use them knowing they are harsher than the real transport.
- Servers: `serve(node_id, handler, deferred=...)` registers a node; each request runs
  `handler(peer_id, type, body)` in a task of the serving nursery (so a crash cancels it) and its reply or
  error frame is built as RpcServer builds it (kinds unknown_type, handler, bad_reply). A type with a
  `deferred` handler is first offered to it, as RpcServer does: taken, it answers through its `respond`
  callback; declined, it runs as a task. No per-connection concurrency limit.
- Trace: every delivery, dial, reset and timeout adds (time, kind, src, dst, digest of the frame) to a
  running blake2b digest (`digest()`); `recent` keeps the last lines for failure reports.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import heapq
import itertools
import logging
import math
import random
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import cbor2
import trio

from dynamo.rpc import ServerStats, UnknownType
from dynamo.rpc import frame
from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame
from dynamo.rpc.transport import (KIND_BAD_REPLY, KIND_HANDLER, KIND_UNKNOWN_TYPE, SIZE_BYTES_MAX, DeferredHandler,
                                  offer_deferred)
from tools.sim.network import Network, NetworkConfig

if TYPE_CHECKING:
    from tools.sim.trio_pool import SimPool

log = logging.getLogger("sim.net")

Handler = Callable[[str, str, Any], Awaitable[Any]]
RECENT_LINES = 200


@dataclasses.dataclass(eq=False)
class _Server:
    """A serving node incarnation."""
    node_id: str
    incarnation: int
    handler: Handler
    nursery: trio.Nursery
    stats: ServerStats
    deferred: dict[str, DeferredHandler] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class Connection:
    """One direction of a connection: pool (of `src`) to the server incarnation of `dst` it reached."""
    pool: Any  # the SimPool of the connecting node
    dst: str
    incarnation: int
    open: bool = True
    waiting: set[int] = dataclasses.field(default_factory=set)  # request ids waiting for their reply


class SimNetwork:
    """The cluster's network: hosts, servers, the heap of things in flight, and the fault model."""

    def __init__(self, rng: random.Random, config: NetworkConfig | None = None) -> None:
        self.links = Network(rng, config)
        self.rng = rng
        self.hosts: dict[str, str] = {}  # "host:port" -> node id serving there
        self.servers: dict[str, _Server] = {}
        self.pools: dict[str, SimPool] = {}
        self._incarnations: dict[str, int] = collections.Counter()
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._pump_scope: trio.CancelScope | None = None
        self._hash = hashlib.blake2b(digest_size=16)
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT_LINES)
        self.delivered = 0
        self.dropped = 0
        self.errors: list[str] = []  # reply callbacks that raised: bugs a scenario should fail on

    # ---- set-up and faults ----------------------------------------------------------------------------

    def add_host(self, node_id: str, address: str) -> None:
        self.hosts[address] = node_id

    def set_faults(self, config: NetworkConfig) -> None:
        """Change latency and loss from now on (e.g. a quiet network after the faults)."""
        self.links.config = config
        self.record("faults", repr(config))

    def partition(self, *groups: set[str] | list[str]) -> None:
        self.links.partition(groups)
        self.record("partition", repr([sorted(group) for group in groups]))

    def heal(self) -> None:
        """End every partition and clog."""
        self.links.heal()
        self.record("heal")

    def clog(self, src: str, dst: str, duration_s: float) -> None:
        self.links.clog(src, dst, trio.current_time() + duration_s)
        self.record("clog", src, dst, f"{duration_s:.3f}")

    # ---- trace ----------------------------------------------------------------------------------------

    def record(self, kind: str, *details: Any) -> None:
        line = f"{trio.current_time():.6f} {kind} " + " ".join(str(d) for d in details)
        self._hash.update(line.encode() + b"\n")
        self.recent.append(line)

    def digest(self) -> str:
        return self._hash.hexdigest()

    # ---- the pump -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Act on the heap in (time, sequence) order until cancelled."""
        heap = self._heap
        task_status.started()
        while True:
            now_s = trio.current_time()
            while heap and heap[0][0] <= now_s:
                _, _, action, args = heapq.heappop(heap)
                action(*args)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._pump_scope = scope
                await trio.sleep_forever()
            self._pump_scope = None

    def at(self, at_s: float, action: Callable[..., None], *args: Any) -> None:
        """Run `action(*args)` from the pump at `at_s` (ties in the order scheduled)."""
        heapq.heappush(self._heap, (at_s, next(self._seq), action, args))
        scope = self._pump_scope
        if scope is not None and at_s < scope.deadline:
            scope.deadline = at_s

    def send(self, src: str, dst: str, action: Callable[..., None], *args: Any) -> bool:
        """Carry a message from src to dst: `action(*args)` runs at each arrival that the fault model
        lets through (none, one, or two when duplicated). False when it is lost at once."""
        times = self.links.route(src, dst, trio.current_time())
        if not times:
            self.dropped += 1
        for at_s in times:
            self.at(at_s, self._arrive, src, dst, action, args)
        return bool(times)

    def _arrive(self, src: str, dst: str, action: Callable[..., None], args: tuple) -> None:
        if not self.links.can_reach(src, dst):  # cut while in flight
            self.dropped += 1
            return
        action(*args)

    # ---- servers --------------------------------------------------------------------------------------

    async def serve(self, node_id: str, handler: Handler, *, deferred: dict[str, DeferredHandler] | None = None,
                    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Serve `node_id`'s RPCs with `handler` (and `deferred`, see the module docstring) until cancelled
        (`Node`'s transport seam)."""
        self._incarnations[node_id] += 1
        stats = ServerStats()
        try:
            async with trio.open_nursery() as nursery:
                server = _Server(node_id, self._incarnations[node_id], handler, nursery, stats, dict(deferred or {}))
                self.servers[node_id] = server
                self.record("serve", node_id, server.incarnation)
                task_status.started(server)
                await trio.sleep_forever()
        finally:
            self.detach(node_id)

    def detach(self, node_id: str) -> None:
        """The node is gone (crash or stop): no more serving or sending, and its peers' connections to it
        reset. Idempotent; called first thing by a crash so that nothing it does while unwinding escapes."""
        server = self.servers.pop(node_id, None)
        pool = self.pools.pop(node_id, None)
        if pool is not None:
            pool.running = False
        if server is None:
            return
        self.record("detach", node_id, server.incarnation)
        for other in list(self.pools.values()):
            conn = other.connection(node_id)
            if conn is not None and conn.incarnation == server.incarnation:
                self.send(node_id, other.node_id, other.reset, conn, "connection reset by peer")

    def request_arrives(self, conn: Connection, request_id: int, data: bytes) -> None:
        server = self.servers.get(conn.dst)
        src = conn.pool.node_id
        if server is None or server.incarnation != conn.incarnation:  # a connection from its past life
            self.record("stale", src, conn.dst, request_id)
            self.send(conn.dst, src, conn.pool.reset, conn, "connection reset by peer")
            return
        try:
            (msg,) = FrameDecoder(SIZE_BYTES_MAX).feed(data)
        except (FrameError, ValueError) as error:  # the server drops a connection that breaks the protocol
            self.record("bad_frame", src, conn.dst, error)
            self.send(conn.dst, src, conn.pool.reset, conn, f"protocol error: {error}")
            return
        self.delivered += 1
        self.record("request", src, conn.dst, msg["t"], request_id, frame_digest(data))
        server.stats.requests += 1
        deferred = server.deferred.get(msg["t"])
        if deferred is None or not self._offer_deferred(server, conn, msg, deferred):
            server.nursery.start_soon(self._answer, server, conn, msg)

    def _offer_deferred(self, server: _Server, conn: Connection, msg: dict, handler: DeferredHandler) -> bool:
        send = functools.partial(self._send_answer, server, conn, msg)
        return offer_deferred(handler, conn.pool.node_id, msg["t"], msg["b"], send)

    async def _answer(self, server: _Server, conn: Connection, msg: dict) -> None:
        try:
            body, error = await server.handler(conn.pool.node_id, msg["t"], msg["b"]), None
        except Exception as exc:
            body, error = None, exc
        self._send_answer(server, conn, msg, body, error)

    @staticmethod
    def _answer_frame(server: _Server, conn: Connection, msg: dict, body: Any, error: Exception | None) -> dict:
        request_id, type_ = msg["id"], msg["t"]
        if isinstance(error, UnknownType):
            return frame.error(request_id, str(error) or type_, KIND_UNKNOWN_TYPE)
        if error is not None:
            server.stats.handler_errors += 1
            log.debug("handler for %r from %s failed: %r", type_, conn.pool.node_id, error)
            return frame.error(request_id, f"{type(error).__name__}: {error}", KIND_HANDLER)
        return frame.reply(request_id, body)

    def _send_answer(self, server: _Server, conn: Connection, msg: dict, body: Any, error: Exception | None) -> None:
        """Answer a request with `body`, or with the error frame for `error`, as RpcServer would."""
        answer = self._answer_frame(server, conn, msg, body, error)
        request_id = msg["id"]
        if request_id == frame.ONE_WAY_ID or self.servers.get(server.node_id) is not server:
            return  # nothing to answer, or the server died meanwhile: nobody sends its reply
        try:
            data = encode_frame(answer, SIZE_BYTES_MAX)
        except (FrameError, cbor2.CBOREncodeError) as exc:
            data = encode_frame(frame.error(request_id, f"reply not sendable: {exc}", KIND_BAD_REPLY))
        self.send(server.node_id, conn.pool.node_id, conn.pool.reply_arrives, conn, request_id, data)

    # ---- pools ----------------------------------------------------------------------------------------

    def pool(self, node_id: str, rng: random.Random | None = None, **options: Any) -> "SimPool":
        """A new pool for node_id (`Node`'s transport seam); it takes part once its `run` starts."""
        from tools.sim.trio_pool import SimPool  # the pool module builds on this one

        return SimPool(self, node_id, rng or random.Random(self.rng.getrandbits(64)), **options)

    def dial(self, pool: "SimPool", peer: Any, attempt: Any) -> None:
        """Carry a connection attempt: `attempt.result` becomes a Connection or an error text, unless the
        attempt is over (timed out) first."""
        src, dst = pool.node_id, self.hosts.get(peer.address, peer.peer_id)

        def syn_arrives() -> None:
            server = self.servers.get(self.hosts.get(peer.address, ""))
            if server is None:
                self.send(dst, src, finish, "connection refused")
            elif server.node_id != peer.peer_id:
                self.send(dst, src, finish, f"handshake failed: the peer is {server.node_id}")
            else:
                self.send(dst, src, finish, Connection(pool, server.node_id, server.incarnation))

        def finish(result: Any) -> None:
            if not attempt.done.is_set() and pool.running:
                attempt.result = result
                self.record("dialled", src, peer.peer_id, result if isinstance(result, str) else "connected")
                attempt.done.set()

        self.send(src, dst, syn_arrives)


def frame_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=6).hexdigest()
