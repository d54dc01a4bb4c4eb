"""The calling side of the simulated network: `SimPool`, a stand-in for dynamo.rpc.PeerPool.

Theory of operation (the network itself is in trio_network.py)
- `SimPool` has PeerPool's interface (request, call, cast, set_address, remove, is_connected, run) and its
  failure rules. Before its first request to a peer it dials the peer's address: connected after a round
  trip when that peer is up and reachable; refused (one round trip) when nothing serves there or another
  node does; timed out after `connect_timeout_s` when the network loses the dial. A failed dial backs
  off (exponential, capped, jittered by the node's seeded rng) and, while backing off, requests fail at
  once with RpcUnavailable. A request not answered by its deadline fails with RpcTimeout; a late reply is
  dropped. When a node stops or crashes, every connection to it resets: requests waiting on it fail with
  RpcUnavailable one latency later (if the reset gets through; else at their deadline), and a request
  that reaches a node on a connection from its previous life is answered by a reset too. A partition
  resets nothing (TCP does not notice either): requests across it time out.
- Request deadlines are entries in the network's heap, so time-outs are ordered with every delivery.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from typing import Any, Callable

import trio

from dynamo.rpc import RpcError, RpcRemoteError, RpcTimeout, RpcUnavailable
from dynamo.rpc import frame
from dynamo.rpc.backoff import DialBackoff
from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame
from dynamo.rpc.transport import SIZE_BYTES_MAX
from tools.sim.trio_network import Connection, SimNetwork, frame_digest

log = logging.getLogger("sim.net")

OnReply = Callable[[Any, "RpcError | None"], None]


@dataclasses.dataclass(eq=False)
class _Peer:
    peer_id: str
    address: str
    conn: Connection | None = None
    dialling: trio.Event | None = None
    backoff: DialBackoff = dataclasses.field(default_factory=DialBackoff)


@dataclasses.dataclass(eq=False)
class _Attempt:
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    result: Any = None  # a Connection, or why it failed


@dataclasses.dataclass(eq=False)
class _Waiting:
    conn: Connection
    on_reply: OnReply
    type_: str


class _Box:
    """A reply awaited by `call`."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.body: Any = None
        self.error: RpcError | None = None

    def deliver(self, body: Any, error: RpcError | None) -> None:
        self.body, self.error = body, error
        self.event.set()


