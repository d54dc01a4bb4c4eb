"""The trio side of node-to-node RPC: a connection's read and write loops, and the server.

Theory of operation
-------------------
This module only moves bytes; framing is in `frame`, authentication in `handshake`, and what a message
means is the handler's business. A connection (`Link`) is two loops sharing one stream:

- the reader feeds `FrameDecoder` and passes each message to the link's `on_message`;
- the writer drains the `Outbox`: whatever frames the callers queued since the last write go out in one
  `send_all`, so 64 concurrent callers cost a handful of syscalls, not 64.

Both loops do their I/O through a `channel.SocketChannel` on the stream's socket, which waits on trio only
when the kernel has nothing to read or no room to write (see channel.py); the stream itself is used for the
handshake and stays with whoever opened it.

A frame that breaks the protocol (bad bytes, oversize, a frame kind the link does not expect) ends the link
with a logged reason; the end of one link never touches another. `RpcServer` accepts connections, runs the
handshake under a deadline (with a small frame limit until the peer is authenticated), then dispatches each
request to `handler(peer_id, type, body)` in its own task, at most `concurrency_max` at a time per
connection: when all slots are busy the reader stops reading and TCP pushes back on the peer.
Types listed in `inline` (type -> sync `fn(peer_id, body)`, for handlers that never wait, such as a read
of the local store) are answered in the reader's own loop instead: no task, no scheduler pass, and every
answer to the requests of one read goes out in one write, which the reader makes itself when the writer
is idle (`Outbox.stage` and `flush`). An inline handler must be quick: the loop serves nothing else while
it runs. Its errors are answered exactly like a task's.
Types listed in `deferred` (type -> sync `fn(peer_id, body, respond) -> bool`) are for handlers that
wait, but on a callback rather than a task (a replica write waits for its group commit): the reader offers
the request; the handler returns True having taken it, and calls `respond(body, None)` or
`respond(None, error)` exactly once, now or later (from the commit's settling), which queues the answer;
or it returns False, having done nothing, and the request goes the task way. A taken request holds one of
the connection's concurrency slots until answered, so deferred requests are bounded like tasks; with no
slot free the request goes the task way, which waits for one. A handler that raises is answered with its
error.

Unknown types: an unknown *frame kind* (a reply sent to a server, a request sent to a client, a handshake
message after the handshake) closes the connection, as DESIGN §3 says. An unknown *request type* is the
handler's call: it raises `UnknownType` and the caller gets an error reply (`RpcRemoteError` with kind
"unknown_type") over a connection that stays up, so nodes of two versions can still talk during an upgrade.
Any other handler exception also becomes an error reply, never a closed connection.

Connections are per ordered pair: node A's `PeerPool` dials B's `RpcServer`, and B's pool dials A's server.
Each side then owns the request ids on its own connection and no tie-break for simultaneous dials is needed.
"""

import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import trio

from dynamo.rpc import frame
from dynamo.rpc.channel import close_channel, open_channel
from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame
from dynamo.rpc.handshake import NONCE_BYTES, Handshake, HandshakeError, Role

log = logging.getLogger("dynamo.rpc")

SIZE_BYTES_MAX = 16 * 1024 * 1024
HANDSHAKE_FRAME_BYTES_MAX = 4096  # before authentication a peer may not make us buffer more than this
OUTBOX_BYTES_HIGH = 1024 * 1024  # callers wait (casts are dropped) while this much is queued, unsent
KIND_UNKNOWN_TYPE = "unknown_type"
KIND_HANDLER = "handler"
KIND_BAD_REPLY = "bad_reply"

Handler = Callable[[str, str, Any], Awaitable[Any]]
InlineHandler = Callable[[str, Any], Any]  # (peer_id, body) -> reply body, without blocking
Respond = Callable[[Any, "Exception | None"], None]
DeferredHandler = Callable[[str, Any, Respond], bool]  # (peer_id, body, respond) -> taken?


