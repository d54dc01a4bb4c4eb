"""PeerPool.request: replies, errors, deadlines and dropped connections arrive as exactly one callback each.

Real loopback sockets, every test under trio.fail_after, as in test_rpc_transport.py.
"""

import logging
import socket

import pytest
import trio

from dynamo.rpc import FrameError, PeerPool, RpcRemoteError, RpcServer, RpcTimeout, RpcUnavailable, UnknownType

SECRET = b"cluster-secret"
LIMIT = 64 * 1024


def run(test_fn, timeout_s: float = 10.0):
    async def main():
        with trio.fail_after(timeout_s):
            await test_fn()
    trio.run(main)


async def handler(peer_id, type_, body):
    if type_ == "echo":
        return body
    if type_ == "boom":
        raise RuntimeError("kaput")
    if type_ == "hang":
        await trio.sleep_forever()
    raise UnknownType(type_)


class Replies:
    """Collects callbacks: each request id must be answered exactly once."""

    def __init__(self):
        self.got: dict = {}
        self.changed = trio.Event()

    def callback(self, name):
        def on_reply(body, error):
            assert name not in self.got, f"{name} answered twice"
            self.got[name] = (body, error)
            self.changed.set()
        return on_reply

    async def wait_for(self, count: int):
        while len(self.got) < count:
            self.changed = trio.Event()
            await self.changed.wait()


async def start_server(nursery, handler_fn=handler, port=0):
    server = RpcServer("B", "prod", SECRET, handler_fn, LIMIT)
    listeners = await nursery.start(lambda task_status: server.serve(port=port, task_status=task_status))
    return server, listeners[0].socket.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_requests_get_their_own_replies_once_whatever_the_order():
    async def body():
        async with trio.open_nursery() as nursery:
            server, port = await start_server(nursery)
            async with PeerPool("A", "prod", SECRET, size_bytes_max=LIMIT) as pool:
                pool.set_address("B", "127.0.0.1", port)
                replies = Replies()
                pool.request("B", "echo", "first", 5, replies.callback("first"))  # dials: the slow path
                await replies.wait_for(1)
                for i in range(200):  # connected now: queued at once, no task per request
                    pool.request("B", "echo", {"i": i}, 5, replies.callback(i))
                await replies.wait_for(201)
                assert replies.got["first"] == ("first", None)
                assert all(replies.got[i] == ({"i": i}, None) for i in range(200))
                assert server.stats.connections_accepted == 1
            nursery.cancel_scope.cancel()
    run(body)


def test_remote_errors_and_the_deadline_come_back_as_errors():
    async def body():
        async with trio.open_nursery() as nursery:
            _, port = await start_server(nursery)
            async with PeerPool("A", "prod", SECRET, size_bytes_max=LIMIT) as pool:
                pool.set_address("B", "127.0.0.1", port)
                assert await pool.call("B", "echo", 0, timeout_s=5) == 0
                replies = Replies()
                started_s = trio.current_time()
                pool.request("B", "hang", None, 0.2, replies.callback("hang"))
                pool.request("B", "boom", None, 5, replies.callback("boom"))
                pool.request("B", "nope", None, 5, replies.callback("nope"))
                pool.request("B", "echo", "fine", 5, replies.callback("fine"))
                await replies.wait_for(4)
                assert trio.current_time() - started_s >= 0.2
                assert isinstance(replies.got["hang"][1], RpcTimeout)
                assert isinstance(replies.got["boom"][1], RpcRemoteError) and replies.got["boom"][1].kind == "handler"
                assert replies.got["nope"][1].kind == "unknown_type"
                assert replies.got["fine"] == ("fine", None)
                await trio.sleep(0.3)  # nothing more arrives: each request was answered exactly once
                assert len(replies.got) == 4
            nursery.cancel_scope.cancel()
    run(body)


