"""The calling side of node-to-node RPC: one persistent, multiplexed connection per peer.

Theory of operation
-------------------
`PeerPool` keeps, per peer, at most one authenticated connection, dialled on first use and shared by every
caller. Each request takes the next request id on that connection, queues its frame on the link's outbox
(the writer batches it with whatever else is queued) and is answered by the reply carrying its id; replies
may come in any order. Every request has a deadline: past it the caller gets RpcTimeout and a late reply
is dropped. Two ways to ask:

- `await call(...)`: the reply body, or an exception. One task waits for one reply.
- `request(..., on_reply)`: no task and no cancel scope. `on_reply(body, error)` runs exactly once, later,
  from the link's reader (the reply), the pool's timer (the deadline) or the link's end (the connection
  dropped). A coordinator fans out to several replicas this way and waits once for all of them. When the
  request cannot be sent at once (no connection yet, or the outbox is full), a task in the pool's nursery
  dials and waits for it; the caller sees no difference.

Deadlines of `request` live in one heap served by one timer task. Answered requests are popped from the
heap's head as new requests come in, so the heap holds only the requests since the oldest unanswered one,
and the timer wakes only when that one's deadline passes (not once per request).

Failure rules:
- A dial that fails (refused, timed out, handshake rejected, or the peer is not the node we asked for) puts
  the peer in backoff: the next attempt is allowed after an exponentially growing, capped, jittered delay.
  While backing off, requests fail at once with RpcUnavailable instead of waiting out their deadline, so the
  coordinator can move on to a fallback replica. The first request after the delay dials again, or the
  first after `reset_backoff` (the node's membership calls it when gossip hears the peer is back).
- When a connection drops, every request waiting on it fails with RpcUnavailable; the next one re-dials at
  once (a connection that worked is not yet a reason to back off).
- The dial runs in the pool's own nursery, not in the caller's cancel scope, so one impatient caller does
  not abort a dial that others are waiting for.

The pool needs a nursery to host its connections: `async with PeerPool(...) as pool`, or
`await nursery.start(pool.run)` in the owner's nursery. Time comes from trio's clock (MockClock works).
"""

import dataclasses
import heapq
import itertools
import logging
import math
import random
from typing import Any, Callable

import trio

from dynamo.rpc import frame
from dynamo.rpc.backoff import DialBackoff
from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame
from dynamo.rpc.handshake import HandshakeError, Role
from dynamo.rpc.transport import (HANDSHAKE_FRAME_BYTES_MAX, SIZE_BYTES_MAX, Link, RpcError, RpcRemoteError,
                                  RpcTimeout, RpcUnavailable, authenticate, describe_error,
                                  new_handshake)

log = logging.getLogger("dynamo.rpc")

OnReply = Callable[[Any, "RpcError | None"], None]


def _outcome(msg: dict) -> tuple[Any, RpcError | None]:
    if msg["t"] == frame.ERROR:
        return None, RpcRemoteError(msg["e"], msg["k"])
    return msg["b"], None


class _PendingCall:
    """A task parked in `call` until its reply (or the end of its connection) arrives."""

    __slots__ = ("event", "body", "error")

    def __init__(self):
        self.event = trio.Event()
        self.body: Any = None
        self.error: RpcError | None = None

    def deliver(self, body: Any, error: RpcError | None) -> None:
        self.body, self.error = body, error
        self.event.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.body


def _deliver(on_reply: OnReply, body: Any, error: RpcError | None, peer_id: str) -> None:
    try:
        on_reply(body, error)
    except Exception:  # the caller's bug must not end the link, the timer or the task that delivered it
        log.exception("rpc: reply callback for a request to %s failed", peer_id)


class _Request:
    """A `request` in flight: its callback until answered (then None), and where to find it."""

    __slots__ = ("link", "request_id", "on_reply")

    def __init__(self, link: "_ClientLink", request_id: int, on_reply: OnReply):
        self.link, self.request_id, self.on_reply = link, request_id, on_reply

    def deliver(self, body: Any, error: RpcError | None) -> None:
        on_reply, self.on_reply = self.on_reply, None
        if on_reply is not None:
            _deliver(on_reply, body, error, self.link.peer_id)


