"""The HTTP/1.1 server: a thin trio driver around llhttp (through httptools), which parses requests.

Theory of operation. One trio task per connection runs a loop: read bytes and feed them to the parser
until a whole request (head and body) is in, call `await app(request)`, send the response, start over.
llhttp (Node.js's parser, in C) reads the request line, headers, Content-Length and chunked bodies and
says whether the connection may be kept; this module collects what it reports into `Request`s, applies
the limits, and writes responses itself (a status line, headers and a framed body are a few lines of
code). A connection serves one request at a time, so pipelined requests are answered in order: requests
that one read brought in whole wait in a queue, and the socket is read again only when the queue is
empty, which bounds the queue by what one read (`receive_bytes_max`) can hold. No task is spawned per
request.

Why llhttp and not h11 (DESIGN §3 named h11): h11 spent 42 us of a core per request cycle on this
machine (26 to read a PUT, 15 to write its 204), httptools 1-2 us; in a node under the bench's put load
h11 was 13% of the CPU, the largest single share. On a trivial app (`tools.httpbench`) this server went
from 86 to 20 us of CPU per request. llhttp is strict by default: it refuses what h11 refused that
matters (bad request lines, header names and values with control bytes, Content-Length with
Transfer-Encoding, bad chunk sizes). It accepts only registered methods (h11 took any token) and does
not require Host.

Limits, each answered without disturbing any other connection:
- header block over `header_bytes_max`: 431, close. A complete head is measured from what the parser
  reports; one still arriving by the bytes read since the parser last made progress (a whole head, a
  body byte, a whole request), which never counts more than the head's own bytes, so an endless header
  line is cut off after at most one read more. Trailers of a chunked body count against the same limit.
- body over `body_bytes_max` (declared by Content-Length or reached while reading a chunked body):
  413, close; the app never sees the request.
- bytes that are not HTTP/1.x (llhttp refuses them): 400 plain text, close; an HTTP version other than
  1.0 and 1.1 (llhttp reads 0.9 and 2.0 request lines): 505, close.
- more than `inflight_max` requests inside the app across the server: 503 with Retry-After: 1, at once
  (no queue), and the connection stays open.
- the app raises: 500 "internal error", traceback logged here, never sent. A response whose headers
  could not go on the wire (a name that is not a token, a value with a line break, not str): 500 too.
- a read or write waiting for `idle_timeout_s` (plus up to a quarter of it, at most a second): the
  connection is closed by a sweep over all connections (`reap_idle_connections`). While the app runs
  a connection is never idle; the app owns its timeouts (504 in DESIGN §3).
After an error response the connection lingers: it shuts down its write side and drains what the
client still sends for up to `linger_s`, so the client reads the error instead of a reset.

Every response carries Content-Length (except 1xx/204/304, which have no body, and a streamed body,
`Response.stream`, which goes out chunked as the app writes it, or for HTTP/1.0 until the connection
closes), Server and Date. A HEAD response has the headers of the GET and no body. `Expect:
100-continue` gets its 100 Continue just before the body is read, and never when the request is refused
from its head. HTTP/1.0 gets one response and the connection closes, as does a request with
`Connection: close` or an Upgrade (not taken up: it is answered as a plain request); a response that ends
the connection says `Connection: close`. Stopping: cancel the scope around `serve`; every connection task
is cancelled and its socket closed.

Reads and writes of a connection go through `dynamo.rpc.channel` (the stream's socket, waiting on trio only
when the kernel makes it wait): a keep-alive request then costs its task two scheduler passes (its bytes
arrive; the app's answer is ready), not four. So that a client pipelining requests the app answers without
waiting cannot hold the loop, a request already queued when the previous one ends starts with a
checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import http
import logging
import time
from typing import Awaitable, Callable, Sequence

import httptools
import trio

from dynamo.http.header import check_header_name, check_header_value
from dynamo.http.message import BodyWriter, Headers, Request, Response, error_response, parse_query
from dynamo.rpc.channel import close_channel, open_channel

log = logging.getLogger(__name__)

SERVER_NAME = b"dynamo/0.1"
App = Callable[[Request], Awaitable[Response]]

_REASONS = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
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


class _Refused(Exception):
    """Raised by a parser callback to stop parsing: the connection answers `status` and ends."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Connection:
    """The per-connection loop, and the parser's callbacks (the `on_*` methods, which httptools calls
    while `feed_data` runs). Holds what the idle reaper looks at: a count of reads and writes started,
    whether the app is running, and the scope to cancel."""

    __slots__ = ("server", "stream", "channel", "parser", "scope", "method", "limits", "activity", "busy",
                 "seen_activity", "seen_at_s", "ready", "refusal", "closing", "in_message", "progress",
                 "stalled_bytes", "request_method", "target", "raw_headers", "head_bytes", "head_done",
                 "expect_continue", "body", "body_bytes")

    def __init__(self, server: HttpServer, stream: trio.abc.HalfCloseableStream):
        self.server = server
        self.limits = server.limits
        self.stream = stream
        self.channel = None  # the I/O channel on the stream, while `run` runs
        self.parser = httptools.HttpRequestParser(self)
        self.scope = trio.CancelScope()
        self.method = ""  # of the request being answered
        self.activity = 0  # bumped before every read and write
        self.busy = False  # inside the app: never idle
        self.seen_activity = -1
        self.seen_at_s = trio.current_time()
        self.ready: collections.deque[tuple[Request, bool]] = collections.deque()  # (request, keep alive)
        self.refusal: _Refused | None = None  # answered once the ready requests are; then the end
        self.closing = False  # read nothing more: the last ready request asked for an Upgrade
        self.in_message = False  # the parser is inside a request: begun, not complete
        self.progress = False  # since the last read: a head completed, a body byte, a whole request
        self.stalled_bytes = 0  # read since the last read that made progress
        self._start_message()

    def _start_message(self) -> None:
        self.request_method = b""
        self.target = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 12  # the request line's spaces, version and CRLF, and the blank line
        self.head_done = False
        self.expect_continue = False
        self.body: list[bytes] = []
        self.body_bytes = 0

    # -- the parser's callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._start_message()
        self.in_message = True

    def on_url(self, part: bytes) -> None:  # may come in pieces
        self.target += part
        self._count_head(len(part))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        if not self.head_done:  # else a trailer of a chunked body: counted, not kept
            self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.progress = self.head_done = True
        self.request_method = parser.get_method()
        self._count_head(len(self.request_method))
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refused(505, f"HTTP/{version} is not supported")
        declared = None
        expect = False
        for name, value in self.raw_headers:
            if len(name) == 14 and name.lower() == b"content-length":
                declared = int(value)  # llhttp checked that it is digits, and that there is one
            elif len(name) == 6 and name.lower() == b"expect":
                expect = value.strip().lower() == b"100-continue"
        body_bytes_max = self.limits.body_bytes_max
        if declared is not None and declared > body_bytes_max:
            raise _Refused(413, f"request body of {declared} bytes is over the limit of {body_bytes_max}")
        self.expect_continue = expect and version == "1.1"

    def on_body(self, data: bytes) -> None:
        self.progress = True
        self.body_bytes += len(data)
        if self.body_bytes > self.limits.body_bytes_max:
            raise _Refused(413, f"request body is over the limit of {self.limits.body_bytes_max} bytes")
        self.body.append(data)

    def on_message_complete(self) -> None:
        parser = self.parser
        self.in_message = False
        self.progress = True
        version = parser.get_http_version()
        keep_alive = version == "1.1" and parser.should_keep_alive()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = _make_request(self.request_method, self.target, Headers.from_wire(self.raw_headers), body,
                                version)
        self.ready.append((request, keep_alive))

    def _count_head(self, size_bytes: int) -> None:
        self.head_bytes += size_bytes
        if self.head_bytes > self.limits.header_bytes_max:
            raise _Refused(431, "request header fields too large")

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.channel = open_channel(self.stream)
        except OSError as exc:  # no descriptor to spare: drop this connection, serve the others
            log.warning("HTTP connection dropped: %r", exc)
            return
        try:
            with self.scope:  # the idle reaper cancels it; the connection then just ends
                ready = self.ready
                while True:
                    if ready:
                        await trio.lowlevel.checkpoint()  # a pipelined request: let the others run first
                    elif not await self._receive():
                        return
                    request, keep_alive = ready.popleft()
                    if self.closing and not ready:
                        keep_alive = False
                    self.method = request.method
                    response = await self._call_app(request)
                    if not await self._send_response(response, keep_alive, request.http_version):
                        return
        finally:
            close_channel(self.channel)

    async def _receive(self) -> bool:
        """Read and parse until a request is ready; False when the connection is to end (an error
        response, if one is due, already sent)."""
        while not self.ready:
            if self.refusal is not None:
                await self._refuse(self.refusal.status, str(self.refusal))
                return False
            if self.closing:
                return False
            if self.expect_continue and not self.body_bytes:
                self.expect_continue = False
                await self._send(_CONTINUE)
            self.activity += 1
            data = await self.channel.receive_some(self.limits.receive_bytes_max)
            if not data:
                if self.in_message:
                    await self._refuse(400, "bad request: the connection closed in the middle of a request")
                return False
            self._feed(data)
        return True

    def _feed(self, data: bytes) -> None:
        self.progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # what follows the Upgrade request is not HTTP: read no further
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Refused):
                log.error("HTTP request parsing failed", exc_info=cause)
                cause = _Refused(500, "internal error")
            self.refusal = cause
        except httptools.HttpParserError as exc:
            self.refusal = _Refused(400, f"bad request: {exc}")
        if self.progress:
            self.stalled_bytes = 0
        else:  # a head (or trailers) still arriving: all of it is held in the parser, so bound it
            self.stalled_bytes += len(data)
            if self.stalled_bytes > self.limits.header_bytes_max and self.refusal is None:
                self.refusal = _Refused(431, "request header fields too large")

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

    async def _send_response(self, response: Response, keep_alive: bool, http_version: str) -> bool:
        """Send one response; True when the connection may serve another request."""
        try:
            head, body, stream = self._response_head(response, keep_alive, http_version)
        except Exception as exc:  # a header that is not a token or not a value, a bad status, ...
            log.error("HTTP app returned an invalid response (%r): %s", response.status, exc)
            head, body, stream = self._response_head(_INTERNAL_ERROR, keep_alive, http_version)
        if stream is not None:
            await self._send(head)
            return await self._stream_body(stream, chunked=http_version == "1.1") and keep_alive
        await self._send(head + body if body else head)
        return keep_alive

    async def _stream_body(self, stream: BodyWriter, chunked: bool) -> bool:
        """Run the app's body writer, sending each chunk it writes; False if it failed (the connection
        must then end: the body is cut short, without the closing chunk). The writer counts as the app
        running, except while a chunk waits on the client: a client that stops reading is idle."""
        server = self.server
        peer_gone = False

        async def write(chunk: bytes) -> None:
            nonlocal peer_gone
            if chunk:
                data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else bytes(chunk)
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
        except Exception:  # the writer's own nursery may wrap a failed write in an ExceptionGroup
            if not peer_gone:
                log.exception("HTTP app failed while streaming a %s response", self.method)
            return False
        finally:
            server.inflight -= 1
            self.busy = False
        if chunked:
            await self._send(_LAST_CHUNK)
        return True

    def _response_head(self, response: Response, keep_alive: bool,
                       http_version: str) -> tuple[bytes, bytes, BodyWriter | None]:
        """The status line and headers of a response (app headers checked here), the body to send after
        them, and the body writer when the body is streamed."""
        status = response.status
        if type(status) is not int or not 200 <= status <= 999:
            raise ValueError(f"status {status!r} is not a final status code")
        body = response.body
        if type(body) is not bytes:
            raise TypeError(f"body is a {type(body).__name__}, not bytes")
        stream = response.stream
        server_name, date = SERVER_NAME, self.server.date_header()
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        given_length = None
        for name, value in response.headers:
            lower = check_header_name(name, "header name").lower()
            value = check_header_value(value, name)  # names the header only if it fails
            if lower in _FRAMING_HEADERS:
                if lower == "content-length":
                    if not (value.isascii() and value.isdigit()):
                        raise ValueError(f"Content-Length {value!r} is not a number of bytes")
                    given_length = value  # honoured for HEAD only, where the app may skip the body
                continue
            if lower == "server":
                server_name = value.encode("latin-1")
            elif lower == "date":
                date = value.encode("latin-1")
            else:
                lines.append(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("latin-1")))
        lines.append(b"Server: %s\r\nDate: %s\r\n" % (server_name, date))
        if status in _NO_BODY_STATUSES:
            body, stream = b"", None
        elif self.method == "HEAD" and given_length is not None:
            lines.append(b"Content-Length: %s\r\n" % given_length.encode("ascii"))
        elif stream is None:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        elif self.method != "HEAD" and http_version == "1.1":
            lines.append(b"Transfer-Encoding: chunked\r\n")
        # else a stream to HTTP/1.0: no length, the body ends when the connection does
        if self.method == "HEAD":
            body, stream = b"", None
        if not keep_alive or (stream is not None and http_version != "1.1"):
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines), body, stream

    async def _send(self, data: bytes) -> None:
        self.activity += 1
        await self.channel.send_all(data)

    async def _refuse(self, status: int, message: str) -> None:
        """Send a plain-text error that ends the connection, then linger so the client can read it."""
        self.method = ""  # the refused request never reached the app; a HEAD before it is answered
        # The message may quote the offending bytes: keep the line short.
        response = error_response(status, message[:200], headers=(("Connection", "close"),))
        head, body, _ = self._response_head(response, False, "1.1")
        await self._send(head + body)
        await self._linger()

    async def _linger(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None:
            return
        await send_eof()
        with trio.move_on_after(self.limits.linger_s):
            while await self.stream.receive_some(self.limits.receive_bytes_max):
                pass


def _make_request(method: bytes, target: bytes, headers: Headers, body: bytes, http_version: str) -> Request:
    target = target.decode("latin-1")
    if not target.startswith("/"):
        target = _origin_form(target)
    path, _, query_string = target.partition("?")
    return Request(method=method.decode("ascii"), path=path, query_string=query_string,
                   query=parse_query(query_string), headers=headers, body=body, http_version=http_version)


def _origin_form(target: str) -> str:
    """Reduce an absolute-form target ("http://host/p?q") or "*" to its path and query."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return target
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
