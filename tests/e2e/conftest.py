"""Real node processes on loopback for the end-to-end tests: a harness and its fixtures.

`LocalCluster` plans a cluster on free ports in a temporary directory with dynamo.cluster (the same code
`dynamo cluster up` runs), starts one `python -m dynamo.cli node` process per node, and gives the tests
what they need to be short: HTTP requests to any node, SIGKILL and restart, the primaries of a key as the
nodes' own /admin/ring says, stats, and bounded waits. Intervals are shortened so failure detection and
hint delivery happen within seconds. Every wait has a deadline; none is asserted as a duration.

When a test fails, the tail of every node's log is printed (pytest shows captured output on failure).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import types
import urllib.parse
from collections.abc import Callable, Iterable

import pytest

from dynamo import cluster
from ring.hashing import partition_for_key
from tools.sim.node_cluster import SimReply as Reply  # the simulator's client answers in the same shape

# Fast failure detection and handoff, so a kill and a restart are noticed within a few seconds.
FAST_SETTINGS = {"gossip_interval_s": 0.2, "handoff_interval_s": 0.3, "request_timeout_s": 8.0}
START_TIMEOUT_S = 90.0  # five Python processes importing at once on two shared cores


def free_port_base(count: int) -> int:
    """A base port with base..base+count-1 free right now, below the ephemeral range.

    Below it because outgoing connections (the nodes' own, other tests') take ephemeral ports at random:
    a range probed free there can be taken by a dial before our node binds it.
    """
    try:
        ephemeral_low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, ephemeral_low - count)
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free range of ports")


def request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            timeout_s: float = 20.0) -> Reply:
    """One HTTP request on a fresh connection; OSError (refused, reset, timed out) propagates."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body if method in ("PUT", "POST") else None,
                           headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


def object_path(bucket: str, key: str, **query) -> str:
    path = f"/buckets/{urllib.parse.quote(bucket, safe='')}/keys/{urllib.parse.quote(key, safe='')}"
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll predicate until it returns something truthy; fail the test naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting {timeout_s:g} s for {what}")
        time.sleep(interval_s)


