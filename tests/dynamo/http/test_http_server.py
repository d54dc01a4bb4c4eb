"""The HTTP server (llhttp on trio) against raw sockets: keep-alive, pipelining, HEAD, 100-continue, limits.

Every test runs a real server on 127.0.0.1 port 0 inside trio.run, talks to it with plain trio TCP
streams and a tiny response reader, and is bounded by trio.fail_after. After each refusal the test
checks that a well-behaved client is still served. The last test is a property over any bytes a client
may send, in any pieces: it drives one connection over an in-memory stream, so it runs many examples.
"""

import logging

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.http.message import Response
from dynamo.http.server import HttpServer, Limits

TIMEOUT_S = 10


class RawClient:
    """Reads HTTP/1.1 responses off a stream; relies on Content-Length, as the server always sends it."""

    def __init__(self, stream):
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes):
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def read_head(self):
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError(f"connection closed mid-head: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return int(status_line.split(" ")[1]), headers

    async def read_chunks(self):
        """A chunked body, as the list of its chunks; EOFError (with what came) if it ends unclosed."""
        chunks = []
        while True:
            while b"\r\n" not in self.buffer:
                if not await self._fill():
                    raise EOFError(chunks)
            size_line, _, rest = self.buffer.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                if not await self._fill():
                    raise EOFError(chunks)
                size_line, _, rest = self.buffer.partition(b"\r\n")
            self.buffer = rest[size + 2:]
            if size == 0:
                return chunks
            chunks.append(rest[:size])

    async def read_response(self, head_request=False):
        status, headers = await self.read_head()
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        assert "content-length" in headers, headers  # the server always frames with Content-Length
        length = 0 if head_request else int(headers["content-length"][0])
        while len(self.buffer) < length:
            if not await self._fill():
                raise EOFError("connection closed mid-body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    async def at_eof(self) -> bool:
        """True once the server has closed (EOF or reset) with nothing more to read."""
        try:
            return not self.buffer and not await self._fill()
        except trio.BrokenResourceError:
            return True


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode("latin-1")


def put(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode("latin-1") + body


class EchoApp:
    """Echoes method, path and body; /boom raises; /slow waits for `release`. Records every call."""

    def __init__(self):
        self.calls = []
        self.release = trio.Event()
        self.entered_slow = trio.Event()
        self.active = 0
        self.active_max = 0
        self.streams = []

    async def __call__(self, request):
        self.calls.append(request)
        self.active += 1
        self.active_max = max(self.active_max, self.active)
        try:
            if request.path == "/boom":
                raise RuntimeError("secret-detail-42")
            if request.path == "/slow":
                self.entered_slow.set()
                await self.release.wait()
            if request.path == "/bad-header":
                return Response(200, (("X-Evil", "a\r\nInjected: yes"),), b"x")
            if request.path == "/lying-length":
                return Response(200, (("Content-Length", "999"),), b"short")
            if request.path == "/empty":
                return Response(204, (), b"ignored body")
            if request.path == "/bytes-header":
                return Response(200, ((b"X-Bytes", b"no"),), b"x")
            if request.path == "/str-body":
                return Response(200, (), "not bytes")
            if request.path == "/bad-length":
                return Response(200, (("Content-Length", "12, 13"),), b"x")
            if request.path == "/nap":
                await trio.sleep(0.6)
            if request.path.startswith("/stream"):
                return Response(200, (("Content-Type", "text/plain"),), b"ignored", stream=self.writer(request.path))
            await trio.sleep(0)
            body = f"{request.method} {request.path}|".encode() + request.body
            return Response(200, (("Content-Type", "text/plain"),), body)
        finally:
            self.active -= 1

    def writer(self, path):
        """/stream: "one", an empty write, "two"; /stream-boom: "one", then raises; /stream-forever: 64 KiB
        chunks until cancelled. `self.streams` records each writer's start and how it ended."""
        async def write_body(write):
            self.streams.append([path, "running"])
            try:
                await write(b"one")
                await write(b"")
                await trio.sleep(0)
                if path == "/stream-boom":
                    raise RuntimeError("writer failed")
                while path == "/stream-forever":
                    await write(b"x" * 65536)
                await write(b"two")
                self.streams[-1][1] = "done"
            except BaseException as exc:
                self.streams[-1][1] = type(exc).__name__
                raise
        return write_body


def run_with_server(test, app=None, **limits):
    """trio.run `test(connect, app)` with a server on a free port; connect() opens a RawClient."""
    app = app or EchoApp()

    async def main():
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                server = HttpServer(app, Limits(**limits))
                listeners = await nursery.start(server.serve, "127.0.0.1", 0)
                port = listeners[0].socket.getsockname()[1]

                async def connect():
                    return RawClient(await trio.open_tcp_stream("127.0.0.1", port))

                await test(connect, app)
                nursery.cancel_scope.cancel()

    trio.run(main)
    return app


async def assert_serves_good_client(connect):
    client = await connect()
    await client.send(get("/still-alive"))
    status, _, body = await client.read_response()
    assert (status, body) == (200, b"GET /still-alive|")


def test_keep_alive_serves_several_requests_on_one_connection():
    async def test(connect, app):
        client = await connect()
        for index in range(4):
            await client.send(put(f"/k{index}", f"v{index}".encode()))
            status, headers, body = await client.read_response()
            assert (status, body) == (200, f"PUT /k{index}|v{index}".encode())
            assert headers["server"] == ["dynamo/0.1"]
            assert headers["content-length"] == [str(len(body))]
            assert "date" in headers

    app = run_with_server(test)
    assert len(app.calls) == 4


def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/a") + put("/b", b"body-b") + get("/c"))
        answers = [await client.read_response() for _ in range(3)]
        assert [(status, body) for status, _, body in answers] == [
            (200, b"GET /a|"), (200, b"PUT /b|body-b"), (200, b"GET /c|")]
        assert app.active_max == 1

    run_with_server(test)


def test_pipelined_requests_answered_without_waiting_still_let_others_run():
    async def instant(request):  # never yields: only the server's own checkpoints let others in
        return Response(200, (), request.path.encode())

    async def test(connect, app):
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            client = await connect()
            await client.send(b"".join(get(f"/{index}") for index in range(200)))
            start_ticks = ticks
            for index in range(200):
                status, _, body = await client.read_response()
                assert (status, body) == (200, f"/{index}".encode())
            assert ticks - start_ticks >= 100  # about one scheduler pass per pipelined request
            nursery.cancel_scope.cancel()

    run_with_server(test, instant)


def test_head_sends_get_headers_without_body_and_keeps_the_connection():
    async def test(connect, app):
        client = await connect()
        await client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = await client.read_response(head_request=True)
        assert status == 200
        assert headers["content-length"] == [str(len(b"HEAD /h|"))]
        await client.send(get("/after"))  # a stray body would be read as this response's head
        assert (await client.read_response())[2] == b"GET /after|"

    run_with_server(test)


def test_expect_100_continue_gets_continue_before_the_body():
    async def test(connect, app):
        client = await connect()
        await client.send(b"PUT /c HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        status, _ = await client.read_head()
        assert status == 100
        assert app.calls == []
        await client.send(b"hello")
        status, _, body = await client.read_response()
        assert (status, body) == (200, b"PUT /c|hello")

    run_with_server(test)


def test_declared_oversized_body_is_refused_with_413_before_the_app():
    async def test(connect, app):
        client = await connect()
        await client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n"
                          b"Expect: 100-continue\r\n\r\n")
        status, headers, body = await client.read_response()
        assert status == 413  # and no 100 Continue came first
        assert headers["content-type"] == ["text/plain"]
        assert body.endswith(b"\n") and body.count(b"\n") == 1
        assert await client.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test, body_bytes_max=100)
    assert [call.path for call in app.calls] == ["/still-alive"]


def test_chunked_body_over_the_limit_is_refused_with_413():
    async def test(connect, app):
        client = await connect()
        await client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            await client.send(b"40\r\n" + b"x" * 64 + b"\r\n")
        status, _, _ = await client.read_response()
        assert status == 413
        assert await client.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test, body_bytes_max=100)
    assert [call.path for call in app.calls] == ["/still-alive"]


def test_body_exactly_at_the_limit_is_accepted_chunked_or_not():
    async def test(connect, app):
        client = await connect()
        await client.send(put("/edge", b"y" * 100))
        assert (await client.read_response())[0] == 200
        await client.send(b"PUT /edge2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"32\r\n" + b"z" * 50 + b"\r\n32\r\n" + b"z" * 50 + b"\r\n0\r\n\r\n")
        status, _, body = await client.read_response()
        assert (status, body) == (200, b"PUT /edge2|" + b"z" * 100)

    run_with_server(test, body_bytes_max=100)


def test_too_many_inflight_requests_get_503_with_retry_after():
    async def test(connect, app):
        slow = await connect()
        await slow.send(get("/slow"))
        await app.entered_slow.wait()
        other = await connect()
        await other.send(get("/fast"))
        status, headers, body = await other.read_response()
        assert status == 503
        assert headers["retry-after"] == ["1"]
        assert headers["content-type"] == ["text/plain"]
        app.release.set()
        assert (await slow.read_response())[0] == 200
        await other.send(get("/again"))  # the refused connection stays usable
        assert (await other.read_response())[2] == b"GET /again|"

    app = run_with_server(test, inflight_max=1)
    assert "/fast" not in [call.path for call in app.calls]


def test_app_exception_is_500_plain_text_and_logged_not_sent(caplog):
    async def test(connect, app):
        client = await connect()
        await client.send(get("/boom"))
        status, headers, body = await client.read_response()
        assert (status, body) == (500, b"internal error\n")
        assert headers["content-type"] == ["text/plain"]
        await client.send(get("/next"))
        assert (await client.read_response())[2] == b"GET /next|"

    with caplog.at_level(logging.ERROR, logger="dynamo.http.server"):
        run_with_server(test)
    failures = [record for record in caplog.records if record.exc_info]
    assert len(failures) == 1
    assert "secret-detail-42" in str(failures[0].exc_info[1])


def test_garbage_after_a_head_request_gets_a_whole_400():
    async def test(connect, app):
        client = await connect()
        await client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n" + b"\x16\x03 not http\r\n\r\n")
        assert (await client.read_response(head_request=True))[0] == 200
        status, _, body = await client.read_response()  # a refusal has its body, whatever came before
        assert status == 400 and body.startswith(b"bad request")
        assert await client.at_eof()

    run_with_server(test)


def test_oversized_header_block_is_refused_then_closed():
    big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3000 + b"\r\n"

    async def test(connect, app):
        whole = await connect()  # the whole head in one write
        await whole.send(big + b"\r\n")
        assert (await whole.read_response())[0] == 431
        assert await whole.at_eof()
        piecemeal = await connect()  # the head never completes: the stalled-bytes bound trips
        await piecemeal.send(big)
        assert (await piecemeal.read_response())[0] == 431
        assert await piecemeal.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test, header_bytes_max=1024)
    assert [call.path for call in app.calls] == ["/still-alive"]


def test_a_head_over_many_reads_is_measured_by_its_own_bytes():
    """An incomplete head is bounded by the bytes read since the parser last finished something, so the
    body that came in the same read as the head's start does not count against the head."""
    async def send_slowly(client, data: bytes, pieces: int):
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            await client.send(data[start:start + step])
            await trio.sleep(0.02)  # each piece its own read

    async def test(connect, app):
        client = await connect()
        head = get("/long", "X-Pad: " + "p" * 900 + "\r\n")  # about 950 bytes, under the 1024 limit
        await client.send(put("/body", b"b" * 3000) + head[:600])
        await send_slowly(client, head[600:], 3)
        assert [(await client.read_response())[2] for _ in range(2)] == [b"PUT /body|" + b"b" * 3000,
                                                                        b"GET /long|"]
        over = await connect()
        await send_slowly(over, get("/over", "X-Pad: " + "p" * 1200 + "\r\n"), 6)
        assert (await over.read_response())[0] == 431
        assert await over.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test, header_bytes_max=1024)
    assert [call.path for call in app.calls] == ["/body", "/long", "/still-alive"]