class _ClientLink(Link):
    def __init__(self, stream, decoder, peer_id: str, size_bytes_max: int):
        super().__init__(stream, decoder, peer_id)
        self._size_bytes_max = size_bytes_max
        self._pending: dict[int, _PendingCall | _Request] = {}
        self._next_id = 1

    def _frame(self, type_: str, body: Any) -> tuple[int, bytes]:
        request_id = self._next_id
        self._next_id = request_id + 1 if request_id < frame.REQUEST_ID_MAX else 1
        return request_id, encode_frame(frame.request(request_id, type_, body), self._size_bytes_max)

    async def call(self, type_: str, body: Any) -> Any:
        request_id, data = self._frame(type_, body)
        pending = self._pending[request_id] = _PendingCall()
        try:
            await self.outbox.put(data)
            await pending.event.wait()
        finally:
            self._pending.pop(request_id, None)
        return pending.outcome()

    def send(self, type_: str, body: Any, on_reply: OnReply) -> _Request:
        """Queue a request without waiting (the caller checked `outbox.has_room`)."""
        request_id, data = self._frame(type_, body)
        sent = self._pending[request_id] = _Request(self, request_id, on_reply)
        queued = self.outbox.put_nowait(data)
        assert queued, "send() on a closed or full outbox"
        return sent

    def expire(self, sent: _Request, error: RpcError) -> None:
        if self._pending.pop(sent.request_id, None) is sent:
            sent.deliver(None, error)

    async def on_message(self, msg: dict, nursery: trio.Nursery) -> None:
        if msg["t"] != frame.REPLY and msg["t"] != frame.ERROR:
            raise FrameError(f"unexpected {msg['t']!r} frame on a client connection")
        pending = self._pending.pop(msg["id"], None)
        if pending is not None:  # else the caller gave up (deadline) and the reply is late: drop it
            pending.deliver(*_outcome(msg))

    def on_close(self, reason: str) -> None:
        failure = RpcUnavailable(f"connection to {self.peer_id} lost: {reason}")
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.deliver(None, failure)


@dataclasses.dataclass
class _Peer:
    peer_id: str
    address: tuple[str, int]
    link: _ClientLink | None = None
    dialling: trio.Event | None = None
    backoff: DialBackoff = dataclasses.field(default_factory=DialBackoff)


