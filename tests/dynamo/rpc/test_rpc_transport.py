"""RpcServer + PeerPool over real loopback sockets: multiplexing, deadlines, errors, bad peers, reconnects.

Every test runs inside trio.run under trio.fail_after, so a hang is a failure, not a stuck suite.
"""

import logging
import os
import socket
import struct
from contextlib import asynccontextmanager

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from dynamo.rpc import frame
from dynamo.rpc.frame import FrameDecoder, FrameError, encode_frame
from dynamo.rpc.handshake import Handshake, HandshakeError, Role
from dynamo.rpc.pool import PeerPool
from dynamo.rpc.transport import (Outbox, RpcRemoteError, RpcServer, RpcTimeout, RpcUnavailable, UnknownType,
                                  authenticate)

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
    if type_ == "whoami":
        return peer_id
    if type_ == "boom":
        raise RuntimeError("kaput")
    if type_ == "hang":
        await trio.sleep_forever()
    if type_ == "huge":
        return b"x" * (2 * LIMIT)
    raise UnknownType(type_)


async def start_server(nursery, handler_fn=handler, port=0, **kwargs):
    server = RpcServer("B", "prod", SECRET, handler_fn, LIMIT, **kwargs)
    listeners = await nursery.start(lambda task_status: server.serve(port=port, task_status=task_status))
    return server, listeners[0].socket.getsockname()[1]


@asynccontextmanager
async def node_pair(handler_fn=handler, secret=SECRET, **pool_kwargs):
    """Server B and a pool of node A that knows B's address."""
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, handler_fn)
        async with PeerPool("A", "prod", secret, size_bytes_max=LIMIT, **pool_kwargs) as pool:
            pool.set_address("B", "127.0.0.1", port)
            yield server, pool, port
        nursery.cancel_scope.cancel()


async def raw_authenticated(port, node_id="M"):
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    handshake = Handshake(Role.CLIENT, node_id, "prod", SECRET, os.urandom(16), "B")
    decoder = FrameDecoder(LIMIT)
    await authenticate(stream, handshake, decoder)
    return stream, decoder


async def assert_closed_by_server(stream):
    """Read until the server hangs up (EOF or reset); anything else it sends is ignored."""
    try:
        while await stream.receive_some():
            pass
    except trio.BrokenResourceError:
        pass
    await stream.aclose()


def test_many_concurrent_calls_share_one_connection():
    async def body():
        async with node_pair() as (server, pool, _):
            results = {}

            async def one(i):
                results[i] = await pool.call("B", "echo", {"i": i, "pad": b"p" * 100}, timeout_s=5)

            async with trio.open_nursery() as nursery:
                for i in range(300):
                    nursery.start_soon(one, i)
            assert results == {i: {"i": i, "pad": b"p" * 100} for i in range(300)}
            assert await pool.call("B", "whoami", None, timeout_s=5) == "A"
            assert server.stats.connections_accepted == 1
            assert server.stats.requests == 301
    run(body)


def test_replies_reach_the_right_callers_when_answered_out_of_order():
    gates = [trio.Event() for _ in range(20)]
    started = []

    async def gated(peer_id, type_, body):
        started.append(body)
        await gates[body].wait()
        return body * 10

    async def body():
        async with node_pair(gated) as (server, pool, _):
            results = {}

            async def one(i):
                results[i] = await pool.call("B", "gated", i, timeout_s=5)

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
                while len(started) < 20:  # all 20 are in the handler at once: the requests were pipelined
                    await trio.sleep(0.001)
                for gate in reversed(gates):
                    gate.set()
                    await trio.sleep(0)
            assert results == {i: i * 10 for i in range(20)}
            assert server.stats.connections_accepted == 1
    run(body)


def test_deadline_gives_rpc_timeout_while_other_calls_succeed():
    async def body():
        async with node_pair() as (server, pool, _):
            outcome = {}

            async def hanging():
                with pytest.raises(RpcTimeout):
                    await pool.call("B", "hang", None, timeout_s=0.2)
                outcome["timed_out"] = True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hanging)
                for i in range(20):
                    assert await pool.call("B", "echo", i, timeout_s=5) == i
            assert outcome == {"timed_out": True}
            assert await pool.call("B", "echo", "after", timeout_s=5) == "after"
            assert server.stats.connections_accepted == 1
    run(body)


