"""CPU per request of a whole cluster: three real nodes (SQLite, default settings) in one process.

    python -m tools.cpubench [--ops get,put] [--seconds 10] [--compare OTHER_CHECKOUT] [--rounds 3] [--python-gc]

Why: on a shared 2-core VM the speed of the machine drifts by up to 2x within minutes, so two runs of
`tools.bench` minutes apart cannot show a 10% change. Here the three nodes (real RPC on loopback, real
HTTP server, SQLite with group commit) and keep-alive HTTP clients share one trio loop, so the process's
CPU time divided by the requests is the cluster's whole cost of a request, with no scheduler noise
between processes. `--compare DIR` runs this checkout and the one in DIR at the same time, each in its
own process, both pinned to the same CPU (time-sliced on one core, so both see the same core: two cores
of this VM can differ by 10%); each round prints both and their ratio.

Each run preloads `--keys` keys at w=all, then loads the nodes for `--seconds` from `--connections`
connections spread over them: gets at r=quorum of uniformly chosen preloaded keys, or puts at w=quorum
of keys never written before, 100-byte values. Compared runs start their loads together (each says when
its preload is done, and the parent starts them all at once) and load for the same time, so the two are
measured over the same moments: with a fixed number of requests instead, the faster one finished early
and the other ran its last part alone, on an uncontended core. Every answer must be 200/204 (else it
stops with the response). A benchmark measures and prints; it asserts nothing about speed.

The process sets the garbage collector as a node process does (dynamo/gc_policy.py: tuned thresholds,
start-up objects frozen once the nodes serve), or keeps CPython's defaults with `--python-gc` (and
always for a checkout without gc_policy). Each result also gives the collector's share: its time per
request (CPU time), measured with gc.callbacks.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import trio

from dynamo.config import Member, NodeConfig
from dynamo.node import Node

VALUE = b"v" * 100
NODES = ("n1", "n2", "n3")


class BadAnswer(RuntimeError):
    pass


async def _exchange(sock, request: bytes) -> None:
    """Send one request and read its whole answer (Content-Length framed)."""
    await sock.send(request)
    buffer = b""
    while True:
        data = await sock.recv(65536)
        if not data:
            raise BadAnswer("connection closed")
        buffer += data
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        if not sep:
            continue
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) >= length:
            status = int(head.split(b" ", 2)[1])
            if status not in (200, 204):
                raise BadAnswer(f"{status}: {buffer[:300]!r}")
            return


async def _client(port: int, requests: Iterator[bytes], until_s: float) -> int:
    """Send `requests` one after the other on one connection until they run out or the trio clock passes
    `until_s` (the exchange under way then is finished); return how many were answered."""
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    done = 0
    try:
        for request in requests:
            if trio.current_time() >= until_s:
                break
            await _exchange(sock, request)
            done += 1
    finally:
        sock.close()
    return done


def _get(key: bytes) -> bytes:
    return b"GET /buckets/bench/keys/%s?r=quorum HTTP/1.1\r\nHost: bench\r\n\r\n" % key


def _put(key: bytes, w: bytes) -> bytes:
    return (b"PUT /buckets/bench/keys/%s?w=%s HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (key, w, len(VALUE), VALUE))


async def _load(ports: list[int], per_connection: list[Iterator[bytes]], until_s: float = math.inf) -> int:
    """One client per iterator, spread over the nodes; the requests answered in all."""
    answered = [0]

    async def client(port: int, requests: Iterator[bytes]) -> None:
        done = await _client(port, requests, until_s)  # (not `+= await`: that reads the total before the await)
        answered[0] += done
    async with trio.open_nursery() as nursery:
        for index, requests in enumerate(per_connection):
            nursery.start_soon(client, ports[index % len(ports)], requests)
    return answered[0]


def _workload(op: str, connections: int, keys: int) -> list[Iterator[bytes]]:
    """Endless requests per connection: gets of random preloaded keys, or puts of keys never written."""
    def gets(rng: random.Random) -> Iterator[bytes]:
        while True:
            yield _get(b"load-%d" % rng.randrange(keys))

    def puts(connection: int) -> Iterator[bytes]:
        for i in itertools.count():
            yield _put(b"new-%d-%d" % (connection, i), b"quorum")
    if op == "get":
        return [gets(random.Random(c)) for c in range(connections)]
    return [puts(c) for c in range(connections)]


class _GcTimer:
    """Time spent in garbage collection while `on`, from gc.callbacks (registered while in `with`)."""

    def __init__(self) -> None:
        self.on, self.total_s, self._started_s = False, 0.0, 0.0

    def __enter__(self) -> "_GcTimer":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, _info: dict) -> None:  # CPU time of the thread the collection runs in
        if phase == "start":
            self._started_s = time.thread_time()
        elif self.on:
            self.total_s += time.thread_time() - self._started_s


def _gc_policy():
    """The checkout's dynamo.gc_policy module, or None when it has none (an editable install of another
    checkout may still supply one: that one does not count)."""
    import dynamo
    try:
        from dynamo import gc_policy
    except ImportError:
        return None
    here = pathlib.Path(dynamo.__file__).resolve().parent
    return gc_policy if pathlib.Path(gc_policy.__file__).resolve().parent == here else None


async def measure(op: str, seconds: float, connections: int, keys: int, data_root: pathlib.Path,
                  policy=None, start=None) -> dict:
    """Start the three nodes, preload, then (once `await start()` returns, if given) load them for
    `seconds`; return requests/s, CPU and GC us per request. `policy`: a gc_policy module to apply as a
    node process does, or None for CPython's defaults."""
    with _GcTimer() as gc_timer:
        return await _measure(op, seconds, connections, keys, data_root, policy, start, gc_timer)