def offer_deferred(handler: DeferredHandler, peer_id: str, type_: str, body: Any, send: Respond) -> bool:
    """Offer one request to a deferred handler. True: taken, and `send(reply, error)` runs exactly once,
    now or later (a second answer raises RuntimeError); a handler that raises, or answers, has taken it.
    False: declined, and `send` never runs. Shared by RpcServer and the simulator's server."""
    answered = False

    def respond(reply: Any, error: Exception | None) -> None:
        nonlocal answered
        if answered:
            raise RuntimeError(f"a {type_!r} request was answered twice")
        answered = True
        send(reply, error)

    try:
        return bool(handler(peer_id, body, respond)) or answered
    except Exception as exc:
        if not answered:
            respond(None, exc)
        return True


class RpcError(Exception):
    """Base of what `PeerPool.call` raises about the remote side."""


class RpcTimeout(RpcError):
    """No reply before the call's deadline (the request may or may not have been carried out)."""


class RpcUnavailable(RpcError):
    """The peer could not be reached, or the connection dropped before the reply came."""


class RpcRemoteError(RpcError):
    """The peer answered with an error reply: `kind` is "unknown_type", "handler" or "bad_reply"."""

    def __init__(self, message: str, kind: str):
        super().__init__(f"{kind}: {message}")
        self.message = message
        self.kind = kind


class UnknownType(Exception):
    """Raised by a handler for a request type it does not serve; the caller gets RpcRemoteError."""


class Outbox:
    """Frames queued by many tasks and written by one writer task, in batches.

    The writer parks on its own task (no Event per wake-up): queueing a frame into an empty outbox
    reschedules it, and whatever else is queued before it runs goes out in the same write.

    A connection's reader that answers requests itself (inline handlers) does better than waking the
    writer for each read: it `stage`s its answers (queued, writer left asleep) and `flush`es them once it
    has handled the whole read, before it waits again. The flush writes them straight to the socket
    (`send_nowait`) when the writer is idle, so every answer to one read goes out in one write with no
    task switch; whatever the kernel does not take at once, or anything queued while the writer is busy,
    is left to the writer, in order. A reader must flush before any wait of its own (it could otherwise
    sit on staged answers); `put` wakes the writer before it waits for room, so staged frames drain."""

    def __init__(self, high_bytes: int = OUTBOX_BYTES_HIGH):
        self._frames: list[bytes] = []
        self._queued_bytes = 0
        self._high_bytes = high_bytes
        self._writer: trio.lowlevel.Task | None = None  # the writer, while it waits for frames
        self._room = trio.lowlevel.ParkingLot()  # callers waiting for the queue to drain below the mark
        self.closed_reason: str | None = None

    @property
    def has_room(self) -> bool:
        """Whether `put_nowait` would queue a frame now."""
        return self.closed_reason is None and self._queued_bytes < self._high_bytes

    async def put(self, data: bytes) -> None:
        """Queue a frame, waiting while the queue is over the high mark. Raises RpcUnavailable if closed."""
        while self._queued_bytes >= self._high_bytes and self.closed_reason is None:
            self._wake_writer()  # staged frames may be what fills the queue: they must go for room to come
            await self._room.park()
        if self.closed_reason is not None:
            raise RpcUnavailable(f"connection closed: {self.closed_reason}")
        self._append(data)

    def push(self, data: bytes) -> bool:
        """Queue a frame unless closed, over the high mark if need be: for answers whose number is
        already bounded elsewhere (the server's concurrency slots). Say whether it was queued."""
        if self.closed_reason is not None:
            return False
        self._append(data)
        return True

    def put_nowait(self, data: bytes) -> bool:
        """Queue a frame unless closed or full; say whether it was queued (for best-effort casts)."""
        if not self.has_room:
            return False
        self._append(data)
        return True

    def stage(self, data: bytes) -> bool:
        """`put_nowait` without waking the writer: the caller will `flush` before it next waits."""
        if not self.has_room:
            return False
        self._append(data, wake=False)
        return True

    def flush(self, channel: Any) -> None:
        """Send what is queued now from the calling task when the writer is idle (see the class docstring);
        otherwise, or for what the kernel did not take, make sure the writer runs."""
        frames = self._frames
        if not frames:
            return
        send_nowait = getattr(channel, "send_nowait", None)
        if self._writer is None or send_nowait is None or self.closed_reason is not None:
            self._wake_writer()  # busy (it takes the frames after its current write), closing, or no socket
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            sent = send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            sent = 0  # the writer meets the same error and closes the link
        if sent == len(data):
            self._frames, self._queued_bytes = [], 0
            if self._room:
                self._room.unpark_all()
            return
        rest = data[sent:]
        self._frames, self._queued_bytes = [rest], len(rest)
        self._wake_writer()

    def _append(self, data: bytes, wake: bool = True) -> None:
        self._frames.append(data)
        self._queued_bytes += len(data)
        if wake:
            self._wake_writer()

    def _wake_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            trio.lowlevel.reschedule(writer)

    def _abort_wait(self, _raise_cancel) -> trio.lowlevel.Abort:
        self._writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self._room.unpark_all()
        self._wake_writer()

    async def run(self, stream: trio.abc.SendStream) -> None:
        """The writer: until closed, send everything queued so far in one write."""
        while self.closed_reason is None:
            if not self._frames:
                self._writer = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
                continue
            batch, self._frames, self._queued_bytes = self._frames, [], 0
            if self._room:  # unpark_all costs a microsecond even with nobody parked: this runs per write
                self._room.unpark_all()
            await stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))