def test_handler_errors_are_error_replies_and_the_connection_stays():
    async def body():
        async with node_pair() as (server, pool, _):
            with pytest.raises(RpcRemoteError, match="kaput") as info:
                await pool.call("B", "boom", None, timeout_s=5)
            assert info.value.kind == "handler"
            with pytest.raises(RpcRemoteError) as info:
                await pool.call("B", "no-such-type", None, timeout_s=5)
            assert info.value.kind == "unknown_type"
            with pytest.raises(RpcRemoteError) as info:  # the reply would be over the frame limit
                await pool.call("B", "huge", None, timeout_s=5)
            assert info.value.kind == "bad_reply"
            with pytest.raises(FrameError):  # a request over the limit never leaves this node
                await pool.call("B", "echo", b"x" * (2 * LIMIT), timeout_s=5)
            assert await pool.call("B", "echo", 1, timeout_s=5) == 1
            assert server.stats.connections_accepted == 1
            assert server.stats.handler_errors == 1  # "boom"; unknown types are not errors
    run(body)


def test_cast_is_one_way():
    seen = trio.Event()

    async def recorder(peer_id, type_, body):
        assert (peer_id, type_, body) == ("A", "gossip", {"n": 1})
        seen.set()
        return "nobody reads this"

    async def body():
        async with node_pair(recorder) as (_, pool, _port):
            assert await pool.cast("B", "gossip", {"n": 1})
            await seen.wait()
            assert not await pool.cast("nobody", "gossip", {})
    run(body)


def test_bad_peers_are_dropped_and_a_good_client_keeps_working(caplog):
    caplog.set_level(logging.INFO, logger="dynamo.rpc")

    async def body():
        async with node_pair() as (server, pool, port):
            assert await pool.call("B", "echo", 0, timeout_s=5) == 0

            garbage = await trio.open_tcp_stream("127.0.0.1", port)  # junk instead of a hello
            await garbage.send_all(b"GET / HTTP/1.1\r\n\r\n" * 10)
            await assert_closed_by_server(garbage)
            assert await pool.call("B", "echo", 1, timeout_s=5) == 1

            stream, _ = await raw_authenticated(port)  # junk after a valid handshake
            await stream.send_all(struct.pack(">I", 3) + b"\xff\xff\xff")
            await assert_closed_by_server(stream)

            stream, _ = await raw_authenticated(port)  # a length over the limit
            await stream.send_all(struct.pack(">I", LIMIT + 1))
            await assert_closed_by_server(stream)

            stream, _ = await raw_authenticated(port)  # a frame kind a server never takes
            await stream.send_all(encode_frame(frame.reply(1, "surprise")))
            await assert_closed_by_server(stream)
            assert await pool.call("B", "echo", 2, timeout_s=5) == 2

            async with PeerPool("A2", "prod", b"wrong secret") as intruder:
                intruder.set_address("B", "127.0.0.1", port)
                with pytest.raises(RpcUnavailable, match="bad proof"):
                    await intruder.call("B", "echo", 3, timeout_s=5)
            assert await pool.call("B", "echo", 4, timeout_s=5) == 4
            assert server.stats.protocol_errors == 3
            assert server.stats.handshakes_failed == 2
    run(body)
    assert "over the limit" in caplog.text
    assert "malformed CBOR" in caplog.text
    assert "unexpected 'reply' frame" in caplog.text
    assert "bad proof" in caplog.text


def test_silent_peer_is_dropped_after_the_handshake_timeout():
    async def body():
        async with trio.open_nursery() as nursery:
            server, port = await start_server(nursery, handshake_timeout_s=0.1)
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            await assert_closed_by_server(silent)
            assert server.stats.handshakes_failed == 1
            nursery.cancel_scope.cancel()
    run(body)