@pytest.mark.parametrize("data, status, message", [
    (b"\x16\x03\x01\x02\x00garbage that is not http\r\n\r\n", 400, b"bad request: Invalid method encountered\n"),
    (b"GET /v2 HTTP/2.0\r\nHost: t\r\n\r\n", 505, b"HTTP/2.0 is not supported\n"),
    (get("/x", "X-Bad: a\x01b\r\n"), 400, b"bad request: Invalid header value char\n"),
])
def test_bytes_the_parser_refuses_get_their_status_then_close(data, status, message):
    async def test(connect, app):
        client = await connect()
        await client.send(data)
        got_status, headers, body = await client.read_response()
        assert (got_status, body, headers["content-type"]) == (status, message, ["text/plain"])
        assert await client.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test)
    assert [call.path for call in app.calls] == ["/still-alive"]


def test_an_upgrade_request_is_answered_as_a_plain_request_then_closed():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/up", "Upgrade: websocket\r\nConnection: Upgrade\r\n") + b"\x00not http")
        status, headers, body = await client.read_response()
        assert (status, body, headers["connection"]) == (200, b"GET /up|", ["close"])
        assert await client.at_eof()

    app = run_with_server(test)
    assert [call.path for call in app.calls] == ["/up"]


def test_trailers_of_a_chunked_body_are_dropped_and_do_not_reach_the_next_request():
    async def test(connect, app):
        client = await connect()
        await client.send(b"PUT /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n" + get("/next"))
        assert [(await client.read_response())[2] for _ in range(2)] == [b"PUT /t|abc", b"GET /next|"]

    app = run_with_server(test)
    assert [call.headers.get("x-trailer") for call in app.calls] == [None, None]
    assert [name.lower() for name, _ in app.calls[1].headers] == ["host"]


