"""PeerPool.reset_backoff: a peer known to be back is dialled by the next request, not turned away."""

import socket

import pytest
import trio

from dynamo.rpc.pool import PeerPool
from dynamo.rpc.transport import RpcServer, RpcUnavailable

SECRET = b"cluster-secret"


def run(test_fn, timeout_s: float = 10.0):
    async def main():
        with trio.fail_after(timeout_s):
            await test_fn()
    trio.run(main)


async def echo(peer_id, type_, body):
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_reset_backoff_lets_the_next_request_dial_at_once():
    async def body():
        port = free_port()
        async with PeerPool("A", "prod", SECRET, backoff_min_s=60, backoff_max_s=60) as pool:
            pool.set_address("B", "127.0.0.1", port)
            with pytest.raises(RpcUnavailable, match="unreachable"):  # nobody listens: a minute's backoff
                await pool.call("B", "echo", 1, timeout_s=5)
            async with trio.open_nursery() as nursery:
                server = RpcServer("B", "prod", SECRET, echo)
                await nursery.start(lambda task_status: server.serve(port=port, task_status=task_status))
                with pytest.raises(RpcUnavailable, match="backing off"):  # up, but still turned away
                    await pool.call("B", "echo", 1, timeout_s=5)
                pool.reset_backoff("B")
                assert await pool.call("B", "echo", "back", timeout_s=5) == "back"
                assert server.stats.connections_accepted == 1
                nursery.cancel_scope.cancel()
    run(body)


def test_reset_backoff_of_an_unknown_peer_is_a_no_op():
    async def body():
        async with PeerPool("A", "prod", SECRET) as pool:
            pool.reset_backoff("nobody")
            with pytest.raises(RpcUnavailable, match="no address"):
                await pool.call("nobody", "echo", 1, timeout_s=1)
    run(body)
