"""A pool that is stopping turns requests away with RpcUnavailable, never with trio's "Nursery is closed to
new arrivals" (which a node's gossip casts used to hit when it stopped quickly after starting)."""

import socket

import pytest
import trio

from dynamo.rpc.pool import PeerPool
from dynamo.rpc.transport import RpcServer, RpcUnavailable

SECRET = b"cluster-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def echo(peer_id, type_, body):
    return body


@pytest.mark.parametrize("attempt", range(10))
def test_casts_and_requests_while_the_pool_stops_fail_cleanly(attempt):
    async def main():
        port = free_port()
        outcomes = []
        with trio.fail_after(10):
            async with trio.open_nursery() as servers:
                server = RpcServer("B", "prod", SECRET, echo)
                await servers.start(lambda task_status: server.serve(port=port, task_status=task_status))
                pool = PeerPool("A", "prod", SECRET)
                pool.set_address("B", "127.0.0.1", port)
                pool.set_address("C", "127.0.0.1", free_port())  # nobody there: every dial is new work
                stopped = trio.Event()

                async def run_pool():
                    with trio.CancelScope() as scope:
                        pool_scope.append(scope)
                        await pool.run()
                    stopped.set()

                async def keep_asking():
                    while not stopped.is_set():
                        try:
                            pool.reset_backoff("C")  # so each cast starts a dial in the pool's nursery
                            outcomes.append(await pool.cast("C", "echo", 1))
                            pool.request("B", "echo", 1, 5.0, lambda body, error: None)
                        except RpcUnavailable:
                            outcomes.append("unavailable")
                        await trio.sleep(0)

                pool_scope = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_pool)
                    await trio.sleep(0.05)
                    assert await pool.call("B", "echo", "up", timeout_s=5) == "up"  # a link to close
                    nursery.start_soon(keep_asking)
                    await trio.sleep(0.05)
                    pool_scope[0].cancel()
                servers.cancel_scope.cancel()
        assert outcomes[-1] == "unavailable"  # the pool said so once it stopped; nothing raised otherwise
    trio.run(main)
