"""A stand-in store for trying the benchmark without a cluster: one dict served over the real HttpServer.

It answers the few routes the benchmark uses, the way the store does: GET /ping, GET /admin/ring (the
nodes it serves as), PUT/POST/GET/DELETE /buckets/{b}/keys/{k} (204 on a write, 200 or 404 on a read).
Query parameters are ignored and every port shares one dict, so it measures the HTTP path and the load
generator, not replication. Uses:

- `BackgroundServer`: the stub on ephemeral ports in a thread, for tests.
- `python -m tools.bench.stub --nodes 3 --http-port 8001`: serve in the foreground until killed.
- `python -m tools.bench.stub cluster up --nodes 3 --http-port P --rpc-port Q --data-dir D`: the same,
  spelled like `dynamo cluster up`, so `--start-cluster --dynamo-command "python -m tools.bench.stub"`
  exercises the benchmark's cluster handling (rpc port and data dir are accepted and unused).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.parse

import trio

from dynamo.http.message import Request, Response, error_response
from dynamo.http.server import HttpServer

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


class StubStore:
    """The app: a dict of (bucket, key) -> (content type, value)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.urls: list[str] = []  # the nodes /admin/ring lists, set once every port listens
        self.hits: list[int] = []  # requests served per port, in the order of urls

    async def __call__(self, request: Request) -> Response:
        parts = [urllib.parse.unquote(part) for part in request.path.split("/")[1:]]
        if request.method == "GET" and parts == ["ping"]:
            return Response(200, (("Content-Type", "text/plain"),), b"OK")
        if request.method == "GET" and parts == ["admin", "ring"]:
            return self._ring()
        if len(parts) == 4 and parts[0] == "buckets" and parts[2] == "keys":
            return self._object(request, parts[1], parts[3])
        return error_response(404, "not found")

    def _ring(self) -> Response:
        nodes = [{"id": f"node{i + 1}", "status": "up", "http": url} for i, url in enumerate(self.urls)]
        body = json.dumps({"version": 1, "nodes": nodes}).encode()
        return Response(200, (("Content-Type", "application/json"),), body)

    def _object(self, request: Request, bucket: str, key: str) -> Response:
        if request.method in ("PUT", "POST"):
            content_type = request.headers.get("content-type", "application/octet-stream")
            self.objects[(bucket, key)] = (content_type, request.body)
            return Response(204)
        if request.method == "GET":
            found = self.objects.get((bucket, key))
            if found is None:
                return error_response(404, "not found")
            return Response(200, (("Content-Type", found[0]),), found[1])
        if request.method == "DELETE":
            self.objects.pop((bucket, key), None)
            return Response(204)
        return error_response(405, f"method {request.method} not allowed")


async def serve_stub(store: StubStore, ports: list[int], host: str = HOST, *,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `store` on each port (0 picks one); started() gets the node URLs."""
    async with trio.open_nursery() as nursery:
        for index, port in enumerate(ports):
            store.hits.append(0)
            listeners = await nursery.start(HttpServer(_counted(store, index)).serve, host, port)
            store.urls.append(f"http://{host}:{listeners[0].socket.getsockname()[1]}")
        task_status.started(list(store.urls))


def _counted(store: StubStore, index: int):
    async def app(request: Request) -> Response:
        store.hits[index] += 1
        return await store(request)
    return app


class BackgroundServer:
    """The stub on `nodes` ephemeral ports, served by trio in a daemon thread while the block runs."""

    def __init__(self, nodes: int = 1):
        self.store = StubStore()
        self.nodes = nodes
        self.urls: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._token = None
        self._scope = None

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                self.urls = await nursery.start(serve_stub, self.store, [0] * self.nodes)
                self._ready.set()

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"stub server did not start within {START_TIMEOUT_S:g} s")
        return self

    def __exit__(self, *exc_info) -> None:
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(START_TIMEOUT_S)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.stub", description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="optional `cluster up`, as `dynamo cluster up` is spelled")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--http-port", type=int, default=8001, help="first HTTP port; node i gets port+i")
    parser.add_argument("--rpc-port", type=int, default=7001, help="accepted and unused")
    parser.add_argument("--data-dir", default=None, help="accepted and unused")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.words not in ([], ["cluster", "up"]):
        print(f"stub: unknown command {' '.join(args.words)!r}", file=sys.stderr)
        return 2

    async def serve() -> None:
        store = StubStore()
        ports = [args.http_port + i for i in range(args.nodes)]
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(serve_stub, store, ports)
            lines = [f"  node{i + 1:<4} {url}" for i, url in enumerate(urls)]
            print("\n".join(["stub store up:", *lines, f"ring page: {urls[0]}/ui/ring"]), flush=True)

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
