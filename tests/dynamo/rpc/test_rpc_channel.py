"""SocketChannel: bytes arrive intact and in order, ends and errors look like trio's, and a busy reader
still lets other tasks run. Real loopback TCP streams from trio."""

import struct

import pytest
import trio
import trio.testing

from dynamo.rpc.channel import SocketChannel, close_channel, open_channel


def run(test_fn, timeout_s: float = 10.0):
    async def main():
        with trio.fail_after(timeout_s):
            await test_fn()
    trio.run(main)


async def tcp_pair():
    """Two connected trio SocketStreams over loopback."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


def test_large_writes_arrive_whole_and_in_order_through_full_buffers():
    payload = bytes(range(256)) * 20_000  # 5 MB: more than the socket buffers hold, so the writer waits

    async def body():
        client, server = await tcp_pair()
        sender, receiver = open_channel(client), open_channel(server)
        assert isinstance(sender, SocketChannel)
        received = bytearray()

        async def read_all():
            while len(received) < 2 * len(payload):
                data = await receiver.receive_some()
                assert data
                received.extend(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await sender.send_all(payload)
            await sender.send_all(payload[::-1])
        assert bytes(received) == payload + payload[::-1]
        close_channel(sender)
        close_channel(receiver)
        await client.aclose()
        await server.aclose()
    run(body)


def test_end_of_stream_is_empty_bytes_and_a_closed_channel_refuses():
    async def body():
        client, server = await tcp_pair()
        channel = open_channel(server)
        await client.send_all(b"last words")
        await client.aclose()
        assert await channel.receive_some() == b"last words"
        assert await channel.receive_some() == b""
        channel.close()
        channel.close()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await channel.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await channel.send_all(b"x")
        await server.aclose()
    run(body)


def test_closing_the_channel_leaves_the_stream_open():
    async def body():
        client, server = await tcp_pair()
        channel = open_channel(server)
        await channel.send_all(b"via channel;")
        channel.close()
        await server.send_all(b"via stream")  # the stream owns its own descriptor
        await server.aclose()
        received = b""
        while chunk := await client.receive_some():
            received += chunk
        assert received == b"via channel;via stream"
        await client.aclose()
    run(body)


def test_a_reset_peer_is_a_broken_resource():
    async def body():
        client, server = await tcp_pair()
        channel = open_channel(server)
        client.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()  # linger 0: the close sends a reset
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):
                await channel.send_all(b"x" * 65536)
                await trio.sleep(0.001)
        channel.close()
        await server.aclose()
    run(body)


def test_a_reader_that_always_finds_data_still_lets_others_run():
    async def body():
        client, server = await tcp_pair()
        channel = open_channel(server)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x" * 4_000_000)
            await trio.sleep(0.1)  # the socket buffers fill up: every small read below finds data at once
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()  # the ticker is running
            start_ticks = ticks
            for _ in range(20):
                assert await channel.receive_some(1024)
            assert ticks - start_ticks >= 5  # the reader yielded between reads without ever waiting
            nursery.cancel_scope.cancel()
        channel.close()
        await client.aclose()
        await server.aclose()
    run(body)


def test_other_streams_are_used_as_they_are():
    stream = trio.testing.MemorySendStream()
    assert open_channel(stream) is stream
    close_channel(stream)  # nothing to close: the caller owns it