def test_a_client_that_closes_in_the_middle_of_a_request_gets_400():
    async def test(connect, app):
        client = await connect()
        await client.send(b"PUT /cut HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        await client.stream.send_eof()
        assert (await client.read_response())[0] == 400
        assert await client.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test)
    assert [call.path for call in app.calls] == ["/still-alive"]


def test_idle_connection_is_closed_after_the_timeout():
    async def test(connect, app):
        client = await connect()
        assert await client.at_eof()  # nothing sent: the server hangs up on its own
        await assert_serves_good_client(connect)

    run_with_server(test, idle_timeout_s=0.2)


def test_a_slow_app_is_not_idle_but_a_stalled_body_is():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/nap"))  # the app takes longer than the idle timeout
        assert (await client.read_response())[2] == b"GET /nap|"
        stalled = await connect()
        await stalled.send(b"PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        assert await stalled.at_eof()
        await assert_serves_good_client(connect)

    app = run_with_server(test, idle_timeout_s=0.2)
    assert "/k" not in [call.path for call in app.calls]


def test_a_streamed_body_goes_out_chunked_as_written_and_the_connection_is_kept():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/stream"))
        status, headers = await client.read_head()
        assert status == 200 and headers["transfer-encoding"] == ["chunked"] and "content-length" not in headers
        assert await client.read_chunks() == [b"one", b"two"]  # the empty write sent nothing
        await assert_serves_good_client(connect)
        await client.send(get("/after"))
        assert (await client.read_response())[2] == b"GET /after|"

    app = run_with_server(test)
    assert app.streams == [["/stream", "done"]]


def test_a_streamed_body_to_http_1_0_ends_with_the_connection_and_head_runs_no_writer():
    async def test(connect, app):
        client = await connect()
        await client.send(b"HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers = await client.read_head()
        assert status == 200 and "content-length" not in headers
        await client.send(get("/after"))  # no body came after the HEAD's head
        assert (await client.read_response())[2] == b"GET /after|"
        old = await connect()
        await old.send(b"GET /stream HTTP/1.0\r\n\r\n")
        status, headers = await old.read_head()
        assert status == 200 and "transfer-encoding" not in headers and "content-length" not in headers
        while await old._fill():
            pass
        assert old.buffer == b"onetwo"

    app = run_with_server(test)
    assert app.streams == [["/stream", "done"]]  # the HTTP/1.0 GET's; the HEAD ran none


def test_a_writer_that_fails_cuts_the_body_short_and_the_server_goes_on(caplog):
    async def test(connect, app):
        client = await connect()
        await client.send(get("/stream-boom"))
        assert (await client.read_head())[0] == 200
        with pytest.raises(EOFError) as cut:
            await client.read_chunks()
        assert cut.value.args[0] == [b"one"]  # no closing chunk: the client can tell it is broken
        await assert_serves_good_client(connect)

    with caplog.at_level(logging.ERROR):
        app = run_with_server(test)
    assert app.streams == [["/stream-boom", "RuntimeError"]]
    assert "failed while streaming a GET response" in caplog.text


def test_a_client_that_stops_reading_a_stream_is_idle_and_its_writer_is_cancelled():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/stream-forever"))
        assert (await client.read_head())[0] == 200
        while not app.streams or app.streams[0][1] == "running":  # the socket fills, then the reaper acts
            await trio.sleep(0.05)
        await assert_serves_good_client(connect)

    app = run_with_server(test, idle_timeout_s=0.3)
    assert app.streams == [["/stream-forever", "Cancelled"]]


def test_http_1_0_gets_one_answer_then_close():
    async def test(connect, app):
        client = await connect()
        await client.send(b"GET /old HTTP/1.0\r\n\r\n")
        status, _, body = await client.read_response()
        assert (status, body) == (200, b"GET /old|")
        assert await client.at_eof()

    run_with_server(test)


def test_invalid_app_response_becomes_500_and_framing_is_the_servers():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/bad-header"))
        status, headers, _ = await client.read_response()
        assert status == 500 and "injected" not in headers
        for path in ("/bytes-header", "/str-body", "/bad-length"):
            await client.send(get(path))
            assert (await client.read_response())[0] == 500, path
        await client.send(get("/lying-length"))
        status, headers, body = await client.read_response()
        assert (status, headers["content-length"], body) == (200, ["5"], b"short")
        await client.send(get("/empty"))
        status, headers, _ = await client.read_response()
        assert status == 204 and "content-length" not in headers
        await client.send(get("/after"))  # the dropped 204 body did not leak onto the wire
        assert (await client.read_response())[2] == b"GET /after|"

    run_with_server(test)


def test_connection_close_from_the_client_is_honoured():
    async def test(connect, app):
        client = await connect()
        await client.send(get("/last", "Connection: close\r\n"))
        status, headers, _ = await client.read_response()
        assert status == 200 and headers["connection"] == ["close"]
        assert await client.at_eof()

    run_with_server(test)


def test_request_fields_reach_the_app():
    async def test(connect, app):
        client = await connect()
        await client.send(put("/buckets/b%2Fx/keys/k%20y?r=2&flag&w=one+two", b"v",
                              "X-Riak-Meta-Color: red\r\nx-riak-meta-Size: \xe9\r\n"))
        assert (await client.read_response())[0] == 200

    request = run_with_server(test).calls[0]
    assert request.method == "PUT" and request.body == b"v"
    assert request.path == "/buckets/b%2Fx/keys/k%20y"
    assert request.path_segments() == (b"buckets", b"b/x", b"keys", b"k y")
    assert request.query_string == "r=2&flag&w=one+two"
    assert request.query == (("r", "2"), ("flag", ""), ("w", "one two"))
    assert request.headers.get("x-riak-meta-color") == "red"
    assert request.headers.with_prefix("X-Riak-Meta-") == [("X-Riak-Meta-Color", "red"),
                                                           ("x-riak-meta-Size", "\xe9")]


def test_cancelling_the_server_closes_open_connections():
    async def main():
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(HttpServer(EchoApp()).serve, "127.0.0.1", 0)
                port = listeners[0].socket.getsockname()[1]
                client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
                await client.send(get("/x"))
                assert (await client.read_response())[0] == 200
                nursery.cancel_scope.cancel()
            assert await client.at_eof()
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)

    trio.run(main)


def test_limits_reject_nonsense():
    with pytest.raises(ValueError, match="inflight_max"):
        Limits(inflight_max=0)


# -- any bytes at all ---------------------------------------------------------------------------------------

_PIECES = st.one_of(
    st.sampled_from([
        get("/a"), put("/b", b"xyz"), b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", get("/stream"), get("/boom"),
        b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /old HTTP/1.0\r\n\r\n", get("/last", "Connection: close\r\n"), put("/big", b"y" * 200),
        get("/pad", "X-Pad: " + "p" * 300 + "\r\n"), b"\r\n",
    ]),
    st.binary(max_size=24),  # garbage, or a request cut short
)


def _read_responses(data: bytes, calls: list) -> list[tuple[int, dict, bytes]]:
    """Split what the server wrote into responses: the first len(calls) answer the app's calls in order
    (a HEAD's has no body), any later one is a refusal, framed by Content-Length."""
    responses = []
    while data:
        assert data.startswith(b"HTTP/1.1 "), data[:80]
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, head
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        head_request = len(responses) < len(calls) and calls[len(responses)].method == "HEAD"
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                assert data[size:size + 2] == b"\r\n"
                body, data = body + data[:size], data[size + 2:]
                if size == 0:
                    break
        elif "content-length" in headers:
            length = 0 if head_request or status in (204, 304) else int(headers["content-length"])
            assert len(data) >= length
            body, data = data[:length], data[length:]
        else:  # a stream to HTTP/1.0: it runs to the end of the connection
            body, data = data, b""
        responses.append((status, headers, body))
    return responses


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_PIECES, min_size=1, max_size=6), cuts=st.lists(st.integers(1, 600), max_size=8))
def test_any_bytes_get_well_formed_answers_and_never_fail_the_connection(pieces, cuts):
    """Whatever a client sends, in whatever pieces: every request the app saw is answered in order, in
    well-framed responses; anything after that is one refusal; no connection fails inside the server."""
    data = b"".join(pieces)
    cuts = sorted(cut for cut in set(cuts) if cut < len(data))  # where the client's writes split the bytes
    app = EchoApp()
    failures = []
    handler = logging.Handler()
    handler.emit = lambda record: failures.append(record.getMessage()) if record.exc_info and \
        "app failed on GET /boom" not in record.getMessage() else None
    logger = logging.getLogger("dynamo.http.server")
    logger.addHandler(handler)

    async def main():
        server = HttpServer(app, Limits(body_bytes_max=100, header_bytes_max=256, linger_s=0.01))
        client, server_side = trio.testing.memory_stream_pair()
        received = bytearray()
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_connection, server_side)
                try:  # the server may close first (a refusal, Connection: close): the rest goes unsent
                    for start, end in zip([0, *cuts], [*cuts, len(data)]):
                        await client.send_all(data[start:end])
                        await trio.sleep(0.001)
                    await client.send_eof()
                except trio.BrokenResourceError:
                    pass
                while chunk := await client.receive_some(65536):
                    received.extend(chunk)
        return bytes(received)

    try:
        received = trio.run(main)
    finally:
        logger.removeHandler(handler)
    assert failures == []
    responses = _read_responses(received, app.calls)
    assert len(app.calls) <= len(responses) <= len(app.calls) + 1, (len(app.calls), len(responses))
    for call, (status, _, body) in zip(app.calls, responses):
        if call.path == "/boom":
            assert (status, body) == (500, b"internal error\n")
        elif call.path.startswith("/stream"):
            assert (status, body) == (200, b"onetwo")
        elif call.method != "HEAD":
            assert (status, body) == (200, f"{call.method} {call.path}|".encode() + call.body)
    if len(responses) > len(app.calls):
        status, headers, _ = responses[-1]
        assert status in (400, 413, 431, 505) and headers["connection"] == "close", responses[-1]