async def _measure(op: str, seconds: float, connections: int, keys: int, data_root: pathlib.Path,
                   policy, start, gc_timer: _GcTimer) -> dict:
    if policy is not None:
        policy.tune_for_serving()
    listeners = {n: (await trio.open_tcp_listeners(0, host="127.0.0.1"),
                     await trio.open_tcp_listeners(0, host="127.0.0.1")) for n in NODES}
    ports = {n: (pair[0][0].socket.getsockname()[1], pair[1][0].socket.getsockname()[1])
             for n, pair in listeners.items()}
    members = tuple(Member(n, f"127.0.0.1:{ports[n][0]}", f"127.0.0.1:{ports[n][1]}") for n in NODES)
    async with trio.open_nursery() as nursery:
        for n in NODES:
            config = NodeConfig(node_id=n, cluster="cpubench", secret="cpubench-secret", rpc_port=ports[n][0],
                                http_port=ports[n][1], data_dir=str(data_root / n), members=members)
            node = Node(config)
            await nursery.start(lambda task_status, node=node, n=n: node.run(
                rpc_listeners=listeners[n][0], http_listeners=listeners[n][1], task_status=task_status))
        http_ports = [ports[n][1] for n in NODES]
        await trio.sleep(1)  # the nodes see each other up
        if policy is not None:
            policy.freeze_startup_objects()  # as `dynamo node` does once it serves
        await _load(http_ports, [iter([_put(b"load-%d" % k, b"all") for k in range(c, keys, connections)])
                                 for c in range(connections)])
        load = _workload(op, connections, keys)
        if start is not None:
            await start()
        started_s, cpu_s = time.perf_counter(), time.process_time()
        gc_timer.on = True
        done = await _load(http_ports, load, trio.current_time() + seconds)
        gc_timer.on = False
        elapsed_s, cpu_s = time.perf_counter() - started_s, time.process_time() - cpu_s
        nursery.cancel_scope.cancel()
    return {"op": op, "requests": done, "per_s": round(done / elapsed_s), "cpu_us": round(cpu_s / done * 1e6, 1),
            "gc_us": round(gc_timer.total_s / done * 1e6, 1), "gc": "node policy" if policy else "python defaults",
            "code": str(pathlib.Path(sys.modules[Node.__module__].__file__).resolve().parent.parent)}


async def _ready_then_wait_for_go() -> None:
    """The child's side of the start line: say "ready" on stdout, then wait for the parent's "go"."""
    print("ready", flush=True)
    line = await trio.to_thread.run_sync(sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit("cpubench: no go from the parent")


def _child(args) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="cpubench-") as root:
        policy = None if args.python_gc else _gc_policy()
        result = trio.run(measure, args.op, args.seconds, args.connections, args.keys, pathlib.Path(root), policy,
                          _ready_then_wait_for_go)
    print(json.dumps(result))


def _spawn(checkout: pathlib.Path, args, op: str, cpu: int | None = None) -> subprocess.Popen:
    """This script, measuring the `dynamo` of `checkout` (first on PYTHONPATH; the result names the code
    actually imported, so a comparison that measured the wrong checkout shows)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", "--op", op,
               "--seconds", str(args.seconds), "--connections", str(args.connections), "--keys", str(args.keys)]
    if args.python_gc:
        command.append("--python-gc")
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    return subprocess.Popen(command, env=env, cwd=checkout, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _start_together(processes: list[subprocess.Popen]) -> None:
    """Wait until every child has preloaded (its "ready"), then let them all go at once."""
    for process in processes:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"cpubench: a run failed before its load (exit code {process.wait()})")
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"cpubench: a run failed (exit code {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.cpubench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="get,put", help="comma-separated: get, put")
    parser.add_argument("--seconds", type=float, default=10.0, help="load time per run")
    parser.add_argument("--connections", type=int, default=15)
    parser.add_argument("--keys", type=int, default=2000, help="preloaded keys the gets read")
    parser.add_argument("--compare", type=pathlib.Path, help="another checkout, run at the same time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python-gc", action="store_true",
                        help="keep CPython's garbage collector settings instead of a node process's")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    here = pathlib.Path(__file__).resolve().parent.parent
    for op in args.ops.split(","):
        if op not in ("get", "put"):
            parser.error(f"unknown operation {op!r}")
        for round_number in range(1, args.rounds + 1):
            if args.compare is None:
                processes = [_spawn(here, args, op)]
            else:  # both on one CPU: the last this process may use
                cpu = max(os.sched_getaffinity(0))
                processes = [_spawn(here, args, op, cpu), _spawn(args.compare.resolve(), args, op, cpu)]
            _start_together(processes)
            results = [_result(process) for process in processes]
            line = "  ".join(f"{r['code']}: {r['per_s']} req/s {r['cpu_us']} us CPU/req ({r['gc_us']} in GC, "
                             f"{r['gc']})" for r in results)
            if len(results) == 2:
                line += f"  (CPU ratio {results[0]['cpu_us'] / results[1]['cpu_us']:.3f})"
            print(f"{op} round {round_number}: {line}", flush=True)


if __name__ == "__main__":
    main()
