"""The simulated RPC network keeps PeerPool's contract: replies, remote errors, deadlines (RpcTimeout),
refused dials and backoff (RpcUnavailable), resets when a server goes away, partitions that lose messages,
and frames that really go through CBOR."""

import math
import random

import pytest
import trio
import trio.testing

from dynamo.rpc import RpcRemoteError, RpcTimeout, RpcUnavailable, UnknownType
from dynamo.rpc.frame import FrameError
from tools.sim.network import NetworkConfig
from tools.sim.trio_network import SimNetwork
from tools.sim.trio_run import deterministic_scheduling

LATENCY_S = 0.01


def simulate(test):
    """Run `await test(network, nursery)` with nodes a, b, c registered (a serving nothing yet)."""
    async def main():
        network = SimNetwork(random.Random(1), NetworkConfig(latency_s=LATENCY_S, jitter_s=0.0))
        for node in "abc":
            network.add_host(node, f"{node}.sim:1")
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            await test(network, nursery)
            nursery.cancel_scope.cancel()

    with deterministic_scheduling(1):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def echo(peer_id, type_, body):
    if type_ == "echo":
        return {"from": peer_id, "body": body}
    if type_ == "slow":
        await trio.sleep(body)
        return "late"
    if type_ == "boom":
        raise ValueError("boom")
    raise UnknownType(type_)


async def serving(network, nursery, node):
    scope = trio.CancelScope()

    async def serve(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await network.serve(node, echo, task_status=task_status)

    await nursery.start(serve)
    return scope


async def pool_of(network, nursery, node, peers="abc"):
    pool = network.pool(node, random.Random(2))
    for peer in peers:
        if peer != node:
            pool.set_address(peer, f"{peer}.sim", 1)
    await nursery.start(pool.run)
    return pool


def test_a_call_gets_its_reply_after_a_dial_and_a_round_trip():
    async def test(network, nursery):
        await serving(network, nursery, "b")
        pool = await pool_of(network, nursery, "a")
        started_s = trio.current_time()
        assert await pool.call("b", "echo", [1, b"x"], 1.0) == {"from": "a", "body": [1, b"x"]}
        assert trio.current_time() - started_s == pytest.approx(4 * LATENCY_S)  # dial, then the request
        assert pool.is_connected("b")
        started_s = trio.current_time()
        await pool.call("b", "echo", None, 1.0)
        assert trio.current_time() - started_s == pytest.approx(2 * LATENCY_S)
        with pytest.raises(RpcRemoteError) as unknown:
            await pool.call("b", "nope", None, 1.0)
        assert unknown.value.kind == "unknown_type"
        with pytest.raises(RpcRemoteError) as failed:
            await pool.call("b", "boom", None, 1.0)
        assert failed.value.kind == "handler" and "boom" in failed.value.message
        assert network.servers["b"].stats.handler_errors == 1
    simulate(test)


def test_bodies_go_through_cbor_and_a_deadline_is_an_rpc_timeout():
    async def test(network, nursery):
        await serving(network, nursery, "b")
        pool = await pool_of(network, nursery, "a")
        with pytest.raises(Exception) as not_cbor:
            await pool.call("b", "echo", object(), 1.0)
        assert not isinstance(not_cbor.value, RpcUnavailable)
        with pytest.raises(FrameError):
            await pool.call("b", "echo", b"x" * (17 * 1024 * 1024), 1.0)
        started_s = trio.current_time()
        with pytest.raises(RpcTimeout):
            await pool.call("b", "slow", 5.0, 0.5)
        assert trio.current_time() - started_s == pytest.approx(0.5)
        got = []
        pool.request("b", "slow", 0.0, 1.0, lambda body, error: got.append((body, error)))
        await trio.sleep(1.0)
        assert got == [("late", None)]  # exactly once
    simulate(test)


def test_a_dial_to_a_down_node_is_refused_and_backs_off():
    async def test(network, nursery):
        pool = await pool_of(network, nursery, "a")
        with pytest.raises(RpcUnavailable, match="refused"):
            await pool.call("b", "echo", None, 1.0)
        with pytest.raises(RpcUnavailable, match="backing off"):
            pool.request("b", "echo", None, 1.0, lambda body, error: None)
        with pytest.raises(RpcUnavailable, match="no address"):
            await pool.call("zz", "echo", None, 1.0)
        await serving(network, nursery, "b")
        await trio.sleep(pool.backoff_max_s)
        assert await pool.call("b", "echo", 1, 1.0) == {"from": "a", "body": 1}
        pool.set_address("c", "b.sim", 1)  # b answers at c's address: the handshake names the wrong node
        with pytest.raises(RpcUnavailable, match="handshake"):
            await pool.call("c", "echo", None, 1.0)
        assert await pool.cast("b", "echo", None) is True
    simulate(test)


def test_a_server_going_away_resets_its_connections_and_a_restart_serves_again():
    async def test(network, nursery):
        scope = await serving(network, nursery, "b")
        pool = await pool_of(network, nursery, "a")
        await pool.call("b", "echo", None, 1.0)
        got = []
        pool.request("b", "slow", 10.0, 20.0, lambda body, error: got.append(error))
        await trio.sleep(0.1)
        scope.cancel()
        await trio.sleep(0.1)
        assert len(got) == 1 and isinstance(got[0], RpcUnavailable) and "reset" in str(got[0])
        assert not pool.is_connected("b")
        await serving(network, nursery, "b")
        await trio.sleep(pool.backoff_max_s)
        assert await pool.call("b", "echo", 2, 1.0) == {"from": "a", "body": 2}
    simulate(test)


def test_a_partition_loses_messages_without_resetting_and_a_heal_restores_them():
    async def test(network, nursery):
        await serving(network, nursery, "b")
        pool = await pool_of(network, nursery, "a")
        await pool.call("b", "echo", None, 1.0)
        network.partition({"a"}, {"b", "c"})
        with pytest.raises(RpcTimeout):
            await pool.call("b", "echo", None, 1.0)
        assert pool.is_connected("b")
        network.heal()
        assert await pool.call("b", "echo", 3, 1.0) == {"from": "a", "body": 3}
        network.clog("a", "b", 2.0)
        started_s = trio.current_time()
        await pool.call("b", "echo", 4, 5.0)
        assert trio.current_time() - started_s >= 2.0
    simulate(test)


def test_a_stopped_pool_refuses_and_sends_nothing():
    async def test(network, nursery):
        await serving(network, nursery, "b")
        pool = network.pool("a", random.Random(3))
        pool.set_address("b", "b.sim", 1)
        with pytest.raises(RpcUnavailable, match="not running"):
            pool.request("b", "echo", None, 1.0, lambda body, error: None)
        with pytest.raises(ValueError):
            pool.request("b", "echo", None, 0, lambda body, error: None)
        assert math.isclose(trio.current_time(), 0.0)
    simulate(test)