def test_requests_pipelined_behind_the_handshake_get_the_full_limit():
    async def body():
        async with trio.open_nursery() as nursery:
            _, port = await start_server(nursery)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = Handshake(Role.CLIENT, "M", "prod", SECRET, os.urandom(16), "B")
            decoder = FrameDecoder(LIMIT)
            await stream.send_all(encode_frame(client.hello()))
            [server_hello] = decoder.feed(await stream.receive_some(), frames_max=1) or \
                decoder.feed(await stream.receive_some(), frames_max=1)
            [proof] = client.receive(server_hello)
            big = frame.request(1, "echo", b"z" * 10_000)  # over the pre-authentication frame limit
            await stream.send_all(encode_frame(proof) + encode_frame(big))
            replies = []
            while not replies:
                replies = [m for m in decoder.feed(await stream.receive_some()) if m["t"] == "reply"]
            assert replies == [frame.reply(1, b"z" * 10_000)]
            await stream.aclose()
            nursery.cancel_scope.cancel()
    run(body)


def test_pending_calls_fail_when_the_connection_drops():
    entered = trio.Event()

    async def stuck(peer_id, type_, body):
        entered.set()
        await trio.sleep_forever()

    async def body():
        async with PeerPool("A", "prod", SECRET) as pool, trio.open_nursery() as nursery:
            with trio.CancelScope() as server_scope:
                async with trio.open_nursery() as server_nursery:
                    _, port = await start_server(server_nursery, stuck)
                    pool.set_address("B", "127.0.0.1", port)

                    async def waiting_call():
                        with pytest.raises(RpcUnavailable, match="lost"):
                            await pool.call("B", "stuck", None, timeout_s=30)
                    nursery.start_soon(waiting_call)
                    await entered.wait()
                    server_scope.cancel()  # the server goes away with the call in flight
    run(body)


def test_outbox_batches_frames_queued_together_and_pushes_back():
    class SlowStream:
        def __init__(self):
            self.writes = []
            self.release = trio.Event()

        async def send_all(self, data):
            self.writes.append(data)
            await self.release.wait()

    async def body():
        stream, outbox = SlowStream(), Outbox(high_bytes=100)
        async with trio.open_nursery() as nursery:
            for i in range(10):
                assert outbox.put_nowait(b"%02d" % i)
            nursery.start_soon(outbox.run, stream)
            await wait_all_tasks_blocked()
            assert stream.writes == [b"".join(b"%02d" % i for i in range(10))]  # one write for ten
            assert outbox.put_nowait(b"x" * 100)  # queued behind the stuck write: now at the high mark
            assert not outbox.put_nowait(b"y")    # casts are dropped ...
            nursery.start_soon(outbox.put, b"z")  # ... and callers wait
            await wait_all_tasks_blocked()
            stream.release.set()
            await wait_all_tasks_blocked()
            assert stream.writes[1:] == [b"x" * 100, b"z"]
            outbox.close("done")
            with pytest.raises(RpcUnavailable, match="done"):
                await outbox.put(b"late")
    run(body)


def test_a_reader_flushes_what_it_staged_itself_and_leaves_the_rest_to_the_writer():
    class Channel:
        def __init__(self):
            self.room = 1000  # bytes the kernel takes at once
            self.direct, self.writes = [], []

        def send_nowait(self, data):
            taken = bytes(data[:self.room])
            self.room -= len(taken)
            self.direct.append(taken)
            return len(taken)

        async def send_all(self, data):
            self.writes.append(bytes(data))

    async def body():
        channel, outbox = Channel(), Outbox(high_bytes=100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run, channel)
            await wait_all_tasks_blocked()  # the writer is idle
            assert outbox.stage(b"a1") and outbox.stage(b"a2")
            await wait_all_tasks_blocked()
            assert channel.direct == channel.writes == []  # staged: the writer was left asleep
            outbox.flush(channel)
            assert channel.direct == [b"a1a2"] and channel.writes == []  # one write, from the caller
            channel.room = 1  # the kernel takes one byte: the writer sends the rest
            assert outbox.stage(b"bc")
            outbox.flush(channel)
            await wait_all_tasks_blocked()
            assert channel.direct[-1] == b"b" and channel.writes == [b"c"]
            channel.room = 0
            assert outbox.stage(b"x" * 100)  # now at the high mark: staging refuses more ...
            assert not outbox.stage(b"y")
            await outbox.put(b"z")  # ... and a put wakes the writer, which drains the staged frame
            await wait_all_tasks_blocked()
            assert channel.writes == [b"c", b"x" * 100, b"z"]
            outbox.flush(channel)  # nothing queued: nothing sent
            assert channel.direct[-1] == b"b"
            nursery.cancel_scope.cancel()
    run(body)