class PeerPool:
    """Calls other nodes: `set_address` each peer, then `call` / `request` / `cast` by peer id."""

    def __init__(self, node_id: str, cluster: str, secret, *, size_bytes_max: int = SIZE_BYTES_MAX,
                 connect_timeout_s: float = 2.0, backoff_min_s: float = 0.05, backoff_max_s: float = 5.0,
                 rng: random.Random | None = None):
        new_handshake(Role.CLIENT, node_id, cluster, secret)  # validates the identity arguments now
        if not 0 < backoff_min_s <= backoff_max_s or connect_timeout_s <= 0:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s and connect_timeout_s > 0")
        self.node_id, self.cluster, self._secret = node_id, cluster, secret
        self.size_bytes_max = size_bytes_max
        self.connect_timeout_s = connect_timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self._rng = rng or random.Random()
        self._peers: dict[str, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self._outer = None  # the nursery `async with` opens around `run`
        self._exit_scope: trio.CancelScope | None = None
        # The deadlines of `request`s: (deadline_s, sequence, request), and the timer task serving them.
        self._deadlines: list[tuple[float, int, _Request]] = []
        self._sequence = itertools.count()
        self._timer_at_s = math.inf  # when the timer task wakes up next
        self._timer_task: trio.lowlevel.Task | None = None  # set while it sleeps

    # -- lifetime ---------------------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Host the pool's connections until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._expire_requests)
                task_status.started(self)
                try:
                    await trio.sleep_forever()
                finally:
                    # The nursery takes no new tasks once its body has left, while it still waits for the
                    # running ones: from here on, callers must hear "not running", not trio's RuntimeError.
                    self._nursery = None
        finally:
            self._nursery = None

    async def __aenter__(self) -> "PeerPool":
        self._outer = trio.open_nursery()
        nursery = await self._outer.__aenter__()
        self._exit_scope = nursery.cancel_scope
        await nursery.start(self.run)
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        assert self._exit_scope is not None and self._outer is not None
        self._exit_scope.cancel()
        # The body's own exception is not handed to the nursery, so it leaves unchanged instead of
        # wrapped in an ExceptionGroup; the nursery only has the pool's (cancelled) tasks to wait for.
        await self._outer.__aexit__(None, None, None)
        return False

    # -- peers ------------------------------------------------------------------------------------------

    def set_address(self, peer_id: str, host: str, port: int) -> None:
        """Add a peer or move it; a move drops the old connection and forgets the backoff."""
        peer = self._peers.get(peer_id)
        if peer is None:
            self._peers[peer_id] = _Peer(peer_id, (host, port))
        elif peer.address != (host, port):
            peer.address = (host, port)
            peer.backoff.reset()
            if peer.link is not None:
                peer.link.close()

    def reset_backoff(self, peer_id: str) -> None:
        """Forget the peer's failed dials, so the next request dials at once. For when we learn by other
        means (gossip: it restarted, or is up again) that the peer is back: backing off longer only turns
        away requests it could serve."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.backoff.reset()

    def remove(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None and peer.link is not None:
            peer.link.close()

    def is_connected(self, peer_id: str) -> bool:
        peer = self._peers.get(peer_id)
        return peer is not None and peer.link is not None and peer.link.is_open

    # -- calls ------------------------------------------------------------------------------------------

    async def call(self, peer_id: str, type_: str, body: Any, timeout_s: float) -> Any:
        """Send a request and return the reply body. Raises RpcTimeout, RpcUnavailable, RpcRemoteError;
        FrameError (a ValueError) if the request is over the frame limit."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        with trio.move_on_after(timeout_s):
            link = await self._link(peer_id)
            return await link.call(type_, body)
        raise RpcTimeout(f"no reply to {type_!r} from {peer_id} within {timeout_s}s")

    def request(self, peer_id: str, type_: str, body: Any, timeout_s: float, on_reply: OnReply) -> None:
        """Send a request; `on_reply(body, None)` or `on_reply(None, error)` runs exactly once, later, with
        error an RpcTimeout, RpcUnavailable or RpcRemoteError. Raises instead (and never calls on_reply)
        when nothing can be sent: RpcUnavailable (no such peer, backing off, pool stopped), FrameError or
        CBOR's errors (a body over the limit or not encodable), ValueError (timeout_s not positive)."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if self._nursery is None:
            raise RpcUnavailable("the peer pool is not running")
        peer = self._peer(peer_id)
        link = peer.link
        if link is None or not link.is_open or not link.outbox.has_room:
            self._check_backoff(peer)
            # Encode now, so an oversize body is the caller's error here as it is with `call`.
            encode_frame(frame.request(1, type_, body), self.size_bytes_max)
            self._nursery.start_soon(self._request_later, peer_id, type_, body, timeout_s, on_reply)
            return
        sent = link.send(type_, body, on_reply)
        self._track(trio.current_time() + timeout_s, sent)

    async def _request_later(self, peer_id: str, type_: str, body: Any, timeout_s: float,
                             on_reply: OnReply) -> None:
        """The slow path of `request`: dial (or wait for room) in a task of our own."""
        try:
            reply, error = await self.call(peer_id, type_, body, timeout_s), None
        except RpcError as exc:
            reply, error = None, exc
        except Exception as exc:  # a bug: the caller still gets its one answer, and the pool lives on
            log.exception("rpc: request %r to %s failed", type_, peer_id)
            reply, error = None, RpcUnavailable(f"request failed: {exc!r}")
        _deliver(on_reply, reply, error, peer_id)

    def _track(self, deadline_s: float, sent: _Request) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].on_reply is None:  # answered: nothing left to time out
            heapq.heappop(deadlines)
        heapq.heappush(deadlines, (deadline_s, next(self._sequence), sent))
        if deadline_s < self._timer_at_s and self._timer_task is not None:
            task, self._timer_task = self._timer_task, None
            trio.lowlevel.reschedule(task)  # it sleeps too long (or forever): wake it to look again

    async def _expire_requests(self) -> None:
        """The timer: fail each request still unanswered at its deadline."""
        deadlines = self._deadlines
        while True:
            now_s = trio.current_time()
            while deadlines and (deadlines[0][2].on_reply is None or deadlines[0][0] <= now_s):
                _, _, sent = heapq.heappop(deadlines)
                if sent.on_reply is not None:
                    sent.link.expire(sent, RpcTimeout(f"no reply from {sent.link.peer_id} in time"))
            self._timer_at_s = deadlines[0][0] if deadlines else math.inf
            with trio.move_on_at(self._timer_at_s):
                self._timer_task = trio.lowlevel.current_task()
                try:
                    await trio.lowlevel.wait_task_rescheduled(self._abort_timer_wait)
                finally:
                    self._timer_task = None

    def _abort_timer_wait(self, _raise_cancel) -> trio.lowlevel.Abort:
        self._timer_task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def cast(self, peer_id: str, type_: str, body: Any) -> bool:
        """Send a one-way message, best effort: return whether it was queued (dialling if needed)."""
        data = encode_frame(frame.one_way(type_, body), self.size_bytes_max)
        with trio.move_on_after(self.connect_timeout_s):
            try:
                link = await self._link(peer_id)
            except RpcUnavailable:
                return False
            return link.outbox.put_nowait(data)
        return False

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise RpcUnavailable(f"no address for peer {peer_id}")
        return peer

    def _check_backoff(self, peer: _Peer) -> None:
        peer.backoff.check(peer.peer_id, trio.current_time())

    async def _link(self, peer_id: str) -> _ClientLink:
        if self._nursery is None:
            raise RpcUnavailable("the peer pool is not running")
        peer = self._peer(peer_id)
        if peer.link is not None and peer.link.is_open:
            return peer.link
        self._check_backoff(peer)
        if peer.dialling is None:
            peer.dialling = trio.Event()
            self._nursery.start_soon(self._dial, peer)
        await peer.dialling.wait()
        if peer.link is not None and peer.link.is_open:
            return peer.link
        raise RpcUnavailable(f"{peer_id} unreachable: {peer.backoff.last_error}")

    async def _dial(self, peer: _Peer) -> None:
        stream = None
        try:
            with trio.fail_after(self.connect_timeout_s):
                stream = await trio.open_tcp_stream(*peer.address)
                decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
                handshake = new_handshake(Role.CLIENT, self.node_id, self.cluster, self._secret, peer.peer_id)
                await authenticate(stream, handshake, decoder)
            nursery = self._nursery
            if nursery is None:
                raise trio.ClosedResourceError("the peer pool stopped while dialling")
            decoder.size_bytes_max = self.size_bytes_max
            peer.link = _ClientLink(stream, decoder, peer.peer_id, self.size_bytes_max)
            stream = None  # the link owns it now
            peer.backoff.reset()
            nursery.start_soon(self._run_link, peer, peer.link)
        except (OSError, trio.TooSlowError, HandshakeError, FrameError,
                trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._back_off(peer, describe_error(exc))
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            event, peer.dialling = peer.dialling, None
            assert event is not None
            event.set()

    def _back_off(self, peer: _Peer, reason: str) -> None:
        delay_s = peer.backoff.failed(reason, trio.current_time(), self.backoff_min_s, self.backoff_max_s,
                                      self._rng)
        log.warning("rpc: cannot reach %s at %s:%s: %s (retry in %.2fs)",
                    peer.peer_id, *peer.address, reason, delay_s)

    async def _run_link(self, peer: _Peer, link: _ClientLink) -> None:
        try:
            reason = await link.run()
            log.info("rpc: connection to %s ended: %s", peer.peer_id, reason)
        finally:
            if peer.link is link:
                peer.link = None
            await trio.aclose_forcefully(link.stream)