class SimPool:
    """PeerPool's interface over a SimNetwork (see the module docstring for the rules it keeps)."""

    def __init__(self, network: SimNetwork, node_id: str, rng: random.Random, *, connect_timeout_s: float = 2.0,
                 backoff_min_s: float = 0.05, backoff_max_s: float = 5.0,
                 size_bytes_max: int = SIZE_BYTES_MAX) -> None:
        self.network, self.node_id, self._rng = network, node_id, rng
        self.connect_timeout_s = connect_timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.size_bytes_max = size_bytes_max
        self.running = False
        self._nursery: trio.Nursery | None = None
        self._peers: dict[str, _Peer] = {}
        self._waiting: dict[int, _Waiting] = {}
        self._ids = itertools.count(1)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.running = True
                self.network.pools[self.node_id] = self
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self.running = False
            if self.network.pools.get(self.node_id) is self:
                del self.network.pools[self.node_id]

    # ---- peers ----------------------------------------------------------------------------------------

    def set_address(self, peer_id: str, host: str, port: int) -> None:
        address = f"{host}:{port}"
        peer = self._peers.get(peer_id)
        if peer is None:
            self._peers[peer_id] = _Peer(peer_id, address)
        elif peer.address != address:
            peer.address = address
            peer.backoff.reset()
            if peer.conn is not None:
                self.reset(peer.conn, "address changed")

    def reset_backoff(self, peer_id: str) -> None:
        """As PeerPool.reset_backoff: the next request dials at once."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.backoff.reset()

    def remove(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None and peer.conn is not None:
            self.reset(peer.conn, "peer removed")

    def is_connected(self, peer_id: str) -> bool:
        peer = self._peers.get(peer_id)
        return peer is not None and peer.conn is not None and peer.conn.open

    def connection(self, peer_id: str) -> Connection | None:
        peer = self._peers.get(peer_id)
        return peer.conn if peer is not None and peer.conn is not None and peer.conn.open else None

    # ---- calls ----------------------------------------------------------------------------------------

    def request(self, peer_id: str, type_: str, body: Any, timeout_s: float, on_reply: OnReply) -> None:
        """As PeerPool.request: `on_reply(body, error)` runs exactly once, later, unless this raises."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if not self.running or self._nursery is None:
            raise RpcUnavailable("the peer pool is not running")
        peer = self._peer(peer_id)
        deadline_s = trio.current_time() + timeout_s
        if peer.conn is not None and peer.conn.open:
            self._send(peer.conn, type_, body, deadline_s, on_reply)
            return
        self._check_backoff(peer)
        encode_frame(frame.request(1, type_, body), self.size_bytes_max)  # the caller's error, now
        self._nursery.start_soon(self._request_later, peer, type_, body, deadline_s, on_reply)

    async def call(self, peer_id: str, type_: str, body: Any, timeout_s: float) -> Any:
        box = _Box()
        self.request(peer_id, type_, body, timeout_s, box.deliver)
        await box.event.wait()
        if box.error is not None:
            raise box.error
        return box.body

    async def cast(self, peer_id: str, type_: str, body: Any) -> bool:
        data = encode_frame(frame.one_way(type_, body), self.size_bytes_max)
        with trio.move_on_after(self.connect_timeout_s):
            try:
                conn = await self._link(self._peer(peer_id))
            except RpcUnavailable:
                return False
            if not self.running:
                return False
            self.network.send(self.node_id, conn.dst, self.network.request_arrives, conn, frame.ONE_WAY_ID, data)
            return True
        return False

    def _send(self, conn: Connection, type_: str, body: Any, deadline_s: float, on_reply: OnReply) -> None:
        request_id = next(self._ids)
        data = encode_frame(frame.request(request_id, type_, body), self.size_bytes_max)
        self._waiting[request_id] = _Waiting(conn, on_reply, type_)
        conn.waiting.add(request_id)
        self.network.at(deadline_s, self._expire, request_id)
        self.network.send(self.node_id, conn.dst, self.network.request_arrives, conn, request_id, data)

    async def _request_later(self, peer: _Peer, type_: str, body: Any, deadline_s: float,
                             on_reply: OnReply) -> None:
        error: RpcError
        with trio.move_on_at(deadline_s):
            try:
                conn = await self._link(peer)
            except RpcError as exc:
                error = exc
            else:
                if self.running:
                    self._send(conn, type_, body, deadline_s, on_reply)
                    return
                error = RpcUnavailable("the peer pool is not running")
            _deliver(self.network, on_reply, None, error, peer.peer_id)
            return
        timeout = RpcTimeout(f"no reply to {type_!r} from {peer.peer_id} in time")
        _deliver(self.network, on_reply, None, timeout, peer.peer_id)

    def _expire(self, request_id: int) -> None:
        waiting = self._waiting.pop(request_id, None)
        if waiting is not None and self.running:  # a stopped pool's timer is gone with it
            dst = waiting.conn.dst
            waiting.conn.waiting.discard(request_id)
            self.network.record("timeout", self.node_id, dst, waiting.type_, request_id)
            _deliver(self.network, waiting.on_reply, None, RpcTimeout(f"no reply from {dst} in time"), dst)

    def reply_arrives(self, conn: Connection, request_id: int, data: bytes) -> None:
        if not self.running:
            return
        waiting = self._waiting.pop(request_id, None)
        if waiting is None:
            self.network.record("late", conn.dst, self.node_id, request_id)
            return
        conn.waiting.discard(request_id)
        try:
            (msg,) = FrameDecoder(self.size_bytes_max).feed(data)
        except (FrameError, ValueError) as error:
            self.reset(conn, f"protocol error: {error}")
            _deliver(self.network, waiting.on_reply, None, RpcUnavailable(f"bad reply: {error}"), conn.dst)
            return
        self.network.delivered += 1
        self.network.record("reply", conn.dst, self.node_id, msg["t"], request_id, frame_digest(data))
        if msg["t"] == frame.ERROR:
            _deliver(self.network, waiting.on_reply, None, RpcRemoteError(msg["e"], msg["k"]), conn.dst)
        else:
            _deliver(self.network, waiting.on_reply, msg["b"], None, conn.dst)

    def reset(self, conn: Connection, reason: str) -> None:
        """The connection ended: every request waiting on it fails with RpcUnavailable."""
        if not conn.open:
            return
        conn.open = False
        peer = self._peers.get(conn.dst)
        if peer is not None and peer.conn is conn:
            peer.conn = None
        self.network.record("reset", self.node_id, conn.dst, reason)
        failure = RpcUnavailable(f"connection to {conn.dst} lost: {reason}")
        for request_id in sorted(conn.waiting):
            waiting = self._waiting.pop(request_id, None)
            if waiting is not None and self.running:
                _deliver(self.network, waiting.on_reply, None, failure, conn.dst)
        conn.waiting.clear()

    # ---- dialling -------------------------------------------------------------------------------------

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise RpcUnavailable(f"no address for peer {peer_id}")
        return peer

    def _check_backoff(self, peer: _Peer) -> None:
        peer.backoff.check(peer.peer_id, trio.current_time())

    async def _link(self, peer: _Peer) -> Connection:
        if not self.running or self._nursery is None:
            raise RpcUnavailable("the peer pool is not running")
        if peer.conn is not None and peer.conn.open:
            return peer.conn
        self._check_backoff(peer)
        if peer.dialling is None:
            peer.dialling = trio.Event()
            self._nursery.start_soon(self._dial, peer)
        await peer.dialling.wait()
        if peer.conn is not None and peer.conn.open:
            return peer.conn
        raise RpcUnavailable(f"{peer.peer_id} unreachable: {peer.backoff.last_error}")

    async def _dial(self, peer: _Peer) -> None:
        attempt = _Attempt()
        self.network.dial(self, peer, attempt)
        with trio.move_on_after(self.connect_timeout_s):
            await attempt.done.wait()
        attempt.done.set()  # over: a late answer is ignored
        result = attempt.result
        if isinstance(result, Connection) and self.running:
            peer.conn = result
            peer.backoff.reset()
        else:
            self._back_off(peer, result if isinstance(result, str) else "timed out connecting or authenticating")
        event, peer.dialling = peer.dialling, None
        assert event is not None
        event.set()

    def _back_off(self, peer: _Peer, reason: str) -> None:
        peer.backoff.failed(reason, trio.current_time(), self.backoff_min_s, self.backoff_max_s, self._rng)


def _deliver(network: SimNetwork, on_reply: OnReply, body: Any, error: RpcError | None, peer_id: str) -> None:
    try:
        on_reply(body, error)
    except Exception as exc:  # as PeerPool: the caller's bug must not end the pump; but it is recorded
        log.exception("sim rpc: reply callback for a request to %s failed", peer_id)
        network.errors.append(f"reply callback for a request to {peer_id} failed: {exc!r}")
