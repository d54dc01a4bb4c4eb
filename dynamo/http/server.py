"""The HTTP/1.1 server: a thin trio driver around h11, which does the protocol.

Theory of operation. One trio task per connection runs a loop: pull h11 events until a whole request
(head and body) is in, call `await app(request)`, send the response, start the next cycle. h11 parses,
frames bodies and decides keep-alive; this module only moves bytes and applies limits. A connection
serves one request at a time, so pipelined requests are answered in order (h11 keeps the bytes of the
next request buffered until the current cycle ends). No task is spawned per request.

Limits, each answered without disturbing any other connection:
- header block over `header_bytes_max`: 431, close (h11's max_incomplete_event_size bounds a head
  still arriving; a complete one is measured once parsed).
- body over `body_bytes_max` (declared by Content-Length or reached while reading a chunked body):
  413, close; the app never sees the request.
- bytes that are not HTTP/1.1 (h11 RemoteProtocolError): 400 plain text, close.
- more than `inflight_max` requests inside the app across the server: 503 with Retry-After: 1, at once
  (no queue), and the connection stays open.
- the app raises: 500 "internal error", traceback logged here, never sent.
- a read or write waiting for `idle_timeout_s` (plus up to a quarter of it, at most a second): the
  connection is closed by a sweep over all connections (`reap_idle_connections`). While the app runs
  a connection is never idle; the app owns its timeouts (504 in DESIGN §3).
After an error response the connection lingers: it shuts down its write side and drains what the
client still sends for up to `linger_s`, so the client reads the error instead of a reset.

Every response carries Content-Length (except 1xx/204/304, which have no body, and a streamed body,
`Response.stream`, which goes out chunked as the app writes it), Server and Date.
A HEAD response has the headers of the GET and no body. `Expect: 100-continue` gets its
100 Continue just before the body is read, and never when the request is refused from its head.
Stopping: cancel the scope around `serve`; every connection task is cancelled and its socket closed.

Reads and writes of a connection go through `dynamo.rpc.channel` (the stream's socket, waiting on trio only
when the kernel makes it wait): a keep-alive request then costs its task two scheduler passes (its bytes
arrive; the app's answer is ready), not four. So that a client pipelining requests the app answers without
waiting cannot hold the loop, a request already buffered when the previous one ends starts with a
checkpoint.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http
import logging
import time
from typing import Awaitable, Callable, Sequence

import h11
import trio

from dynamo.http.message import BodyWriter, Headers, Request, Response, error_response, parse_query
from dynamo.rpc.channel import close_channel, open_channel

log = logging.getLogger(__name__)

SERVER_NAME = b"dynamo/0.1"
App = Callable[[Request], Awaitable[Response]]

_REASONS = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
_INTERNAL_ERROR = error_response(500, "internal error")
_OVERLOADED = error_response(503, "overloaded, retry later", headers=(("Retry-After", "1"),))


@dataclasses.dataclass(frozen=True)
class Limits:
    body_bytes_max: int = 8 * 1024 * 1024 + 64 * 1024  # 8 MiB of value plus slack for the rest
    header_bytes_max: int = 64 * 1024
    idle_timeout_s: float = 60.0
    inflight_max: int = 512
    receive_bytes_max: int = 64 * 1024  # per read from the socket
    linger_s: float = 1.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be > 0, got {getattr(self, field.name)!r}")


class HttpServer:
    """Serves `app` (async Request -> Response) over HTTP/1.1 with keep-alive."""

    def __init__(self, app: App, limits: Limits = Limits()):
        self.app = app
        self.limits = limits
        self.inflight = 0  # requests currently inside the app, across all connections
        self._date_second = -1
        self._date = b""
        self._connections: set[_Connection] = set()

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port (port 0 picks one) and serve until cancelled; started() gets the listeners."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(self, listeners: Sequence[trio.abc.Listener], *,
                              task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.reap_idle_connections)
            started = await nursery.start(trio.serve_listeners, self.serve_connection, list(listeners))
            task_status.started(started)

    async def serve_connection(self, stream: trio.abc.HalfCloseableStream) -> None:
        """Serve one connection until it closes; never raises for anything the peer does.
        Idle connections are closed by `reap_idle_connections`, which serve_listeners runs."""
        connection = _Connection(self, stream)
        self._connections.add(connection)
        try:
            await connection.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away; nothing to answer
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._connections.discard(connection)
            await trio.aclose_forcefully(stream)

    async def reap_idle_connections(self) -> None:
        """Every quarter of the idle timeout (at most a second), cancel each connection that has
        started no read or write since idle_timeout_s ago and is not inside the app.

        One sweep instead of a deadline per connection: moving a trio deadline on every read and
        write cost more than a tenth of a trivial request.
        """
        idle_timeout_s = self.limits.idle_timeout_s
        while True:
            await trio.sleep(min(1.0, idle_timeout_s / 4))
            now_s = trio.current_time()
            for connection in list(self._connections):
                if connection.busy or connection.activity != connection.seen_activity:
                    connection.seen_activity = connection.activity
                    connection.seen_at_s = now_s
                elif now_s - connection.seen_at_s >= idle_timeout_s:
                    connection.scope.cancel()

    def date_header(self) -> bytes:
        """The Date header value, formatted at most once a second."""
        now_s = int(time.time())
        if now_s != self._date_second:
            self._date_second = now_s
            self._date = email.utils.formatdate(now_s, usegmt=True).encode("ascii")
        return self._date


class _Connection:
    """The per-connection loop. Holds the h11 state, and what the idle reaper looks at: a count of
    reads and writes started, whether the app is running, and the scope to cancel."""

    __slots__ = ("server", "stream", "channel", "conn", "scope", "method", "limits", "activity", "busy",
                 "seen_activity", "seen_at_s")

    def __init__(self, server: HttpServer, stream: trio.abc.HalfCloseableStream):
        self.server = server
        self.limits = server.limits
        self.stream = stream
        self.channel = None  # the I/O channel on the stream, while `run` runs
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.header_bytes_max)
        self.scope = trio.CancelScope()
        self.method = b""
        self.activity = 0  # bumped before every read and write
        self.busy = False  # inside the app: never idle
        self.seen_activity = -1
        self.seen_at_s = trio.current_time()

    async def run(self) -> None:
        try:
            self.channel = open_channel(self.stream)
        except OSError as exc:  # no descriptor to spare: drop this connection, serve the others
            log.warning("HTTP connection dropped: %r", exc)
            return
        try:
            with self.scope:  # the idle reaper cancels it; the connection then just ends
                while True:
                    if self.conn.trailing_data[0]:
                        await trio.lowlevel.checkpoint()  # a pipelined request: let the others run first
                    request = await self._receive_request()
                    if request is None:
                        return
                    response = await self._call_app(request)
                    if not await self._send_response(response):
                        return
        finally:
            close_channel(self.channel)

    async def _next_event(self):
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.activity += 1
            # b"" means the peer closed; h11 turns that into ConnectionClosed or a protocol error.
            conn.receive_data(await self.channel.receive_some(self.limits.receive_bytes_max))

    async def _receive_request(self) -> Request | None:
        """The next complete request, or None when the connection is to end (error already sent)."""
        body_bytes_max = self.limits.body_bytes_max
        self.method = b""
        try:
            event = await self._next_event()
            if type(event) is h11.ConnectionClosed:
                return None
            assert type(event) is h11.Request, event
            self.method = event.method
            raw_headers = event.headers.raw_items()
            if _head_size_bytes(event, raw_headers) > self.limits.header_bytes_max:
                # h11 only bounds a head still incomplete in its buffer; one read can bring a whole one.
                await self._refuse(431, "request header fields too large")
                return None
            headers = Headers.from_wire(raw_headers)
            declared = headers.get("content-length")
            if declared is not None and int(declared) > body_bytes_max:  # h11 checked it is digits
                await self._refuse(413, f"request body of {declared} bytes is over the limit of "
                                        f"{body_bytes_max}")
                return None
            first = self.conn.next_event()
            if type(first) is h11.EndOfMessage:
                body = b""  # no body: the common GET, answered without another await
            else:
                body = await self._read_body(first, body_bytes_max)
            if body is None:
                await self._refuse(413, f"request body is over the limit of {body_bytes_max} bytes")
                return None
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint, f"bad request: {exc}")
            return None
        return _make_request(event, headers, body)

    async def _read_body(self, event, body_bytes_max: int) -> bytes | None:
        """The body, starting from the event after the head (NEED_DATA or a first Data); None when
        it grows over the limit."""
        if self.conn.they_are_waiting_for_100_continue:
            await self._send(self.conn.send(_CONTINUE))
        chunks = []
        size_bytes = 0
        while True:
            if type(event) is h11.EndOfMessage:
                return b"".join(chunks)
            if type(event) is h11.Data:
                size_bytes += len(event.data)
                if size_bytes > body_bytes_max:
                    return None
                chunks.append(event.data)
            event = await self._next_event()

    async def _call_app(self, request: Request) -> Response:
        server = self.server
        if server.inflight >= self.limits.inflight_max:
            return _OVERLOADED
        server.inflight += 1
        self.busy = True  # the app owns its own timeouts
        try:
            response = await server.app(request)
            if not isinstance(response, Response):
                raise TypeError(f"app returned {type(response).__name__}, not Response")
        except Exception:
            log.exception("HTTP app failed on %s %s", request.method, request.path)
            response = _INTERNAL_ERROR
        finally:
            server.inflight -= 1
            self.busy = False
        return response

    async def _send_response(self, response: Response) -> bool:
        """Send one response; True when the connection may serve another request."""
        conn = self.conn
        try:
            event, body, stream = self._response_event(response)
        except Exception as exc:  # h11.LocalProtocolError, a non-str header, a bad status, ...
            log.error("HTTP app returned an invalid response (%r): %s", response.status, exc)
            event, body, stream = self._response_event(_INTERNAL_ERROR)
        data = conn.send(event)
        if stream is not None:
            await self._send(data)
            if not await self._stream_body(stream):
                return False
            data = b""
        elif body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await self._send(data)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False  # MUST_CLOSE: "Connection: close", HTTP/1.0, or the client half-closed
        conn.start_next_cycle()
        return True

    async def _stream_body(self, stream: BodyWriter) -> bool:
        """Run the app's body writer, sending each chunk it writes; False if it failed (the connection
        must then end: the body is cut short, without the closing chunk). The writer counts as the app
        running, except while a chunk waits on the client: a client that stops reading is idle."""
        conn = self.conn
        server = self.server
        peer_gone = False

        async def write(chunk: bytes) -> None:
            nonlocal peer_gone
            if chunk:
                data = conn.send(h11.Data(data=chunk))
                self.busy = False
                try:
                    await self._send(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    peer_gone = True
                    raise
                finally:
                    self.busy = True

        server.inflight += 1
        self.busy = True
        try:
            await stream(write)
            return True
        except Exception:  # the writer's own nursery may wrap a failed write in an ExceptionGroup
            if not peer_gone:
                log.exception("HTTP app failed while streaming a %s response", self.method.decode("ascii"))
            return False
        finally:
            server.inflight -= 1
            self.busy = False

    def _response_event(self, response: Response) -> tuple[h11.Response, bytes, BodyWriter | None]:
        """The h11 event for a response (h11 validates the headers here), the body to send, and the
        body writer when the body is streamed."""
        status = response.status
        body = response.body
        stream = response.stream
        headers = [(b"Server", SERVER_NAME), (b"Date", self.server.date_header())]
        given_length = None
        for name, value in response.headers:
            lower = name.lower()
            if lower in _FRAMING_HEADERS:
                if lower == "content-length":
                    given_length = value  # honoured for HEAD only, where the app may skip the body
                continue
            if lower == "server" or lower == "date":
                headers = [pair for pair in headers if pair[0].lower() != lower.encode("ascii")]
            headers.append((name.encode("ascii"), value.encode("latin-1")))
        if status in _NO_BODY_STATUSES:
            body, stream = b"", None
        elif self.method == b"HEAD" and given_length is not None:
            headers.append((b"Content-Length", given_length.encode("ascii")))
        elif stream is None:
            headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        # else: no length; h11 frames the body chunked for HTTP/1.1, or by closing for HTTP/1.0
        if self.method == b"HEAD":
            body, stream = b"", None
        event = h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
        return event, body, stream

    async def _send(self, data: bytes) -> None:
        self.activity += 1
        await self.channel.send_all(data)

    async def _refuse(self, status: int, message: str) -> None:
        """Send a plain-text error that ends the connection, then linger so the client can read it."""
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # mid-response already: all we can do is close
        # The message may quote the offending bytes (h11 does): keep the line short.
        response = error_response(status, message[:200], headers=(("Connection", "close"),))
        try:
            event, body, _ = self._response_event(response)
            data = conn.send(event)
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await self._send(data)
        await self._linger()

    async def _linger(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None:
            return
        await send_eof()
        with trio.move_on_after(self.limits.linger_s):
            while await self.stream.receive_some(self.limits.receive_bytes_max):
                pass


def _head_size_bytes(event: h11.Request, raw_headers: list[tuple[bytes, bytes]]) -> int:
    size_bytes = len(event.method) + len(event.target) + 12
    for name, value in raw_headers:
        size_bytes += len(name) + len(value) + 4
    return size_bytes


def _make_request(event: h11.Request, headers: Headers, body: bytes) -> Request:
    target = event.target.decode("latin-1")
    if not target.startswith("/"):
        target = _origin_form(target)
    path, _, query_string = target.partition("?")
    return Request(method=event.method.decode("ascii"), path=path, query_string=query_string,
                   query=parse_query(query_string), headers=headers, body=body,
                   http_version=event.http_version.decode("ascii"))


def _origin_form(target: str) -> str:
    """Reduce an absolute-form target ("http://host/p?q") or "*" to its path and query."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return target
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
