"""Requests per second of the HTTP server on a trivial app, over keep-alive connections.

    python -m tools.httpbench [--connections 16] [--duration-s 5] [--baseline]

Starts the server in a child process (so client and server each get a core), then drives it from
`--connections` keep-alive connections, each sending one GET and waiting for its answer before the
next (no pipelining). Prints requests/s, latency percentiles and the server's CPU time per request
(from /proc, steadier than req/s on a shared machine). `--baseline` serves the same app
with a bare h11-on-trio loop instead, h11's example server with nothing added: the design the server
replaced with llhttp (dynamo/http/server.py says why), kept as the reference point.
A benchmark measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import h11
import trio

from dynamo.http.message import Response
from dynamo.http.server import HttpServer

REQUEST = b"GET /ping HTTP/1.1\r\nHost: bench\r\n\r\n"


async def ping_app(request):
    return Response(200, (("Content-Type", "text/plain"),), b"OK")


async def _baseline_connection(stream):
    """The reference point: h11's example server loop with nothing added."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                pass
            elif isinstance(event, h11.EndOfMessage):
                headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers))
                                      + conn.send(h11.Data(data=b"OK")) + conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
            else:
                return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve(baseline: bool) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    handler = _baseline_connection if baseline else HttpServer(ping_app).serve_connection
    await trio.serve_listeners(handler, listeners)


async def _client(port: int, stop_at: float, latencies_s: list[float]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buffer = b""
    async with stream:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await stream.send_all(REQUEST)
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end >= 0:
                    start = buffer.lower().find(b"content-length:", 0, end)
                    length = int(buffer[start + 15:buffer.index(b"\r\n", start)])
                    if len(buffer) >= end + 4 + length:
                        buffer = buffer[end + 4 + length:]
                        break
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise EOFError("server closed the connection")
                buffer += chunk
            latencies_s.append(time.perf_counter() - started)


async def drive(port: int, connections: int, duration_s: float) -> tuple[int, float, list[float]]:
    latencies_s: list[float] = []
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_client, port, started + duration_s, latencies_s)
    return len(latencies_s), time.perf_counter() - started, sorted(latencies_s)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--baseline", action="store_true", help="bare h11 loop instead of HttpServer")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(serve, args.baseline)
        return
    command = [sys.executable, "-m", "tools.httpbench", "--serve"] + (["--baseline"] if args.baseline else [])
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        cpu_before_s = _cpu_s(child.pid)
        count, elapsed_s, latencies_s = trio.run(drive, port, args.connections, args.duration_s)
        cpu_after_s = _cpu_s(child.pid)
    finally:
        child.terminate()
        child.wait()
    name = "bare h11 loop" if args.baseline else "HttpServer"

    def pick(fraction: float) -> float:
        return latencies_s[min(len(latencies_s) - 1, int(fraction * len(latencies_s)))] * 1e3

    print(f"{name}: {count} requests in {elapsed_s:.2f} s over {args.connections} keep-alive connections: "
          f"{count / elapsed_s:,.0f} req/s; latency p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms")
    if cpu_before_s is not None and cpu_after_s is not None and count:
        print(f"  server CPU {(cpu_after_s - cpu_before_s) / count * 1e6:.0f} us/request "
              f"(a one-core ceiling of {count / (cpu_after_s - cpu_before_s):,.0f} req/s)")


if __name__ == "__main__":
    main()