async def authenticate(stream: trio.abc.Stream, handshake: Handshake, decoder: FrameDecoder) -> str:
    """Run `handshake` over `stream`; return the authenticated peer id. Raises HandshakeError, FrameError
    or trio's stream errors. Frames queued behind the handshake stay buffered in `decoder`."""
    await stream.send_all(encode_frame(handshake.hello()))
    while not handshake.done:
        messages = decoder.feed(b"", frames_max=1)
        if not messages:
            data = await stream.receive_some()
            if not data:
                raise HandshakeError("connection closed during the handshake")
            messages = decoder.feed(data, frames_max=1)
        for msg in messages:
            replies = handshake.receive(msg)
            if replies:
                await stream.send_all(b"".join(encode_frame(m) for m in replies))
    assert handshake.peer_id is not None
    return handshake.peer_id


def new_handshake(role: Role, node_id: str, cluster: str, secret, expected_peer_id: str | None = None):
    return Handshake(role, node_id, cluster, secret, os.urandom(NONCE_BYTES), expected_peer_id)


class Link:
    """One authenticated connection: reader and writer loops; subclasses say what a message means."""

    def __init__(self, stream: trio.abc.Stream, decoder: FrameDecoder, peer_id: str):
        self.stream = stream
        self.decoder = decoder
        self.peer_id = peer_id
        self.outbox = Outbox()
        self.channel: Any = None  # the link's own I/O channel on the stream, while it runs
        self._cancel_scope: trio.CancelScope | None = None
        self._close_requested = False

    @property
    def is_open(self) -> bool:
        return self.outbox.closed_reason is None

    def close(self) -> None:
        self._close_requested = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def run(self) -> str:
        """Serve the link until it ends; return why it ended. Never raises (but for cancellation)."""
        reason = "closed locally"
        try:
            self.channel = open_channel(self.stream)
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                if self._close_requested:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._write, nursery.cancel_scope)
                reason = await self._read(nursery)
                nursery.cancel_scope.cancel()
        except OSError as exc:  # no descriptor for the channel: this link cannot run, the others go on
            reason = f"cannot open the connection's channel: {exc!r}"
        finally:
            close_channel(self.channel)
            reason = self.outbox.closed_reason or reason
            self.outbox.close(reason)
            self.on_close(reason)
        return reason

    async def _write(self, cancel_scope: trio.CancelScope) -> None:
        try:
            await self.outbox.run(self.channel)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.outbox.close(f"send failed: {exc!r}")
        cancel_scope.cancel()

    async def _read(self, nursery: trio.Nursery) -> str:
        try:
            messages = self.decoder.feed(b"")  # requests that were pipelined right behind the handshake
            while True:
                for msg in messages:
                    await self.on_message(msg, nursery)
                self.outbox.flush(self.channel)  # the answers staged for this read, in one write
                data = await self.channel.receive_some()
                if not data:
                    return "closed by peer"
                messages = self.decoder.feed(data)
        except FrameError as exc:
            return f"protocol error: {exc.reason}"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return f"receive failed: {exc!r}"

    async def on_message(self, msg: dict, nursery: trio.Nursery) -> None:
        raise NotImplementedError

    def on_close(self, reason: str) -> None:
        pass