def test_server_restart_client_reconnects_after_backoff():
    async def body():
        async with PeerPool("A", "prod", SECRET, backoff_min_s=0.05, backoff_max_s=0.2) as pool:
            with trio.CancelScope() as first:
                async with trio.open_nursery() as nursery:
                    _, port = await start_server(nursery)
                    pool.set_address("B", "127.0.0.1", port)
                    assert await pool.call("B", "echo", "before", timeout_s=5) == "before"
                    first.cancel()
            while pool.is_connected("B"):
                await trio.sleep(0.005)
            with pytest.raises(RpcUnavailable):  # refused: the pool starts backing off
                await pool.call("B", "echo", 0, timeout_s=30)
            with pytest.raises(RpcUnavailable, match="backing off"):  # fails fast, no dial
                await pool.call("B", "echo", 0, timeout_s=30)
            async with trio.open_nursery() as nursery:
                server, _ = await start_server(nursery, port=port)
                while True:
                    try:
                        assert await pool.call("B", "echo", "after", timeout_s=5) == "after"
                        break
                    except RpcUnavailable:
                        await trio.sleep(0.01)
                assert server.stats.connections_accepted == 1
                nursery.cancel_scope.cancel()
    run(body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_peer_is_unavailable_not_a_timeout():
    async def body():
        async with PeerPool("A", "prod", SECRET, backoff_min_s=60, backoff_max_s=60) as pool:
            pool.set_address("B", "127.0.0.1", free_port())
            with pytest.raises(RpcUnavailable, match="unreachable"):
                await pool.call("B", "echo", 1, timeout_s=30)
            with pytest.raises(RpcUnavailable, match="backing off"):
                await pool.call("B", "echo", 1, timeout_s=30)
            assert not await pool.cast("B", "gossip", 1)
            with pytest.raises(RpcUnavailable, match="no address"):
                await pool.call("Z", "echo", 1, timeout_s=30)
    run(body)


def test_peer_with_another_node_id_is_refused():
    async def body():
        async with node_pair() as (_, pool, port):
            pool.set_address("C", "127.0.0.1", port)  # B answers at C's address
            with pytest.raises(RpcUnavailable, match="expected 'C'"):
                await pool.call("C", "echo", 1, timeout_s=5)
            assert await pool.call("B", "echo", 1, timeout_s=5) == 1
    run(body)


def test_bad_arguments():
    with pytest.raises(ValueError):
        RpcServer("B", "prod", b"", handler)
    with pytest.raises(ValueError):
        PeerPool("A", "prod", SECRET, backoff_min_s=2, backoff_max_s=1)

    async def body():
        async with PeerPool("A", "prod", SECRET) as pool:
            with pytest.raises(ValueError):
                await pool.call("B", "echo", 1, timeout_s=0)
    run(body)
    with pytest.raises(HandshakeError):
        Handshake(Role.CLIENT, "A", "prod", SECRET, b"n" * 16).receive(frame.one_way("proof", {}))


def test_inline_types_are_answered_by_the_reader_without_the_async_handler():
    calls = []

    def fast(peer_id, body):
        calls.append(body)
        if body == "bad":
            raise ValueError("no such thing")
        return [peer_id, body]

    async def only_slow(peer_id, type_, body):
        assert type_ != "fast", "an inline type reached the task handler"
        return await handler(peer_id, type_, body)

    async def main():
        async with trio.open_nursery() as nursery:
            server = RpcServer("B", "prod", SECRET, only_slow, LIMIT, inline={"fast": fast})
            listeners = await nursery.start(lambda task_status: server.serve(port=0, task_status=task_status))
            port = listeners[0].socket.getsockname()[1]
            async with PeerPool("A", "prod", SECRET, size_bytes_max=LIMIT) as pool:
                pool.set_address("B", "127.0.0.1", port)
                assert await pool.call("B", "fast", 7, timeout_s=5) == ["A", 7]
                with pytest.raises(RpcRemoteError) as caught:
                    await pool.call("B", "fast", "bad", timeout_s=5)
                assert caught.value.kind == "handler" and "no such thing" in caught.value.message
                replies = {}
                for index in range(200):  # pipelined: many arrive in one read, answered in one write
                    pool.request("B", "fast", index, 5, lambda body, error, i=index: replies.__setitem__(i, body))
                with trio.fail_after(5):
                    while len(replies) < 200:
                        await trio.sleep(0.01)
                assert replies == {index: ["A", index] for index in range(200)}
                assert await pool.call("B", "echo", b"slow path", timeout_s=5) == b"slow path"
            assert server.stats.requests == 203 and server.stats.handler_errors == 1
            nursery.cancel_scope.cancel()
        assert len(calls) == 202

    run(main)


def test_deferred_types_answer_through_respond_or_go_the_task_way():
    """A deferred handler answers at once or later (as a commit settles), declines (the request runs as a
    task instead), or raises (an error reply). A taken request holds a concurrency slot until answered:
    with both slots held, the next request is not offered but waits for a slot on the task way."""
    later = []  # responds kept for later
    offered = []

    def deferred(peer_id, body, respond):
        offered.append(body)
        if body == "now":
            respond(["now", peer_id], None)
        elif body == "later":
            later.append(respond)
        elif body == "decline":
            return False
        elif body == "raise":
            raise ValueError("refused")
        elif body == "fail":
            respond(None, RuntimeError("commit failed"))
        elif body == "answer-decline":  # answered, so taken whatever it returns: never a second answer
            respond(["answered"], None)
            return False
        return True

    async def slow(peer_id, type_, body):
        if type_ == "put":
            return ["task", body]
        return await handler(peer_id, type_, body)

    async def main():
        async with trio.open_nursery() as nursery:
            server, port = await start_server(nursery, slow, concurrency_max=2, deferred={"put": deferred})
            async with PeerPool("A", "prod", SECRET, size_bytes_max=LIMIT) as pool:
                pool.set_address("B", "127.0.0.1", port)
                assert await pool.call("B", "put", "now", timeout_s=5) == ["now", "A"]
                assert await pool.call("B", "put", "decline", timeout_s=5) == ["task", "decline"]
                with pytest.raises(RpcRemoteError, match="refused"):
                    await pool.call("B", "put", "raise", timeout_s=5)
                with pytest.raises(RpcRemoteError, match="commit failed") as caught:
                    await pool.call("B", "put", "fail", timeout_s=5)
                assert caught.value.kind == "handler"
                assert await pool.call("B", "put", "answer-decline", timeout_s=5) == ["answered"]
                replies = []
                for _ in range(2):
                    pool.request("B", "put", "later", 5, lambda body, error: replies.append((body, error)))
                while len(later) < 2:
                    await trio.sleep(0.01)
                # Both slots are held by the unanswered two: a third is not offered but queued for a slot.
                pool.request("B", "put", "now", 5, lambda body, error: replies.append((body, error)))
                await trio.sleep(0.2)
                assert offered.count("now") == 1 and replies == []
                later.pop(0)("done", None)  # a slot frees: the third runs as a task
                while len(replies) < 2:
                    await trio.sleep(0.01)
                assert replies == [("done", None), (["task", "now"], None)]
                later[0]("again", None)
                with pytest.raises(RuntimeError, match="answered twice"):
                    later[0]("twice", None)
            assert server.stats.requests == 8 and server.stats.handler_errors == 2
            nursery.cancel_scope.cancel()

    run(main)