class LocalCluster:
    """N real node processes on free loopback ports, data under a temporary directory."""

    wait_for = staticmethod(wait_for)

    def __init__(self, data_dir, nodes: int, settings: dict | None = None):
        base = free_port_base(2 * nodes)
        self.spec = cluster.plan_cluster(data_dir, nodes, http_port=base, rpc_port=base + nodes,
                                         node_settings={**FAST_SETTINGS, **(settings or {})})
        self.supervisor = cluster.Supervisor(self.spec)
        self.ids = [node.node_id for node in self.spec.nodes]

    def start(self) -> "LocalCluster":
        cluster.write_configs(self.spec)
        self.supervisor.start_all()
        self._wait_ready(self.ids)
        self.wait_all_up(self.ids)
        return self

    def _wait_ready(self, ids: list[str]) -> None:
        try:
            self.supervisor.wait_ready(START_TIMEOUT_S, ids)
        except cluster.ClusterError as error:
            pytest.fail(f"{error}\n{self.logs()}")

    def stop(self) -> None:
        self.supervisor.stop_all(grace_s=10)

    def url(self, node_id: str) -> str:
        return self.spec.node(node_id).http_url

    def request(self, node_id: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                timeout_s: float = 20.0) -> Reply:
        return request(self.url(node_id), method, path, body, headers, timeout_s)

    def put(self, node_id: str, bucket: str, key: str, value: bytes, vclock: str | None = None, *,
            content_type: str = "text/plain", timeout_s: float = 20.0, **query) -> Reply:
        headers = {"Content-Type": content_type}
        if vclock:
            headers["X-Riak-Vclock"] = vclock
        return self.request(node_id, "PUT", object_path(bucket, key, **query), value, headers, timeout_s)

    def get(self, node_id: str, bucket: str, key: str, *, timeout_s: float = 20.0, **query) -> Reply:
        return self.request(node_id, "GET", object_path(bucket, key, **query),
                            headers={"Accept": "multipart/mixed, */*;q=0.5"}, timeout_s=timeout_s)

    def delete(self, node_id: str, bucket: str, key: str, vclock: str | None = None, *,
               timeout_s: float = 20.0, **query) -> Reply:
        headers = {"X-Riak-Vclock": vclock} if vclock else {}
        return self.request(node_id, "DELETE", object_path(bucket, key, **query), headers=headers,
                            timeout_s=timeout_s)

    def json(self, node_id: str, path: str):
        reply = self.request(node_id, "GET", path, timeout_s=10)
        assert reply.status == 200, (path, reply.status, reply.text)
        return json.loads(reply.body)

    def stats(self, node_id: str) -> dict:
        return self.json(node_id, "/stats")

    def primaries(self, bucket: str, key: str, n_val: int = 3, asking: str | None = None) -> list[str]:
        """The key's primary nodes from a node's own /admin/ring (owners walked from the key's partition)."""
        ring = self.json(asking or self.alive()[0], "/admin/ring")
        owners = ring["owners"]
        partition = partition_for_key(bucket.encode(), key.encode(), len(owners))
        found: list[str] = []
        for step in range(len(owners)):
            owner = owners[(partition + step) % len(owners)]
            if owner not in found:
                found.append(owner)
            if len(found) == n_val:
                break
        return found

    def alive(self) -> list[str]:
        return [node_id for node_id in self.ids if node_id in self.supervisor.alive()]

    def kill(self, node_id: str) -> None:
        """SIGKILL: no shutdown code runs, whatever was not durable is gone."""
        assert self.supervisor.kill(node_id) is not None, f"{node_id} survived SIGKILL"

    def restart(self, node_id: str) -> None:
        self.supervisor.start(node_id)
        self._wait_ready([node_id])

    def status_seen_by(self, observer: str, node_id: str) -> str | None:
        members = self.json(observer, "/admin/members")["members"]
        return next((m["status"] for m in members if m["node"] == node_id), None)

    def wait_all_up(self, ids: Iterable[str], timeout_s: float = 30.0) -> None:
        """Wait until every live node sees every node of ids as up (gossip has met them)."""
        ids = list(ids)
        wait_for(lambda: all(self.status_seen_by(observer, node) == "up"
                             for observer in self.alive() for node in ids),
                 timeout_s, f"every node to see {ids} up")

    def wait_seen_down(self, node_id: str, timeout_s: float = 30.0) -> None:
        wait_for(lambda: all(self.status_seen_by(observer, node_id) == "down"
                             for observer in self.alive()),
                 timeout_s, f"every live node to see {node_id} down")

    def hints_pending(self) -> dict[str, int]:
        return {node_id: self.stats(node_id)["hints_pending"] for node_id in self.alive()}

    def logs(self, lines: int = 15) -> str:
        return "\n".join(f"--- {node.node_id}: {node.log_path}\n{cluster.log_tail(node.log_path, lines)}"
                         for node in self.spec.nodes)


@pytest.fixture(scope="module")
def cluster5(tmp_path_factory):
    """Five nodes shared by the tests of one module (they use distinct keys)."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster5"), 5, {"value_bytes_max": 1024 * 1024})
    try:
        yield local.start()
    finally:
        print(local.logs())
        local.stop()


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    """Five nodes for the tests that kill and restart them (in turn, each restoring what it broke)."""
    local = LocalCluster(tmp_path_factory.mktemp("faults"), 5)
    try:
        yield local.start()
    finally:
        print(local.logs())
        local.stop()


@pytest.fixture
def helpers():
    """The module-level helpers, for test files (conftest cannot be imported under importlib mode)."""
    return types.SimpleNamespace(free_port_base=free_port_base, request=request, object_path=object_path,
                                 wait_for=wait_for)