@dataclasses.dataclass
class ServerStats:
    connections_accepted: int = 0
    connections_open: int = 0
    handshakes_failed: int = 0
    protocol_errors: int = 0
    requests: int = 0
    handler_errors: int = 0


class _ServerLink(Link):
    def __init__(self, stream, decoder, peer_id: str, server: "RpcServer"):
        super().__init__(stream, decoder, peer_id)
        self._server = server
        self._slots = trio.Semaphore(server.concurrency_max)

    async def on_message(self, msg: dict, nursery: trio.Nursery) -> None:
        type_ = msg["t"]
        if type_ in (frame.REPLY, frame.ERROR, "hello", "proof"):
            raise FrameError(f"unexpected {type_!r} frame on a server connection")
        inline = self._server.inline.get(type_)
        if inline is not None:
            answer = self._answer_inline(msg, inline)
            if answer is not None and not self.outbox.stage(answer):  # the reader flushes it (Link._read)
                await self.outbox.put(answer)  # over the high mark: stop reading until it drains
            return
        deferred = self._server.deferred.get(type_)
        if deferred is not None and self._offer_deferred(msg, deferred):
            return
        try:
            self._slots.acquire_nowait()  # the common case: no scheduler round trip per request
        except trio.WouldBlock:
            self.outbox.flush(self.channel)  # nothing staged may wait behind the wait for a slot
            await self._slots.acquire()  # all slots busy: stop reading until one frees
        nursery.start_soon(self._dispatch, msg)

    async def _dispatch(self, msg: dict) -> None:
        try:
            answer = await self._answer(msg)
            if answer is not None:
                await self.outbox.put(answer)
        except RpcUnavailable:
            pass  # the connection closed under us: nobody is left to read the answer
        finally:
            self._slots.release()

    async def _answer(self, msg: dict) -> bytes | None:
        server, request_id, type_ = self._server, msg["id"], msg["t"]
        server.stats.requests += 1
        try:
            body = await server.handler(self.peer_id, type_, msg["b"])
        except UnknownType as exc:
            answer = frame.error(request_id, str(exc) or type_, KIND_UNKNOWN_TYPE)
        except Exception as exc:
            answer = self._handler_error(type_, request_id, exc)
        else:
            answer = frame.reply(request_id, body)
        return self._encode_answer(type_, request_id, answer)

    def _answer_inline(self, msg: dict, inline: InlineHandler) -> bytes | None:
        """`_answer` for a type served inline: in the reader's loop, no task, no await."""
        server, request_id, type_ = self._server, msg["id"], msg["t"]
        server.stats.requests += 1
        try:
            answer = frame.reply(request_id, inline(self.peer_id, msg["b"]))
        except Exception as exc:
            answer = self._handler_error(type_, request_id, exc)
        return self._encode_answer(type_, request_id, answer)

    def _offer_deferred(self, msg: dict, handler: DeferredHandler) -> bool:
        """Offer a request to its deferred handler (see the module docstring); True if it was taken."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            return False  # every slot busy: the task way waits for one
        request_id, type_ = msg["id"], msg["t"]

        def send(body: Any, error: Exception | None) -> None:
            self._slots.release()
            answer = frame.reply(request_id, body) if error is None else \
                self._handler_error(type_, request_id, error)
            data = self._encode_answer(type_, request_id, answer)
            if data is not None:
                self.outbox.push(data)  # dropped if the connection closed meanwhile: nobody is left to read it

        taken = offer_deferred(handler, self.peer_id, type_, msg["b"], send)
        if taken:
            self._server.stats.requests += 1
        else:
            self._slots.release()
        return taken

    def _handler_error(self, type_: str, request_id: int, exc: Exception) -> dict:
        self._server.stats.handler_errors += 1
        log.debug("handler for %r from %s failed", type_, self.peer_id, exc_info=True)
        return frame.error(request_id, f"{type(exc).__name__}: {exc}", KIND_HANDLER)

    def _encode_answer(self, type_: str, request_id: int, answer: dict) -> bytes | None:
        server = self._server
        if request_id == frame.ONE_WAY_ID:
            if answer["t"] == frame.ERROR:
                log.warning("one-way %r from %s failed: %s", type_, self.peer_id, answer["e"])
            return None
        try:
            return encode_frame(answer, server.size_bytes_max)
        except (FrameError, cbor2.CBOREncodeError) as exc:
            log.warning("reply to %r from %s not sendable: %s", type_, self.peer_id, exc)
            return encode_frame(frame.error(request_id, f"reply not sendable: {exc}", KIND_BAD_REPLY))


class RpcServer:
    """Accepts peer connections, authenticates them and serves their requests with `handler`."""

    def __init__(self, node_id: str, cluster: str, secret, handler: Handler,
                 size_bytes_max: int = SIZE_BYTES_MAX, *, concurrency_max: int = 64,
                 handshake_timeout_s: float = 5.0, inline: dict[str, InlineHandler] | None = None,
                 deferred: dict[str, DeferredHandler] | None = None):
        new_handshake(Role.SERVER, node_id, cluster, secret)  # validates the identity arguments now
        if concurrency_max < 1 or size_bytes_max < HANDSHAKE_FRAME_BYTES_MAX or handshake_timeout_s <= 0:
            raise ValueError("concurrency_max, size_bytes_max and handshake_timeout_s are out of range")
        self.node_id, self.cluster, self._secret = node_id, cluster, secret
        self.handler = handler
        self.inline = dict(inline or {})
        self.deferred = dict(deferred or {})
        self.size_bytes_max = size_bytes_max
        self.concurrency_max = concurrency_max
        self.handshake_timeout_s = handshake_timeout_s
        self.stats = ServerStats()

    async def serve(self, listeners=None, *, host: str = "127.0.0.1", port: int = 0,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve forever on `listeners` (or new TCP listeners on host:port); `task_status.started` gets
        the listeners, so `await nursery.start(server.serve)` tells the caller the bound port."""
        if listeners is None:
            listeners = await trio.open_tcp_listeners(port, host=host)
        await trio.serve_listeners(self._serve_connection, listeners, task_status=task_status)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self.stats.connections_accepted += 1
        address = _address_of(stream)
        try:
            peer_id, decoder = await self._authenticate(stream, address)
            if peer_id is not None:
                await self._serve_link(_ServerLink(stream, decoder, peer_id, self), address)
        except Exception:  # a bug in one connection must not take the listener (and every peer) down
            log.exception("rpc: connection from %s failed", address)
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_link(self, link: "_ServerLink", address: str) -> None:
        self.stats.connections_open += 1
        try:
            reason = await link.run()
        finally:
            self.stats.connections_open -= 1
        if reason.startswith("protocol error"):
            self.stats.protocol_errors += 1
            log.warning("rpc: dropped %s (%s): %s", link.peer_id, address, reason)
        else:
            log.info("rpc: connection from %s (%s) ended: %s", link.peer_id, address, reason)

    async def _authenticate(self, stream, address: str) -> tuple[str | None, FrameDecoder]:
        decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
        handshake = new_handshake(Role.SERVER, self.node_id, self.cluster, self._secret)
        try:
            with trio.fail_after(self.handshake_timeout_s):
                peer_id = await authenticate(stream, handshake, decoder)
        except (HandshakeError, FrameError, trio.TooSlowError,
                trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.stats.handshakes_failed += 1
            log.warning("rpc: dropped unauthenticated peer %s: %s", address, describe_error(exc))
            return None, decoder
        decoder.size_bytes_max = self.size_bytes_max
        return peer_id, decoder


def _address_of(stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError, ValueError):
        return "?"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out connecting or authenticating"
    if isinstance(exc, (HandshakeError, FrameError)):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"
