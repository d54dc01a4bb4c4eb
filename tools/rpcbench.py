"""Measure node-to-node RPC throughput: calls/s over one connection on loopback, echo handler.

    python -m tools.rpcbench [--seconds 3] [--body-bytes 100] [--callers 1 64] [--same-process]

By default the server runs in a child process so that client and server each get a core, as two nodes
would; --same-process runs both on one trio loop. Prints results; asserts nothing (a benchmark, not a test).
"""

import argparse
import multiprocessing
import time

import trio

from dynamo.rpc import PeerPool, RpcServer

SECRET = b"bench-secret"


async def echo(peer_id, type_, body):
    return body


def serve_in_child(conn) -> None:
    async def main():
        server = RpcServer("server", "bench", SECRET, echo)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            conn.send(listeners[0].socket.getsockname()[1])
    trio.run(main)


async def measure(pool: PeerPool, callers: int, seconds: float, body: dict) -> tuple[int, float]:
    count = 0
    deadline = trio.current_time() + seconds

    async def caller():
        nonlocal count
        while trio.current_time() < deadline:
            await pool.call("server", "echo", body, timeout_s=10)
            count += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return count, time.perf_counter() - start


async def bench(port: int | None, args) -> None:
    body = {"value": b"v" * args.body_bytes}
    async with trio.open_nursery() as nursery:
        if port is None:
            listeners = await nursery.start(RpcServer("server", "bench", SECRET, echo).serve)
            port = listeners[0].socket.getsockname()[1]
        async with PeerPool("client", "bench", SECRET) as pool:
            pool.set_address("server", "127.0.0.1", port)
            await measure(pool, 8, 0.3, body)  # warm up: connect, handshake, code paths
            for callers in args.callers:
                count, elapsed_s = await measure(pool, callers, args.seconds, body)
                print(f"{callers:3d} concurrent callers: {count / elapsed_s:9.0f} calls/s "
                      f"({count} calls in {elapsed_s:.2f}s, body {args.body_bytes} bytes)")
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--body-bytes", type=int, default=100)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--same-process", action="store_true")
    args = parser.parse_args()
    child = None
    port = None
    if not args.same_process:
        parent_conn, child_conn = multiprocessing.Pipe()
        child = multiprocessing.get_context("spawn").Process(target=serve_in_child, args=(child_conn,),
                                                             daemon=True)
        child.start()
        port = parent_conn.recv()
    print(f"server in {'this process' if child is None else 'a child process'}")
    try:
        trio.run(bench, port, args)
    finally:
        if child is not None:
            child.terminate()
            child.join()


if __name__ == "__main__":
    main()