def test_a_dropped_connection_fails_every_waiting_request():
    entered = trio.Event()

    async def stuck(peer_id, type_, body):
        entered.set()
        await trio.sleep_forever()

    async def body():
        async with PeerPool("A", "prod", SECRET) as pool:
            replies = Replies()
            with trio.CancelScope() as server_scope:
                async with trio.open_nursery() as server_nursery:
                    _, port = await start_server(server_nursery, stuck)
                    pool.set_address("B", "127.0.0.1", port)
                    for i in range(3):
                        pool.request("B", "stuck", i, 30, replies.callback(i))
                    await entered.wait()
                    server_scope.cancel()  # the server goes away with the requests in flight
            await replies.wait_for(3)
            assert all(isinstance(error, RpcUnavailable) for _, error in replies.got.values())
    run(body)


def test_what_cannot_be_sent_raises_at_once_and_never_calls_back():
    def never(body, error):
        raise AssertionError("must not be called")

    async def body():
        pool = PeerPool("A", "prod", SECRET, size_bytes_max=LIMIT, backoff_min_s=60, backoff_max_s=60)
        with pytest.raises(RpcUnavailable, match="not running"):
            pool.request("B", "echo", 1, 5, never)
        async with trio.open_nursery() as nursery:
            _, port = await start_server(nursery)
            async with pool:
                with pytest.raises(RpcUnavailable, match="no address"):
                    pool.request("Z", "echo", 1, 5, never)
                pool.set_address("B", "127.0.0.1", port)
                with pytest.raises(ValueError):
                    pool.request("B", "echo", 1, 0, never)
                with pytest.raises(FrameError):  # not connected yet: refused before any dial
                    pool.request("B", "echo", b"x" * (2 * LIMIT), 5, never)
                assert await pool.call("B", "echo", 1, timeout_s=5) == 1
                with pytest.raises(FrameError):  # connected: refused all the same
                    pool.request("B", "echo", b"x" * (2 * LIMIT), 5, never)
                pool.set_address("C", "127.0.0.1", free_port())
                replies = Replies()
                pool.request("C", "echo", 1, 5, replies.callback("refused"))  # dials and fails
                await replies.wait_for(1)
                assert isinstance(replies.got["refused"][1], RpcUnavailable)
                with pytest.raises(RpcUnavailable, match="backing off"):  # now fails fast
                    pool.request("C", "echo", 1, 5, never)
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    run(body)


def test_a_failing_callback_is_logged_and_the_link_keeps_working(caplog):
    caplog.set_level(logging.ERROR, logger="dynamo.rpc")

    def broken(body, error):
        raise RuntimeError("callback bug")

    async def body():
        async with trio.open_nursery() as nursery:
            server, port = await start_server(nursery)
            async with PeerPool("A", "prod", SECRET) as pool:
                pool.set_address("B", "127.0.0.1", port)
                assert await pool.call("B", "echo", 0, timeout_s=5) == 0
                pool.request("B", "echo", 1, 5, broken)
                replies = Replies()
                pool.request("B", "echo", 2, 5, replies.callback("after"))
                await replies.wait_for(1)
                assert replies.got["after"] == (2, None)
                assert server.stats.connections_accepted == 1
            nursery.cancel_scope.cancel()
    run(body)
    assert "callback bug" in caplog.text


def test_answered_requests_leave_the_deadline_heap():
    async def body():
        async with trio.open_nursery() as nursery:
            _, port = await start_server(nursery)
            async with PeerPool("A", "prod", SECRET) as pool:
                pool.set_address("B", "127.0.0.1", port)
                assert await pool.call("B", "echo", 0, timeout_s=5) == 0
                replies = Replies()
                for i in range(50):
                    pool.request("B", "echo", i, 30, replies.callback(i))
                    await replies.wait_for(i + 1)
                # Each new request pops the answered ones ahead of it: the heap does not grow with traffic.
                assert len(pool._deadlines) <= 2
            nursery.cancel_scope.cancel()
    run(body)
